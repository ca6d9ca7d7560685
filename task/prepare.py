"""
Data, tokenizer and the trusted evaluation of the default autoresearch task.

This file is read-only to the agent. It does three jobs:

    python prepare.py data --source offline --out DIR    # once per cache: text -> tokenizer -> token shards
    python prepare.py data --source web --out DIR        # the same from the web corpus (needs internet)
    python prepare.py evaluate --model M.pt2 --data DIR --split val   # trusted score, one JSON line

and offers train.py a few helpers (the data loader, the tokenizer, export_model, bits_per_byte).

The data directory holds `manifest.json` (the task's constants and a sha256 for every file),
`tokenizer.json` (BPE ranks, no code) and one `<split>_NNN.bin` file of uint16 tokens per shard.
Three disjoint splits: train (the only one mounted while training), val (scored by the loop) and
test (held out; scored only for kept commits). Documents are assigned to splits by a hash of their
text, so the assignment is stable and no document is in two splits.

The evaluation never trusts train.py: it loads the model that training exported (a torch.export
program: a graph of ATen operators and weights, no Python code), feeds it token ids only (never the
targets), checks that it is causal, and computes bits per byte itself.
"""

import argparse
import base64
import hashlib
import json
import lzma
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# Fixed constants of the task. The runner may shorten the time budget (tests, CPU), nothing else.

TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "300"))  # training seconds
DATA_DIR = Path(os.environ.get("AUTORESEARCH_DATA", "~/.cache/autoresearch/data/offline")).expanduser()
HANDOVER_DIR = Path(os.environ.get("AUTORESEARCH_HANDOVER", "handover"))  # where train.py leaves its model
MODEL_FILE = "model.pt2"
EVAL_BATCH = 16  # rows per forward pass of the evaluation; the exported model takes [EVAL_BATCH, SEQ_LEN]
BOS = "<|bos|>"  # the one special token, prepended to every document
SPLIT_PATTERN = (  # GPT-4 style pre-tokenisation, with numbers split into groups of at most two digits
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class Source:
    """What defines a task's data: the corpus, the vocabulary, the context and the evaluation size."""

    name: str
    vocab_size: int
    seq_len: int
    eval_tokens: int  # target tokens scored (or the whole split, if smaller)
    val_fraction: float
    test_fraction: float


SOURCES = {
    # Web text as a GPU user wants it: FineWeb-Edu, shuffled into parquet shards on the Hugging Face hub.
    "web": Source("web", vocab_size=8192, seq_len=2048, eval_tokens=40 * 524288,
                  val_fraction=0.5, test_fraction=0.5),  # val/test: the pinned last shard, split in two
    # Shakespeare and Milton from Project Gutenberg, shipped beside this file: works with no internet.
    "offline": Source("offline", vocab_size=4096, seq_len=256, eval_tokens=65536,
                      val_fraction=0.05, test_fraction=0.05),
}

WEB_URL = "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_{:05d}.parquet"
WEB_EVAL_SHARD = 1822  # the last shard of the dataset; never used for training
OFFLINE_CORPUS = Path(__file__).with_name("data") / "offline_corpus.jsonl.xz"
OFFLINE_CHUNK_CHARS = 8000  # the offline works are cut into documents of about this many characters
SHARD_TOKENS = 50_000_000  # tokens per .bin shard (100 MB of uint16)
TOKENIZER_CHARS = 2_000_000_000  # the tokenizer learns from at most this much training text


class DataError(Exception):
    """Data that is missing, corrupt or cannot be fetched; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# Text sources


def offline_documents(corpus: Path = OFFLINE_CORPUS) -> Iterator[str]:
    """The offline works, cut at blank lines into documents of about OFFLINE_CHUNK_CHARS characters."""
    if not corpus.exists():
        raise DataError(f"offline corpus {corpus} is missing: restore it from the repository (task/data/)")
    for line in lzma.decompress(corpus.read_bytes()).decode().splitlines():
        text, chunk = json.loads(line)["text"], []
        for paragraph in text.split("\n\n"):
            chunk.append(paragraph)
            if sum(len(p) for p in chunk) >= OFFLINE_CHUNK_CHARS:
                yield "\n\n".join(chunk)
                chunk = []
        if chunk:
            yield "\n\n".join(chunk)


def download(url: str, dest: Path, attempts: int = 5) -> Path:
    """Download url to dest with retries and resume (HTTP Range on a .part file); return dest."""
    if dest.exists():
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response, part.open("ab" if have else "wb") as f:
                if have and response.status != 206:  # the server ignored Range: start over
                    f.truncate(0)
                while block := response.read(1 << 20):
                    f.write(block)
            part.rename(dest)
            return dest
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # the .part is already complete
                part.rename(dest)
                return dest
            if exc.code < 500 and exc.code != 429:
                raise DataError(f"cannot download {url}: HTTP {exc.code}") from None
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            error = str(getattr(exc, "reason", exc))
        if attempt == attempts:
            raise DataError(
                f"cannot download {url} ({error}); without internet use the offline corpus: "
                "`prepare.py data --source offline`"
            )
        time.sleep(2**attempt)
    raise AssertionError("unreachable")


def web_documents(cache: Path, shard_ids: list[int]) -> Iterator[str]:
    """Documents of the given FineWeb-Edu parquet shards, downloaded into cache on first use."""
    import pyarrow.parquet as pq  # only the web source needs it

    for shard_id in shard_ids:
        path = download(WEB_URL.format(shard_id), cache / f"shard_{shard_id:05d}.parquet")
        try:
            table = pq.read_table(path, columns=["text"])
        except Exception as exc:  # a truncated or corrupt download: drop it so the next run re-fetches
            path.unlink()
            raise DataError(f"shard {path.name} is corrupt ({exc}); deleted it, run prepare again") from None
        yield from table.column("text").to_pylist()


def capped(documents: Iterator[str], max_chars: int) -> Iterator[str]:
    """The documents, stopping once max_chars characters were given."""
    total = 0
    for doc in documents:
        if total >= max_chars:
            return
        total += len(doc)
        yield doc


def split_of(document: str, source: Source) -> str:
    """Assign a document to train, val or test by a hash of its text: stable and disjoint."""
    u = int.from_bytes(hashlib.sha256(document.encode()).digest()[:8], "big") / 2**64
    if u < source.val_fraction:
        return "val"
    if u < source.val_fraction + source.test_fraction:
        return "test"
    return "train"


# ---------------------------------------------------------------------------------------------------
# Tokenizer: trained with rustbpe, used through tiktoken, stored as plain JSON.


def train_tokenizer(texts: Iterator[str], vocab_size: int) -> tiktoken.Encoding:
    """Train a byte-level BPE with vocab_size - 1 ordinary tokens, plus the BOS special token."""
    import rustbpe  # only preparation needs it

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts, vocab_size - 1, pattern=SPLIT_PATTERN)
    return make_encoding(bpe.get_mergeable_ranks(), bpe.get_pattern())


def make_encoding(ranks: dict[bytes, int] | list[tuple[list[int], int]], pattern: str) -> tiktoken.Encoding:
    ranks = {bytes(token): rank for token, rank in (ranks.items() if isinstance(ranks, dict) else ranks)}
    return tiktoken.Encoding("autoresearch", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={BOS: len(ranks)})


def save_tokenizer(enc: tiktoken.Encoding, path: Path) -> None:
    ranks = {base64.b64encode(enc.decode_single_token_bytes(i)).decode(): i for i in range(enc.n_vocab - 1)}
    path.write_text(json.dumps({"pattern": enc._pat_str, "ranks": ranks}))


def load_tokenizer(data_dir: Path) -> tiktoken.Encoding:
    spec = json.loads((Path(data_dir) / "tokenizer.json").read_text())
    ranks = {base64.b64decode(token): rank for token, rank in spec["ranks"].items()}
    return make_encoding(ranks, spec["pattern"])


def token_byte_lengths(enc: tiktoken.Encoding) -> torch.Tensor:
    """UTF-8 bytes each token stands for; 0 for BOS, so it counts neither as text nor as a target."""
    lengths = [len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab - 1)] + [0]
    return torch.tensor(lengths, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------------
# Token shards and the manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Appends uint16 tokens of one split to numbered .bin files of at most SHARD_TOKENS tokens."""

    def __init__(self, out: Path, split: str):
        self.out, self.split, self.files, self.buffer = out, split, [], []

    def add(self, tokens: list[int]) -> None:
        self.buffer.extend(tokens)
        while len(self.buffer) >= SHARD_TOKENS:
            self._flush(self.buffer[:SHARD_TOKENS])
            self.buffer = self.buffer[SHARD_TOKENS:]

    def close(self) -> list[dict]:
        if self.buffer or not self.files:
            self._flush(self.buffer)
        return self.files

    def _flush(self, tokens: list[int]) -> None:
        path = self.out / f"{self.split}_{len(self.files):03d}.bin"
        np.asarray(tokens, dtype=np.uint16).tofile(path)
        self.files.append({"file": path.name, "tokens": len(tokens), "sha256": sha256_file(path)})


def prepare_data(source: Source, out: Path, cache: Path | None = None, train_shards: int = 8) -> dict:
    """Build tokenizer and token shards for source into out (once: an existing manifest is kept)."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").exists():
        return verify_data(out)
    cache = cache or out / "download"

    def documents(split: str | None = None) -> Iterator[str]:
        if source.name == "offline":
            docs = offline_documents()
            return (d for d in docs if split is None or split_of(d, source) == split)
        if split in ("val", "test"):
            docs = web_documents(cache, [WEB_EVAL_SHARD])
            return (d for d in docs if split_of(d, source) == split)
        return web_documents(cache, list(range(train_shards)))

    started = time.time()
    enc = train_tokenizer(capped(documents("train"), TOKENIZER_CHARS), source.vocab_size)
    save_tokenizer(enc, out / "tokenizer.json")
    bos = enc.encode_single_token(BOS)
    splits = {}
    for split in ("train", "val", "test"):
        writer = ShardWriter(out, split)
        for doc in documents(split):
            writer.add([bos, *enc.encode_ordinary(doc)])
        splits[split] = writer.close()
    manifest = {
        "source": asdict(source),
        "bos_id": bos,
        "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json")},
        "splits": splits,
        "prepare_seconds": round(time.time() - started, 1),
    }
    (out / "manifest.json.tmp").write_text(json.dumps(manifest, indent=1))
    (out / "manifest.json.tmp").rename(out / "manifest.json")  # the manifest appears last, atomically
    return manifest


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise DataError(f"no prepared data in {data_dir}: run `prepare.py data --source offline --out {data_dir}`")
    return json.loads(path.read_text())


def verify_data(data_dir: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """Check every file of the given splits (and the tokenizer) against the manifest's sha256."""
    manifest = read_manifest(data_dir)
    entries = [manifest["tokenizer"]] + [e for s in splits for e in manifest["splits"][s]]
    for entry in entries:
        path = Path(data_dir) / entry["file"]
        if not path.exists():
            raise DataError(f"{path} is missing: prepare the data again")
        if sha256_file(path) != entry["sha256"]:
            raise DataError(f"{path} is corrupt (sha256 mismatch): delete {data_dir} and prepare the data again")
    return manifest


def token_shards(data_dir: Path, split: str) -> list[np.ndarray]:
    """The verified shards of a split, each memory-mapped."""
    manifest = verify_data(data_dir, (split,))
    return [np.memmap(Path(data_dir) / e["file"], dtype=np.uint16, mode="r") for e in manifest["splits"][split]]


# ---------------------------------------------------------------------------------------------------
# Helpers for train.py


def task_info(data_dir: Path) -> Source:
    """The task's constants (vocabulary, context, evaluation size) as recorded with the data."""
    return Source(**read_manifest(data_dir)["source"])


def train_batches(data_dir: Path, batch_size: int, seq_len: int, device: str, seed: int = 0,
                  holdout_tokens: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random (inputs, targets) windows of the train split; the last holdout_tokens are skipped."""
    shards = token_shards(data_dir, "train")
    shards[-1] = shards[-1][: len(shards[-1]) - holdout_tokens]
    sizes = np.array([len(s) - seq_len - 1 for s in shards], dtype=np.float64)
    generator = np.random.default_rng(seed)
    while True:
        picks = generator.choice(len(shards), size=batch_size, p=sizes / sizes.sum())
        starts = [generator.integers(0, sizes[p]) for p in picks]
        rows = [shards[p][s : s + seq_len + 1] for p, s in zip(picks, starts, strict=True)]
        window = torch.from_numpy(np.stack(rows).astype(np.int64))
        window = window.to(device, non_blocking=True)
        yield window[:, :-1], window[:, 1:]


def bits_per_byte(logits: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> tuple[float, int]:
    """Summed bits over targets that stand for text, and the bytes they stand for."""
    nats = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    nbytes = token_bytes.to(targets.device)[targets.flatten()]
    counted = nbytes > 0
    return (nats[counted].sum().item() / math.log(2)), int(nbytes[counted].sum().item())


def export_model(model: torch.nn.Module, path: str | Path, seq_len: int) -> None:
    """Hand the model over for scoring: a torch.export program from ids [EVAL_BATCH, seq_len] to logits."""
    model.eval()
    device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
    example = torch.zeros(EVAL_BATCH, seq_len, dtype=torch.int64, device=device)
    with torch.no_grad():
        program = torch.export.export(model, (example,))
    torch.export.save(program, str(path))


# ---------------------------------------------------------------------------------------------------
# The trusted evaluation


class ModelError(Exception):
    """The exported model is missing, unreadable or does not keep the contract (a crash)."""


class ViolationError(Exception):
    """The exported model breaks a rule of the task, e.g. it looks at future tokens (a violation)."""


def load_exported(path: Path, seq_len: int, vocab_size: int, device: str) -> torch.nn.Module:
    """Load a torch.export program and check its contract; raise ModelError or ViolationError."""
    if not Path(path).is_file():
        raise ModelError(f"no exported model at {path}: train.py must call prepare.export_model")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(f"cannot load the exported model {path}: {type(exc).__name__}: {exc}") from None
    functional = program.run_decompositions({})  # makes in-place updates of state visible as outputs
    mutations = sorted({s.kind.name for s in functional.graph_signature.output_specs} - {"USER_OUTPUT"})
    if mutations:
        raise ViolationError(f"the exported model mutates its state ({', '.join(mutations)}): "
                             "scoring needs a pure function of the input")
    inputs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(inputs) != 1:
        raise ModelError(f"the exported model takes {len(inputs)} inputs; it must take token ids only")
    module = program.module()
    probe = torch.zeros(EVAL_BATCH, seq_len, dtype=torch.int64, device=device)
    try:
        with torch.no_grad():
            logits = module(probe)
    except Exception as exc:
        raise ModelError(f"the exported model fails on ids [{EVAL_BATCH}, {seq_len}]: {exc}") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (EVAL_BATCH, seq_len, vocab_size):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"the exported model returns {shape}, not logits [{EVAL_BATCH}, {seq_len}, {vocab_size}]")
    return module


def causality_probe(model: torch.nn.Module, inputs: torch.Tensor, vocab_size: int, seed: int = 0) -> float:
    """Largest change of earlier logits when later tokens, or other rows, are changed. 0 for a causal model."""
    generator = torch.Generator().manual_seed(seed)
    seq_len = inputs.shape[1]
    with torch.no_grad():
        reference = model(inputs).float()
        worst = 0.0
        for cut in sorted({1, seq_len // 4, seq_len // 2, seq_len - 1}):
            changed = inputs.clone()
            noise = torch.randint(0, vocab_size - 1, changed[:, cut:].shape, generator=generator)
            changed[:, cut:] = noise.to(inputs.device)
            worst = max(worst, (model(changed).float()[:, :cut] - reference[:, :cut]).abs().max().item())
        other_rows = inputs.clone()  # row 0 must not see the rest of the batch (the text that follows it)
        other_rows[1:] = torch.randint(0, vocab_size - 1, other_rows[1:].shape, generator=generator).to(inputs.device)
        worst = max(worst, (model(other_rows).float()[0] - reference[0]).abs().max().item())
    return worst


def evaluate(model_path: Path, data_dir: Path, split: str = "val", device: str | None = None) -> dict:
    """Score an exported model on a split: bits per byte, computed here from its logits alone."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")
    started = time.time()
    manifest = verify_data(data_dir, (split,))
    source = Source(**manifest["source"])
    enc = load_tokenizer(data_dir)
    token_bytes = token_byte_lengths(enc).to(device)
    tokens = token_shards(data_dir, split)[0]  # one shard holds more than eval_tokens
    model = load_exported(model_path, source.seq_len, source.vocab_size, device)

    rows = min(source.eval_tokens, len(tokens) - 1) // source.seq_len
    rows -= rows % EVAL_BATCH
    if rows == 0:
        raise DataError(f"the {split} split has too few tokens for one batch of the evaluation")
    windows = torch.from_numpy(tokens[: rows * source.seq_len + 1].astype(np.int64))
    inputs = windows[:-1].view(rows, source.seq_len)
    targets = windows[1:].view(rows, source.seq_len)

    leak = causality_probe(model, inputs[:EVAL_BATCH].to(device), source.vocab_size)
    tolerance = 1e-3 if device == "cpu" else 2e-2
    if leak > tolerance:
        raise ViolationError(f"causality probe failed: earlier logits changed by {leak:.4g} when later tokens did")

    bits, nbytes = 0.0, 0
    with torch.no_grad():
        for i in range(0, rows, EVAL_BATCH):
            logits = model(inputs[i : i + EVAL_BATCH].to(device))
            b, n = bits_per_byte(logits, targets[i : i + EVAL_BATCH].to(device), token_bytes)
            bits, nbytes = bits + b, nbytes + n
    bpb = bits / nbytes
    if not math.isfinite(bpb):
        raise ModelError(f"the model's {split}_bpb is {bpb}")
    return {
        "status": "ok", "split": split, f"{split}_bpb": bpb, "bpb": bpb, "tokens": rows * source.seq_len,
        "bytes": nbytes, "causality_leak": leak, "eval_seconds": round(time.time() - started, 3),
        "device": device,
    }


# ---------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Data preparation and trusted evaluation of the task.")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="prepare tokenizer and token shards (once)")
    data.add_argument("--source", default="offline", help="offline (no internet needed) or web")
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("--cache", type=Path, help="where downloads go (default: OUT/download)")
    data.add_argument("--train-shards", type=int, default=8, help="web source: parquet shards for training")
    ev = sub.add_parser("evaluate", help="score an exported model; prints one JSON line")
    ev.add_argument("--model", type=Path, required=True)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--split", choices=["val", "test"], default="val")
    args = parser.parse_args(argv)

    if args.command == "data":
        if args.source not in SOURCES:
            print(f"prepare.py: unknown source {args.source!r} (choose from {', '.join(SOURCES)})", file=sys.stderr)
            return 2
        try:
            manifest = prepare_data(SOURCES[args.source], args.out, args.cache, args.train_shards)
        except DataError as exc:
            print(f"prepare.py: {exc}", file=sys.stderr)
            return 2
        counts = {split: sum(e["tokens"] for e in files) for split, files in manifest["splits"].items()}
        print(json.dumps({"status": "ok", "data": str(args.out), "tokens": counts}))
        return 0

    try:
        result = evaluate(args.model, args.data, args.split)
    except ViolationError as exc:
        result = {"status": "violation", "reason": str(exc)}
    except (ModelError, DataError) as exc:
        result = {"status": "error", "reason": str(exc)}
    print(json.dumps(result))
    return 0 if result["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
