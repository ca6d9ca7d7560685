"""Hostile hand-overs against the trusted loader in prepare.py: nothing but a plain graph of allowed ATen
operators and raw tensors is ever run, and whatever else a candidate writes is a violation naming it.

These run the scorer's own code on the host (no container needed): the file is forged as a hostile
train.py would forge it, after reading prepare.py. The end-to-end cases in test_hostile.py send the same
kinds of file through the real containers.
"""

import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch

TASK_DIR = Path(__file__).resolve().parents[2] / "task"
sys.path.insert(0, str(TASK_DIR))
import prepare  # noqa: E402

SEQ, VOCAB = 8, 32


class Tiny(torch.nn.Module):
    """A causal toy: embedding, one linear layer, softmax-free logits."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.head = torch.nn.Linear(16, VOCAB)

    def forward(self, idx):
        return self.head(torch.relu(self.embed(idx)))


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> tuple[dict, bytes]:
    """(header, payload) of an honest export of Tiny."""
    folder = tmp_path_factory.mktemp("honest")
    prepare.export_model(Tiny(), folder / prepare.MODEL_FILE, SEQ)
    header, payload = prepare.parse_handover((folder / prepare.MODEL_FILE).read_bytes())
    return header, bytes(payload)


def write(folder: Path, header: dict, payload: bytes) -> Path:
    blob = json.dumps(header).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / prepare.MODEL_FILE).write_bytes(prepare.MAGIC + len(blob).to_bytes(8, "little") + blob + payload)
    return folder


def load(folder: Path) -> prepare.GraphModel:
    return prepare.load_handover(folder, "cpu")


def test_an_honest_export_loads_and_matches_the_module(honest, tmp_path):
    model = Tiny()
    prepare.export_model(model, tmp_path / prepare.MODEL_FILE, SEQ)
    ids = torch.randint(0, VOCAB, (prepare.EVAL_BATCH, SEQ))
    with torch.no_grad():
        assert torch.allclose(load(tmp_path)(ids), model(ids), atol=1e-6)


def with_node(header: dict, op: str, args: list, kwargs: dict | None = None) -> dict:
    """header with one more node, computed from the output and made the output (so it runs)."""
    out = header["outputs"][0]["node"]
    node = {"name": "evil", "op": op, "args": [{"ref": out} if a == "OUT" else a for a in args],
            "kwargs": kwargs or {}}
    return {**header, "nodes": [*header["nodes"], node], "outputs": [{"kind": "USER_OUTPUT", "node": "evil"}]}


@pytest.mark.parametrize(
    ("op", "args", "kwargs", "names"),
    [
        ("aten.rand.default", [[2]], {}, "aten.rand.default"),  # random numbers
        ("aten.empty.memory_format", [[16, 8, 32]], {}, "aten.empty.memory_format"),  # uninitialised memory
        ("aten.empty_like.default", ["OUT"], {}, "aten.empty_like.default"),
        ("aten.add_.Tensor", ["OUT", "OUT"], {}, "aten.add_.Tensor"),  # in place
        ("aten.add.out", ["OUT", "OUT"], {"out": {"ref": "p_head_weight"}}, "writes to its arguments"),
        ("aten._assert_async.msg", ["OUT", "leak"], {}, "aten._assert_async.msg"),  # an assert with a message
        ("aten._print.default", ["val_bpb 0.1"], {}, "aten._print.default"),
        ("aten.bernoulli.p", ["OUT", 0.5], {}, "aten.bernoulli.p"),
        ("aten._local_scalar_dense.default", ["OUT"], {}, "aten._local_scalar_dense.default"),
        ("aten.save.default", ["OUT"], {}, "aten.save.default"),
        ("prims.add.default", ["OUT", "OUT"], {}, "prims.add.default"),  # another namespace
        ("myops.exfiltrate.default", ["OUT"], {}, "myops.exfiltrate.default"),  # a custom op
        ("higher_order.cond", ["OUT"], {}, "higher_order.cond"),
        ("builtins.exec", ["print(1)"], {}, "builtins.exec"),
        ("aten.add", ["OUT", "OUT"], {}, "aten.add"),  # no overload
        ("aten.add.nonexistent", ["OUT", "OUT"], {}, "not an overload"),
        ("aten.scaled_dot_product_attention.default", ["OUT", "OUT", "OUT", None, 0.5], {}, "dropout_p=0.5"),
        ("aten.scaled_dot_product_attention.default", ["OUT", "OUT", "OUT"], {"dropout_p": 0.1}, "dropout_p=0.1"),
        ("aten.dropout.default", ["OUT", 0.5, True], {}, "train=True"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_op_off_the_allowlist_is_a_violation_naming_it(honest, tmp_path, op, args, kwargs, names):
    header, payload = honest
    write(tmp_path, with_node(header, op, args, kwargs), payload)
    with pytest.raises(prepare.ViolationError, match="hand-over rejected") as caught:
        load(tmp_path)
    assert names in str(caught.value)


def forged(header: dict, **changes) -> dict:
    return {**header, **changes}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda h: forged(h, pickle={"data": "gASV"}), "unexpected entries"),
        (lambda h: forged(h, format=2), "format 2"),
        (lambda h: forged(h, input=["idx", "targets"]), "token ids only"),
        (lambda h: forged(h, tensors={**h["tensors"], "x": {"dtype": "object", "shape": [1], "offset": 0,
                                                             "nbytes": 8}}), "dtype 'object'"),
        (lambda h: forged(h, tensors={k: {**v, "shape": [*v["shape"], 2]} for k, v in h["tensors"].items()}),
         "bytes, not"),
        (lambda h: forged(h, tensors={k: {**v, "offset": v["offset"] + 4} for k, v in h["tensors"].items()}),
         "starts at"),
        (lambda h: forged(h, tensors={k: {**v, "__reduce__": "os.system"} for k, v in h["tensors"].items()}),
         "unexpected entries"),
        (lambda h: forged(h, nodes=[{**h["nodes"][0], "args": [{"ref": "later"}]}, *h["nodes"][1:]]),
         "not a known reference"),
        (lambda h: forged(h, nodes=[{**h["nodes"][0], "args": [{"ref": "__builtins__"}]}, *h["nodes"][1:]]),
         "not a known reference"),
        (lambda h: forged(h, nodes=[{**h["nodes"][0], "args": [{"callable": "os.system"}]}, *h["nodes"][1:]]),
         "not a known reference"),
        (lambda h: forged(h, nodes=[{**h["nodes"][0], "args": [[[[[[[1]]]]]]]}, *h["nodes"][1:]]), "nest too deep"),
        (lambda h: forged(h, nodes=[{**h["nodes"][0], "name": "__class__.__init__"}, *h["nodes"][1:]]),
         "not a new plain name"),
        (lambda h: forged(h, nodes=[*h["nodes"], h["nodes"][-1]]), "not a new plain name"),
        (lambda h: forged(h, outputs=[*h["outputs"], {"kind": "BUFFER_MUTATION", "node": h["nodes"][0]["name"]}]),
         "mutates its state"),
        (lambda h: forged(h, outputs=[{"kind": "USER_OUTPUT", "node": "nowhere"}]), "not an output"),
        (lambda h: forged(h, outputs=[h["outputs"][0], h["outputs"][0]]), "2 outputs"),
    ],
    ids=["pickle-entry", "format", "two-inputs", "object-dtype", "shape-lies", "gap-in-payload", "reduce-in-tensor",
         "forward-ref", "builtins-ref", "unknown-tag", "deep-nesting", "dotted-name", "duplicate-node", "mutation",
         "dangling-output", "two-outputs"],
)
def test_a_forged_header_is_a_violation(honest, tmp_path, change, expected):
    header, payload = honest
    write(tmp_path, change(json.loads(json.dumps(header))), payload)
    with pytest.raises(prepare.ViolationError, match=expected):
        load(tmp_path)


def test_hidden_bytes_after_the_tensors_are_a_violation(honest, tmp_path):
    header, payload = honest
    write(tmp_path, header, payload + pickle.dumps(os.system))
    with pytest.raises(prepare.ViolationError, match="payload"):
        load(tmp_path)


def test_a_torch_export_archive_with_pickles_is_never_unpickled(tmp_path, monkeypatch):
    """The old format: a zip whose entries torch.export.load would unpickle. Nothing of it is read."""
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads was called"))
    archive = tmp_path / prepare.MODEL_FILE
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"op": os.system, "arg": "id"}))
    with pytest.raises(prepare.ViolationError, match="not a graph hand-over"):
        load(tmp_path)


@pytest.mark.parametrize(
    "blob",
    [prepare.MAGIC + (2**62).to_bytes(8, "little"), prepare.MAGIC + (5).to_bytes(8, "little") + b"[1,2",
     prepare.MAGIC + (3).to_bytes(8, "little") + b"NaN", prepare.MAGIC + (4).to_bytes(8, "little") + b"\xff\xfe{}",
     prepare.MAGIC + (2).to_bytes(8, "little") + b"[]", b"\x80\x04\x95" + b"\x00" * 20],
    ids=["huge-length", "truncated-json", "nan-constant", "not-utf8", "not-an-object", "raw-pickle"],
)
def test_a_malformed_file_is_a_violation(tmp_path, blob):
    (tmp_path / prepare.MODEL_FILE).write_bytes(blob)
    with pytest.raises(prepare.ViolationError, match="hand-over rejected"):
        load(tmp_path)


def test_a_symlink_as_the_model_is_never_followed(honest, tmp_path):
    target = write(tmp_path / "real", *honest) / prepare.MODEL_FILE
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / prepare.MODEL_FILE).symlink_to(target)
    with pytest.raises(prepare.ViolationError, match="not a regular file"):
        load(tmp_path / "h")


def test_a_folder_as_the_model_and_extra_files_are_violations(honest, tmp_path):
    (tmp_path / "a" / prepare.MODEL_FILE).mkdir(parents=True)
    with pytest.raises(prepare.ViolationError, match="not a regular file"):
        load(tmp_path / "a")
    folder = write(tmp_path / "b", *honest)
    (folder / "verdict.json").write_text('{"status": "ok", "bpb": 0.1}')
    with pytest.raises(prepare.ViolationError, match="is accepted"):
        load(folder)


def test_an_empty_hand_over_is_a_crash_not_a_violation(tmp_path):
    with pytest.raises(prepare.ModelError, match="no exported model"):
        load(tmp_path)


def test_an_op_that_raises_cannot_become_a_result(honest, tmp_path):
    """A pure op that fails with a message of the candidate's making: the message is a reason, never a verdict."""
    header, payload = honest
    forged_line = '{"status": "ok", "bpb": 0.01}'
    write(tmp_path, with_node(header, "aten.view.default", ["OUT", [7, 7]]), payload)
    model = load(tmp_path)
    source = prepare.Source("t", VOCAB, SEQ, 0, 0, 0)
    with pytest.raises(prepare.ModelError, match="fails") as caught:
        prepare.run_model(model, torch.zeros(prepare.EVAL_BATCH, SEQ, dtype=torch.int64), source)
    assert forged_line not in str(caught.value)
