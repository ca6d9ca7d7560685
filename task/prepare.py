"""
Data, tokenizer and the trusted evaluation of the default autoresearch task.

This file is read-only to the agent. It does three jobs:

    python prepare.py data --source offline --out DIR    # once per cache: text -> tokenizer -> token shards
    python prepare.py data --source web --out DIR        # the same from the web corpus (needs internet)
    python prepare.py evaluate --handover DIR --data DIR --split val  # trusted score, one JSON line

and offers train.py a few helpers (the data loader, the tokenizer, export_model, bits_per_byte).

The data directory holds `manifest.json` (the task's constants and a sha256 for every file),
`tokenizer.json` (BPE ranks, no code) and one `<split>_NNN.bin` file of uint16 tokens per shard.
Three disjoint splits: train (the only one mounted while training), val (scored by the loop) and
test (held out; scored only for kept commits). Documents are assigned to splits by a hash of their
text, so the assignment is stable and no document is in two splits.

The evaluation never trusts train.py: it vets the model that training handed over (a plain graph of
allowed ATen operators and raw tensors: no code, no pickle; see "The hand-over"), feeds it token ids only
(never the targets), checks causality on the very batches it scores, and computes bits per byte itself.
Its verdict goes to a file only the scorer writes, tagged with the runner's nonce.
"""

import argparse
import base64
import hashlib
import json
import lzma
import math
import operator
import os
import stat
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
MODEL_FILE = "model.graph"  # the one file of the hand-over (format below)
VERDICT_FILE = "verdict.json"  # what the scorer writes into the runner's verdict folder
NONCE_ENV = "AUTORESEARCH_NONCE"  # set by the runner for the scorer alone
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


# ---------------------------------------------------------------------------------------------------
# The hand-over: a plain graph of ATen operators and raw tensors. No code, no pickle.
#
# train.py hands its model over as the one file HANDOVER_DIR / MODEL_FILE, written by export_model:
#
#     b"ARGRAPH1" | header length (uint64, little-endian) | header (UTF-8 JSON) | raw tensor bytes
#
# The header is {"format": 1, "input": NAME, "tensors": {NAME: {"dtype", "shape", "offset", "nbytes"}},
# "nodes": [{"name", "op", "args", "kwargs"}, ...], "outputs": [{"kind", "node"}, ...]}. Node arguments are
# JSON values, lists, and one-key objects: {"ref": NAME} (a tensor, the input or an earlier node),
# {"dtype": "float32"}, {"device": "cuda"} (always read as the scoring device), {"layout": "strided"},
# {"memory_format": "contiguous_format"} and {"float": "inf"}.
#
# The evaluation reads the header with json and the tensors with torch.frombuffer; it never unpickles,
# imports or loads native code from the hand-over. Before anything runs it checks the whole file: exactly
# one regular file in the hand-over folder (links are not followed), the known keys only, tensors of
# plain dtypes that tile the payload exactly, node names that refer backwards only, and every node's op on
# ALLOWED_OPS: pure ATen compute (no file or device I/O, printing, asserting, random numbers, in-place
# writes or uninitialised memory), with dropout off. Anything else is a violation that names the entry or op.

MAGIC = b"ARGRAPH1"
FORMAT = 1
MAX_HEADER_BYTES = 64 * 2**20
MAX_NODES = 100_000
MAX_TENSORS = 10_000
MAX_DIMS = 8
MAX_ARG_DEPTH = 4  # lists of lists of ... in one argument
MAX_STRING = 256

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
          "uint8": torch.uint8, "bool": torch.bool}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
LAYOUTS = {"strided": torch.strided}
MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "preserve_format": torch.preserve_format,
                  "channels_last": torch.channels_last}

ALLOWED_OPS = frozenset((  # aten.<name>.<any overload that writes nothing>
    # arithmetic
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "sign", "pow", "sqrt", "rsqrt", "square", "exp", "exp2",
    "expm1", "log", "log2", "log10", "log1p", "reciprocal", "floor", "ceil", "round", "trunc", "frac", "fmod",
    "remainder", "floor_divide", "clamp", "clamp_min", "clamp_max", "minimum", "maximum", "lerp", "addcmul",
    "addcdiv", "where", "masked_fill", "nan_to_num", "sin", "cos", "tan", "tanh", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "sigmoid", "erf", "erfc", "hypot", "logaddexp",
    # activations and normalisation
    "relu", "relu6", "gelu", "silu", "mish", "softplus", "leaky_relu", "elu", "selu", "celu", "hardtanh",
    "hardswish", "hardsigmoid", "glu", "logsigmoid", "softmax", "_softmax", "log_softmax", "_log_softmax",
    "rms_norm", "_fused_rms_norm", "layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
    # matrices, attention, convolution
    "linear", "matmul", "mm", "bmm", "addmm", "addmv", "baddbmm", "mv", "dot", "outer", "einsum", "t", "conv1d",
    "conv2d", "convolution", "scaled_dot_product_attention", "dropout",
    # lookup
    "embedding", "index_select", "gather", "take_along_dim", "index", "one_hot", "index_put", "scatter",
    "scatter_add", "bucketize", "searchsorted",
    # shapes and copies
    "view", "reshape", "_unsafe_view", "view_as", "permute", "transpose", "unsqueeze", "squeeze", "expand",
    "expand_as", "flatten", "unflatten", "contiguous", "clone", "alias", "detach", "lift_fresh_copy", "slice",
    "select", "narrow", "split", "split_with_sizes", "chunk", "unbind", "cat", "stack", "hstack", "vstack",
    "repeat", "repeat_interleave", "tile", "roll", "flip", "constant_pad_nd", "pad", "tril", "triu", "diagonal",
    "_to_copy", "to", "type_as", "copy",
    # filled tensors (never uninitialised memory)
    "arange", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "scalar_tensor", "fill",
    # reductions
    "sum", "mean", "amax", "amin", "max", "min", "var", "std", "var_mean", "logsumexp", "cumsum", "cumprod",
    "argmax", "argmin", "prod", "all", "any", "topk", "sort", "norm", "linalg_vector_norm",
    # comparisons and logic
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "__and__", "__or__", "__xor__", "isnan", "isinf",
    "isfinite",
))
ARGUMENT_RULES = {  # an allowed op is only allowed with these argument values (randomness off)
    "scaled_dot_product_attention": {"dropout_p": 0.0},
    "dropout": {"train": False},
}


def export_model(model: torch.nn.Module, path: str | Path, seq_len: int) -> None:
    """Hand the model over for scoring: a graph hand-over from ids [EVAL_BATCH, seq_len] to logits."""
    model.eval()
    device = next(iter([*model.parameters(), *model.buffers()]), torch.zeros(0)).device
    example = torch.zeros(EVAL_BATCH, seq_len, dtype=torch.int64, device=device)
    with torch.no_grad():
        program = torch.export.export(model, (example,)).run_decompositions({})  # in-place updates made visible
    header, payload = graph_of(program)
    blob = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    with open(path, "wb") as f:
        f.write(MAGIC + len(blob).to_bytes(8, "little") + blob)
        f.write(payload)


def graph_of(program: "torch.export.ExportedProgram") -> tuple[dict, bytes]:
    """The header and tensor payload of an exported program (see the format above)."""
    signature, state = program.graph_signature, {**program.state_dict, **program.constants}
    tensors, chunks, offset = {}, [], 0
    for spec in signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            continue
        value = state[spec.target]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"cannot hand over {spec.target} ({type(value).__name__}): only plain tensors")
        data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors[spec.arg.name] = {"dtype": dtype_name(value.dtype), "shape": list(value.shape), "offset": offset,
                                  "nbytes": len(data)}
        chunks.append(data)
        offset += len(data)
    users = [s.arg.name for s in signature.input_specs if s.kind.name == "USER_INPUT"]
    kinds = [s.kind.name for s in signature.output_specs]
    nodes, outputs = [], []
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith("aten._assert") and not node.users:
            continue  # a shape check of torch.export's own, with no result
        if node.op == "call_function":
            op = "getitem" if node.target is operator.getitem else str(node.target)
            nodes.append({"name": node.name, "op": op, "args": [encode_arg(a) for a in node.args],
                          "kwargs": {k: encode_arg(v) for k, v in node.kwargs.items()}})
        elif node.op == "output":
            outputs = [{"kind": kind, "node": out.name} for kind, out in zip(kinds, node.args[0], strict=True)]
        elif node.op != "placeholder":
            raise ValueError(f"cannot hand over a graph node of kind {node.op} ({node.name})")
    header = {"format": FORMAT, "input": users[0] if len(users) == 1 else users, "tensors": tensors,
              "nodes": nodes, "outputs": outputs}
    return header, b"".join(chunks)


def dtype_name(dtype: torch.dtype) -> str:
    """The hand-over's name of a plain dtype; ValueError for any other."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"cannot hand over a tensor of dtype {dtype}: plain dtypes only ({', '.join(DTYPES)})")
    return DTYPE_NAMES[dtype]


def encode_arg(value):
    """One node argument as JSON (see the format above)."""
    if isinstance(value, torch.fx.Node):
        return {"ref": value.name}
    if isinstance(value, list | tuple):
        return [encode_arg(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise ValueError(f"cannot hand over an argument of type {type(value).__name__}")


class ModelError(Exception):
    """The hand-over is missing or the model fails to run or to keep the contract (a crash)."""


class ViolationError(Exception):
    """The hand-over or the model breaks a rule of the task, e.g. it looks at future tokens (a violation)."""


def read_handover(folder: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of the one regular file in the hand-over folder; links are never followed."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        entries = []
    if not entries:
        raise ModelError(f"no exported model in {folder}: train.py must call prepare.export_model")
    if entries != [MODEL_FILE]:
        raise ViolationError(f"hand-over rejected: it holds {entries[:5]!r}; only {MODEL_FILE!r} is accepted")
    path = Path(folder) / MODEL_FILE
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ViolationError(f"hand-over rejected: {MODEL_FILE} is not a regular file ({stat.filemode(mode)})")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise ViolationError(f"hand-over rejected: {MODEL_FILE} has {size} bytes, over the {max_bytes} allowed")
        return f.read()


def parse_handover(blob: bytes) -> tuple[dict, memoryview]:
    """(header, payload) of a graph hand-over, its structure checked; raise ViolationError."""
    _expect(len(blob) >= 16 and blob[:8] == MAGIC, f"{MODEL_FILE} is not a graph hand-over (no {MAGIC!r} first)")
    length = int.from_bytes(blob[8:16], "little")
    _expect(length <= MAX_HEADER_BYTES and 16 + length <= len(blob), f"header length {length} is out of bounds")
    try:
        header = json.loads(blob[16 : 16 + length].decode(), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ViolationError(f"hand-over rejected: the header is not plain JSON: {exc}") from None
    payload = memoryview(blob)[16 + length :]
    check_header(header, len(payload))
    return header, payload


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def check_header(header, payload_bytes: int) -> None:
    """Every entry of a header against the format; raise ViolationError naming the first one that is off."""
    _expect(isinstance(header, dict), "the header is not an object")
    _expect_keys(header, {"format", "input", "tensors", "nodes", "outputs"}, "the header")
    _expect(header["format"] == FORMAT, f"format {header['format']!r} is not {FORMAT}")
    _expect(isinstance(header["input"], str), f"the model takes {header['input']!r}: it must take token ids only")
    tensors, nodes = header["tensors"], header["nodes"]
    _expect(isinstance(tensors, dict) and len(tensors) <= MAX_TENSORS, "tensors is not a table of tensors")
    _expect(isinstance(nodes, list) and len(nodes) <= MAX_NODES, f"nodes is not a list of at most {MAX_NODES}")
    end = 0
    for name, spec in sorted(tensors.items(), key=lambda item: _offset_of(item[1])):
        _check_tensor(name, spec, end)
        end += spec["nbytes"]
    _expect(end == payload_bytes, f"the tensors cover {end} bytes of a {payload_bytes}-byte payload")
    known = {*tensors, header["input"]}
    for node in nodes:
        _check_node(node, known)
        known.add(node["name"])
    outputs = header["outputs"]
    _expect(isinstance(outputs, list) and outputs, "outputs is not a list of outputs")
    for out in outputs:
        _expect(isinstance(out, dict) and set(out) == {"kind", "node"} and out["node"] in known,
                f"output {str(out)[:80]!r} is not an output of the graph")
    mutations = sorted({str(out["kind"]) for out in outputs} - {"USER_OUTPUT"})
    _expect(not mutations, f"the exported model mutates its state ({', '.join(mutations)}): "
                           "scoring needs a pure function of the input")
    _expect(len(outputs) == 1, f"the model returns {len(outputs)} outputs; it must return logits only")


def _offset_of(spec) -> int:
    return spec["offset"] if isinstance(spec, dict) and isinstance(spec.get("offset"), int) else -1


def _check_tensor(name, spec, offset: int) -> None:
    _expect(_is_name(name), f"tensor name {str(name)[:80]!r} is not a plain name")
    _expect(isinstance(spec, dict), f"tensor {name} is not an object")
    _expect_keys(spec, {"dtype", "shape", "offset", "nbytes"}, f"tensor {name}")
    _expect(spec["dtype"] in DTYPES, f"tensor {name} has dtype {str(spec['dtype'])[:40]!r}, not a plain one")
    shape = spec["shape"]
    _expect(isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_is_count(d) for d in shape),
            f"tensor {name} has shape {str(shape)[:80]}")
    nbytes = math.prod(shape) * DTYPES[spec["dtype"]].itemsize
    _expect(_is_count(spec["nbytes"]) and spec["nbytes"] == nbytes,
            f"tensor {name} has {str(spec['nbytes'])[:40]} bytes, not {nbytes}")
    _expect(_is_count(spec["offset"]) and spec["offset"] == offset,
            f"tensor {name} starts at {str(spec['offset'])[:40]}, not at {offset}")


def _check_node(node, known: set) -> None:
    _expect(isinstance(node, dict), "a node is not an object")
    _expect_keys(node, {"name", "op", "args", "kwargs"}, f"node {str(node.get('name'))[:80]!r}")
    name, op = node["name"], node["op"]
    _expect(_is_name(name) and name not in known, f"node name {str(name)[:80]!r} is not a new plain name")
    _expect(isinstance(node["args"], list) and isinstance(node["kwargs"], dict), f"node {name}'s arguments")
    for value in [*node["args"], *node["kwargs"].values()]:
        _check_arg(value, known, name, 0)
    if op == "getitem":
        args = node["args"]
        _expect(len(args) == 2 and _is_ref(args[0]) and isinstance(args[1], int) and not node["kwargs"],
                f"node {name}: getitem takes a node and an index")
        return
    overload = _resolve_op(op, name)
    for argument, required in ARGUMENT_RULES.get(op.split(".")[1], {}).items():
        value = _argument(overload, node, argument)
        _expect(value == required, f"node {name}: {op} with {argument}={value!r} (only {required!r} is allowed)")


def _check_arg(value, known: set, node: str, depth: int) -> None:
    _expect(depth <= MAX_ARG_DEPTH, f"node {node}: arguments nest too deep")
    if isinstance(value, list):
        for item in value:
            _check_arg(item, known, node, depth + 1)
    elif isinstance(value, dict):
        _expect(len(value) == 1, f"node {node}: argument {str(value)[:80]!r} is not a tagged value")
        ((tag, inner),) = value.items()
        choices = {"ref": known, "dtype": DTYPES, "device": ("cpu", "cuda"), "layout": LAYOUTS,
                   "memory_format": MEMORY_FORMATS, "float": ("inf", "-inf", "nan")}
        _expect(tag in choices and isinstance(inner, str) and inner in choices[tag],
                f"node {node}: argument {str(value)[:80]!r} is not a known reference or value")
    else:
        _expect(value is None or isinstance(value, bool | int | float) or
                (isinstance(value, str) and len(value) <= MAX_STRING),
                f"node {node}: argument {str(value)[:80]!r} is not a plain value")


def _resolve_op(op, node: str) -> "torch._ops.OpOverload":
    """The ATen operator an allowed op name stands for."""
    parts = op.split(".") if isinstance(op, str) else []
    _expect(len(parts) == 3 and parts[0] == "aten" and parts[1] in ALLOWED_OPS,
            f"node {node}: operator {str(op)[:80]!r} is not on the allowlist of pure ATen operators")
    packet = getattr(torch.ops.aten, parts[1])
    _expect(parts[2] in packet.overloads(), f"node {node}: {op} is not an overload of aten.{parts[1]}")
    overload = getattr(packet, parts[2])
    _expect(not overload._schema.is_mutable, f"node {node}: {op} writes to its arguments")
    return overload


def _argument(op: "torch._ops.OpOverload", node: dict, name: str):
    """The value a node passes for the op's argument called name (its default when not passed)."""
    for i, argument in enumerate(op._schema.arguments):
        if argument.name == name:
            if name in node["kwargs"]:
                return node["kwargs"][name]
            return node["args"][i] if i < len(node["args"]) else argument.default_value
    return None


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ViolationError(f"hand-over rejected: {message}")


def _expect_keys(entry: dict, keys: set, what: str) -> None:
    extra, missing = sorted(set(entry) - keys), sorted(keys - set(entry))
    _expect(not extra, f"{what} has unexpected entries {[str(k)[:40] for k in extra[:3]]}")
    _expect(not missing, f"{what} lacks {missing}")


def _is_name(name) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 128 and name.isascii() and name.isidentifier()


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40


def _is_ref(value) -> bool:
    return isinstance(value, dict) and set(value) == {"ref"}


class GraphModel:
    """A checked graph hand-over, run node by node with the allowed ATen operators: a function ids -> logits."""

    def __init__(self, header: dict, payload: memoryview, device: str):
        self.device = torch.device(device)
        self.input, self.output = header["input"], header["outputs"][0]["node"]
        self.tensors = {
            name: torch.frombuffer(bytearray(payload[s["offset"] : s["offset"] + s["nbytes"]]), dtype=torch.uint8)
            .view(DTYPES[s["dtype"]]).reshape(s["shape"]).to(self.device)
            for name, s in header["tensors"].items()
        }
        self.nodes = [(n["name"], n["op"], [self._constant(a) for a in n["args"]],
                       {key: self._constant(v) for key, v in n["kwargs"].items()}) for n in header["nodes"]]
        self.ops = {op: _resolve_op(op, name) for name, op, _, _ in self.nodes if op != "getitem"}
        last_use = {}
        for i, (_, _, args, kwargs) in enumerate(self.nodes):
            for ref in _refs([args, list(kwargs.values())]):
                last_use[ref] = i
        self.frees = [[] for _ in self.nodes]  # node outputs no later node needs: dropped as the graph runs
        for ref, i in last_use.items():
            if ref not in self.tensors and ref not in (self.input, self.output):
                self.frees[i].append(ref)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        values = {**self.tensors, self.input: ids}
        for (name, op, args, kwargs), frees in zip(self.nodes, self.frees, strict=True):
            args = [_bind(a, values) for a in args]
            kwargs = {key: _bind(v, values) for key, v in kwargs.items()}
            if op == "getitem":
                sequence, index = args
                if not isinstance(sequence, list | tuple):
                    raise ModelError(f"node {name}: getitem of a {type(sequence).__name__}")
                values[name] = sequence[index]
            else:
                values[name] = self.ops[op](*args, **kwargs)
            for ref in frees:
                del values[ref]
        return values[self.output]

    def _constant(self, value):
        """A JSON argument with its tagged values made torch values, once at load; references stay for _bind."""
        if isinstance(value, list):
            return [self._constant(v) for v in value]
        if isinstance(value, dict) and not _is_ref(value):
            ((tag, inner),) = value.items()
            decoders = {"dtype": DTYPES.__getitem__, "device": lambda _: self.device, "layout": LAYOUTS.__getitem__,
                        "memory_format": MEMORY_FORMATS.__getitem__, "float": float}
            return decoders[tag](inner)
        return value


def _bind(value, values: dict):
    """An argument with its references replaced by the values they name in this forward pass."""
    if isinstance(value, list):
        return [_bind(v, values) for v in value]
    return values[value["ref"]] if isinstance(value, dict) else value


def _refs(value) -> Iterator[str]:
    """The names an argument refers to."""
    if isinstance(value, list):
        for item in value:
            yield from _refs(item)
    elif _is_ref(value):
        yield value["ref"]


def load_handover(folder: Path, device: str, max_bytes: int | None = None) -> GraphModel:
    """The vetted model of a hand-over folder; raise ModelError or ViolationError."""
    header, payload = parse_handover(read_handover(folder, max_bytes))
    return GraphModel(header, payload, device)


# ---------------------------------------------------------------------------------------------------
# The trusted evaluation
#
# Every scored row is a window of the split; the rows of one forward pass come from EVAL_BATCH far-apart
# blocks of the split (never neighbours, which share a token), in an order drawn from a secret the model
# cannot know. Causality is checked on what is scored: CAUSALITY_PROBES rows are run again, in probe batches
# of their own, with every token from a secret cut onwards replaced (by another row's text); their logits
# before the cut must equal the scored ones. A model that reads ahead at a fraction p of positions is
# caught by each probe whose cut lands just past such a position, so it escapes all of them with
# probability at most (1 - p) ** CAUSALITY_PROBES: 0.085% for p = 1%. A model that reads other rows of its
# batch is caught by every probe (its batch-mates differ). Probe and scored batches are interleaved in a
# secret order, so no batch, the first included, is recognisable.

CAUSALITY_PROBES = 704  # 44 batches: (1 - 0.01) ** 704 < 0.001
EXACT_BEFORE_CUT = 2  # positions before each cut whose logits are compared in full; earlier ones by projection
PROJECTIONS = 4  # secret random directions the earlier logits are compared along
PROBE_TOLERANCE = {"cpu": 5e-3, "cuda": 2e-2}  # largest change of a logit that is numerical noise (an honest
# model moved by up to 2.4e-4 on CPU between batch compositions; a peek within 5e-3 gains at most ~0.002 bpb)


def spread_batches(rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    """All rows in batches of EVAL_BATCH, one row from each of EVAL_BATCH blocks, no two neighbours."""
    per_block = rows // EVAL_BATCH
    columns = [rng.permutation(per_block)]
    for _ in range(1, EVAL_BATCH):  # block b's last row and block b+1's first are neighbours: never together
        column = rng.permutation(per_block)
        while np.any((columns[-1] == per_block - 1) & (column == 0)):
            column = rng.permutation(per_block)
        columns.append(column)
    picks = np.stack(columns, axis=1) + np.arange(EVAL_BATCH) * per_block  # [batches, EVAL_BATCH]
    return [rng.permutation(batch) for batch in picks]


def probe_batches(inputs: torch.Tensor, rng: np.random.Generator, vocab_size: int) -> list[dict]:
    """CAUSALITY_PROBES perturbed rows in batches: rows, cuts and the changed inputs."""
    rows, seq_len = inputs.shape
    rounds = math.ceil(CAUSALITY_PROBES / rows)
    candidates = [b for _ in range(rounds) for b in spread_batches(rows, rng)]
    chosen = rng.choice(len(candidates), size=math.ceil(CAUSALITY_PROBES / EVAL_BATCH), replace=False)
    probes = []
    for index in chosen:
        batch = candidates[index]
        cuts = rng.integers(1, seq_len, size=EVAL_BATCH)
        donors = (batch + rng.integers(1, rows, size=EVAL_BATCH)) % rows  # another row's text after the cut
        changed = inputs[batch].clone()
        for i, (cut, donor) in enumerate(zip(cuts, donors, strict=True)):
            changed[i, cut:] = inputs[donor, cut:]
            if changed[i, cut] == inputs[batch[i], cut]:  # the first changed token must differ
                changed[i, cut] = (inputs[batch[i], cut] + int(rng.integers(1, vocab_size - 1))) % (vocab_size - 1)
        probes.append({"rows": batch, "cuts": cuts, "inputs": changed})
    return probes


class CausalityCheck:
    """Keeps what each probe compares (logits just before its cut, projections of the earlier ones) from
    whichever of its two passes runs first, and compares when the other arrives."""

    def __init__(self, probes: list[dict], vocab_size: int, rng: np.random.Generator, device: str):
        self.directions = torch.from_numpy(rng.standard_normal((vocab_size, PROJECTIONS)) / math.sqrt(vocab_size))
        self.directions = self.directions.float().to(device)
        self.wanted: dict[int, list[tuple[int, int]]] = {}  # row -> [(probe id, cut)]
        for b, probe in enumerate(probes):
            for i, (row, cut) in enumerate(zip(probe["rows"], probe["cuts"], strict=True)):
                self.wanted.setdefault(int(row), []).append((b * EVAL_BATCH + i, int(cut)))
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.worst, self.checked = 0.0, 0

    def scored(self, rows: np.ndarray, logits: torch.Tensor) -> None:
        for i, row in enumerate(rows):
            for probe_id, cut in self.wanted.get(int(row), []):
                self._meet(probe_id, self._summary(logits[i], cut))

    def probed(self, index: int, probe: dict, logits: torch.Tensor) -> None:
        for i, cut in enumerate(probe["cuts"]):
            self._meet(index * EVAL_BATCH + i, self._summary(logits[i], int(cut)))

    def _summary(self, logits: torch.Tensor, cut: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits[:cut].float()
        return logits[-EXACT_BEFORE_CUT:].clone(), logits @ self.directions

    def _meet(self, probe_id: int, summary: tuple[torch.Tensor, torch.Tensor]) -> None:
        other = self.pending.pop(probe_id, None)
        if other is None:
            self.pending[probe_id] = summary
            return
        change = max((a - b).abs().max().item() for a, b in zip(summary, other, strict=True))
        self.worst = max(self.worst, change if math.isfinite(change) else math.inf)
        self.checked += 1


def evaluate(handover: Path, data_dir: Path, split: str = "val", device: str | None = None,
             secret: str | None = None) -> dict:
    """Score a hand-over on a split: bits per byte, computed here from its logits alone, causality checked."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")
    started = time.time()
    manifest = verify_data(data_dir, (split,))
    source = Source(**manifest["source"])
    token_bytes = token_byte_lengths(load_tokenizer(data_dir)).to(device)
    tokens = token_shards(data_dir, split)[0]  # one shard holds more than eval_tokens
    model = load_handover(handover, device)

    rows = min(source.eval_tokens, len(tokens) - 1) // source.seq_len
    rows -= rows % EVAL_BATCH
    if rows < 2 * EVAL_BATCH:
        raise DataError(f"the {split} split has too few tokens for the evaluation ({rows} rows)")
    windows = torch.from_numpy(tokens[: rows * source.seq_len + 1].astype(np.int64))
    inputs = windows[:-1].view(rows, source.seq_len)
    targets = windows[1:].view(rows, source.seq_len)

    rng = np.random.default_rng(int.from_bytes(hashlib.sha256((secret or os.urandom(16).hex()).encode()).digest()))
    scored, probes = spread_batches(rows, rng), probe_batches(inputs, rng, source.vocab_size)
    check = CausalityCheck(probes, source.vocab_size, rng, device)
    passes = [("score", i) for i in range(len(scored))] + [("probe", i) for i in range(len(probes))]
    bits, nbytes, probe_seconds = 0.0, 0, 0.0
    with torch.no_grad():
        for kind, i in (passes[j] for j in rng.permutation(len(passes))):
            began = time.time()
            batch = scored[i] if kind == "score" else probes[i]["rows"]
            logits = run_model(model, (inputs[batch] if kind == "score" else probes[i]["inputs"]).to(device),
                               source)
            if kind == "score":
                b, n = bits_per_byte(logits, targets[batch].to(device), token_bytes)
                bits, nbytes = bits + b, nbytes + n
                check.scored(batch, logits)
            else:
                check.probed(i, probes[i], logits)
                probe_seconds += time.time() - began
    tolerance = PROBE_TOLERANCE["cpu" if device == "cpu" else "cuda"]
    if check.worst > tolerance:
        raise ViolationError(f"causality check failed: logits before a cut changed by {check.worst:.4g} "
                             f"when later tokens (or other rows) did, in {check.checked} probes")
    bpb = bits / nbytes
    if not math.isfinite(bpb):
        raise ModelError(f"the model's {split}_bpb is {bpb}")
    return {
        "status": "ok", "split": split, f"{split}_bpb": bpb, "bpb": bpb, "tokens": rows * source.seq_len,
        "bytes": nbytes, "causality_leak": check.worst, "causality_probes": check.checked,
        "probe_seconds": round(probe_seconds, 3), "eval_seconds": round(time.time() - started, 3), "device": device,
    }


def run_model(model: GraphModel, ids: torch.Tensor, source: Source) -> torch.Tensor:
    """The model's logits for one batch, their shape checked; raise ModelError."""
    try:
        logits = model(ids)
    except (ModelError, ViolationError):
        raise
    except Exception as exc:
        raise ModelError(f"the model fails on ids [{EVAL_BATCH}, {source.seq_len}]: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from None
    expected = (EVAL_BATCH, source.seq_len, source.vocab_size)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"the model returns {shape}, not logits {list(expected)}")
    return logits


def write_verdict(folder: Path, result: dict) -> None:
    """The result where only the scorer writes: VERDICT_FILE in the runner's folder, created once, no links."""
    fd = os.open(Path(folder) / VERDICT_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(result))


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
    ev = sub.add_parser("evaluate", help="score a hand-over; prints one JSON line (and writes it to --verdict)")
    ev.add_argument("--handover", type=Path, required=True, help="the folder train.py handed its model over in")
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--split", choices=["val", "test"], default="val")
    ev.add_argument("--verdict", type=Path, help="the runner's folder for the verdict (only the scorer writes it)")
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

    nonce = os.environ.get(NONCE_ENV, "")  # the runner's, per scoring; also the secret of the causality check
    try:
        result = evaluate(args.handover, args.data, args.split, secret=nonce or None)
    except ViolationError as exc:
        result = {"status": "violation", "reason": str(exc)}
    except (ModelError, DataError) as exc:
        result = {"status": "error", "reason": str(exc)}
    result = {**result, "split": args.split, "nonce": nonce}
    if args.verdict:
        write_verdict(args.verdict, result)
    print(json.dumps(result))
    return 0 if result["status"] == "ok" else 3

if __name__ == "__main__":
    sys.exit(main())
