"""The trusted evaluation: exact on a model with a known answer, and strict on cheaters."""

import math

import pytest
import torch
from torch import nn


class Uniform(nn.Module):
    """Equal logits for every token: exactly log2(vocab) bits per target token."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, idx):
        return self.bias.expand(*idx.shape, self.vocab) + 0 * idx[..., None]


class PeeksAhead(nn.Module):
    """Puts its logit mass on the next input token: a perfect score by reading the future."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.scale = nn.Parameter(torch.tensor(30.0))

    def forward(self, idx):
        following = torch.roll(idx, shifts=-1, dims=1)
        return nn.functional.one_hot(following, self.vocab).float() * self.scale


class PeeksAcrossRows(nn.Module):
    """Causal within a row, but mixes in the batch's next row (the text that follows)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, vocab)

    def forward(self, idx):
        logits = self.embed(idx)
        return logits + torch.roll(logits, shifts=-1, dims=0).mean(dim=1, keepdim=True)


class Stateful(nn.Module):
    """Remembers the previous batch in a buffer."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, idx):
        self.seen.add_(1)
        return torch.zeros(*idx.shape, self.vocab) + self.seen


def export(prepare, model, path, seq_len):
    prepare.export_model(model, path, seq_len)
    return path


def test_uniform_model_scores_log2_vocab_bits_per_token_in_bytes(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    path = export(prepare, Uniform(source.vocab_size), tmp_path / "m.pt2", source.seq_len)
    result = prepare.evaluate(path, offline_data, "val")

    tokens = prepare.token_shards(offline_data, "val")[0]
    token_bytes = prepare.token_byte_lengths(prepare.load_tokenizer(offline_data))
    rows = min(source.eval_tokens, len(tokens) - 1) // source.seq_len
    rows -= rows % prepare.EVAL_BATCH
    targets = torch.from_numpy(tokens[1 : rows * source.seq_len + 1].astype("int64"))
    nbytes = token_bytes[targets]
    expected = math.log2(source.vocab_size) * int((nbytes > 0).sum()) / int(nbytes.sum())
    assert result["status"] == "ok"
    assert result["bytes"] == int(nbytes.sum())
    assert result["val_bpb"] == pytest.approx(expected, rel=1e-6)
    assert result["causality_leak"] == 0.0


def test_test_split_is_scored_separately(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    path = export(prepare, Uniform(source.vocab_size), tmp_path / "m.pt2", source.seq_len)
    result = prepare.evaluate(path, offline_data, "test")
    assert result["split"] == "test" and "test_bpb" in result


@pytest.mark.parametrize("cheater", [PeeksAhead, PeeksAcrossRows])
def test_causality_probe_catches_models_that_peek(prepare, offline_data, tmp_path, cheater):
    source = prepare.task_info(offline_data)
    path = export(prepare, cheater(source.vocab_size), tmp_path / "m.pt2", source.seq_len)
    with pytest.raises(prepare.ViolationError, match="causality probe failed"):
        prepare.evaluate(path, offline_data, "val")


def test_stateful_model_is_a_violation(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    path = export(prepare, Stateful(source.vocab_size), tmp_path / "m.pt2", source.seq_len)
    with pytest.raises(prepare.ViolationError, match="mutates its state"):
        prepare.evaluate(path, offline_data, "val")


def test_wrong_output_shape_is_a_model_error(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    path = export(prepare, Uniform(source.vocab_size + 1), tmp_path / "m.pt2", source.seq_len)
    with pytest.raises(prepare.ModelError, match="not logits"):
        prepare.evaluate(path, offline_data, "val")


def test_cli_prints_one_json_line_for_missing_and_corrupt_models(prepare, offline_data, tmp_path, capsys):
    import json

    assert prepare.main(["evaluate", "--model", str(tmp_path / "none.pt2"), "--data", str(offline_data)]) == 3
    assert json.loads(capsys.readouterr().out)["status"] == "error"
    (tmp_path / "junk.pt2").write_bytes(b"not a model")
    assert prepare.main(["evaluate", "--model", str(tmp_path / "junk.pt2"), "--data", str(offline_data)]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "error" and "cannot load" in result["reason"]
