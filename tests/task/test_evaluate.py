"""The trusted evaluation: exact on a model with a known answer, and strict on cheaters."""

import json
import math

import numpy as np
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


class PeeksRarely(nn.Module):
    """Reads the next token at about 1% of positions (t % 100 == 37), and only there."""

    def __init__(self, vocab: int, seq_len: int):
        super().__init__()
        self.vocab = vocab
        self.register_buffer("mask", (torch.arange(seq_len) % 100 == 37).float()[None, :, None])

    def forward(self, idx):
        following = torch.roll(idx, shifts=-1, dims=1)
        return nn.functional.one_hot(following, self.vocab).float() * 30.0 * self.mask


class PeeksAtCommonTokens(nn.Module):
    """Reads ahead only when the next token is a frequent one (id < 300): data-dependent peeking."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        following = torch.roll(idx, shifts=-1, dims=1)
        common = (following < 300).float()[..., None]
        return nn.functional.one_hot(following, self.vocab).float() * 30.0 * common


class Stateful(nn.Module):
    """Remembers the previous batch in a buffer."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.register_buffer("seen", torch.zeros(1))

    def forward(self, idx):
        self.seen.add_(1)
        return torch.zeros(*idx.shape, self.vocab) + self.seen


def export(prepare, model, folder, seq_len):
    folder.mkdir(parents=True, exist_ok=True)
    prepare.export_model(model, folder / prepare.MODEL_FILE, seq_len)
    return folder


def test_uniform_model_scores_log2_vocab_bits_per_token_in_bytes(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    folder = export(prepare, Uniform(source.vocab_size), tmp_path / "h", source.seq_len)
    result = prepare.evaluate(folder, offline_data, "val")

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
    assert result["causality_probes"] == prepare.CAUSALITY_PROBES


def test_test_split_is_scored_separately(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    folder = export(prepare, Uniform(source.vocab_size), tmp_path / "h", source.seq_len)
    result = prepare.evaluate(folder, offline_data, "test")
    assert result["split"] == "test" and "test_bpb" in result


@pytest.mark.parametrize("cheater", [PeeksAhead, PeeksAcrossRows, PeeksAtCommonTokens])
def test_causality_check_catches_models_that_peek(prepare, offline_data, tmp_path, cheater):
    source = prepare.task_info(offline_data)
    folder = export(prepare, cheater(source.vocab_size), tmp_path / "h", source.seq_len)
    with pytest.raises(prepare.ViolationError, match="causality check failed"):
        prepare.evaluate(folder, offline_data, "val", secret="any")


@pytest.mark.parametrize("secret", ["first", "second", "third"])
def test_a_model_that_peeks_at_one_percent_of_positions_is_caught(prepare, offline_data, tmp_path, secret):
    source = prepare.task_info(offline_data)
    folder = export(prepare, PeeksRarely(source.vocab_size, source.seq_len), tmp_path / "h", source.seq_len)
    with pytest.raises(prepare.ViolationError, match="causality check failed"):
        prepare.evaluate(folder, offline_data, "val", secret=secret)


def test_the_probes_catch_a_one_percent_peeker_with_probability_over_99_9_percent(prepare):
    """The power claimed in prepare.py, measured on the probe plans of 1,000 secrets (no model needed):
    a probe catches a peek at t when its cut is t + 1. Fixed peek positions: t % 100 == 37 (1.2%)."""
    rows, seq_len, vocab = 256, 256, 4096
    inputs = torch.randint(0, vocab, (rows, seq_len))
    peeked = {t + 1 for t in range(seq_len - 1) if t % 100 == 37}
    misses = 0
    for seed in range(1000):
        probes = prepare.probe_batches(inputs, np.random.default_rng(seed), vocab)
        cuts = {int(c) for probe in probes for c in probe["cuts"]}
        misses += not (cuts & peeked)
        assert sum(len(p["rows"]) for p in probes) >= prepare.CAUSALITY_PROBES
    assert misses <= 1  # expected (1 - 2/255) ** 704 * 1000 = 4e-3 misses; p = 1% exactly gives 0.85


def test_rows_of_a_batch_are_far_apart_and_a_probe_never_meets_its_original(prepare):
    rng = np.random.default_rng(0)
    for rows in (32, 256, 10240):
        batches = prepare.spread_batches(rows, rng)
        assert sorted(np.concatenate(batches).tolist()) == list(range(rows))  # every row scored once
        for batch in batches:
            gaps = np.diff(np.sort(batch))
            assert gaps.min() >= 2  # neighbours share a token: never in one batch
    inputs = torch.randint(0, 100, (256, 64))
    for probe in prepare.probe_batches(inputs, rng, 100):
        assert len(set(probe["rows"].tolist())) == prepare.EVAL_BATCH  # one copy of a row per batch
        for row, cut, changed in zip(probe["rows"], probe["cuts"], probe["inputs"], strict=True):
            assert torch.equal(changed[:cut], inputs[row, :cut]) and changed[cut] != inputs[row, cut]


def test_the_batch_order_depends_on_the_secret(prepare):
    first = prepare.spread_batches(256, np.random.default_rng(1))
    again = prepare.spread_batches(256, np.random.default_rng(1))
    other = prepare.spread_batches(256, np.random.default_rng(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_stateful_model_is_a_violation(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    folder = export(prepare, Stateful(source.vocab_size), tmp_path / "h", source.seq_len)
    with pytest.raises(prepare.ViolationError, match="mutates its state"):
        prepare.evaluate(folder, offline_data, "val")


def test_wrong_output_shape_is_a_model_error(prepare, offline_data, tmp_path):
    source = prepare.task_info(offline_data)
    folder = export(prepare, Uniform(source.vocab_size + 1), tmp_path / "h", source.seq_len)
    with pytest.raises(prepare.ModelError, match="not logits"):
        prepare.evaluate(folder, offline_data, "val")


def test_cli_writes_the_verdict_with_the_nonce(prepare, offline_data, tmp_path, capsys, monkeypatch):
    source = prepare.task_info(offline_data)
    folder = export(prepare, Uniform(source.vocab_size), tmp_path / "h", source.seq_len)
    (tmp_path / "verdict").mkdir()
    monkeypatch.setenv(prepare.NONCE_ENV, "n0nce")
    argv = ["evaluate", "--handover", str(folder), "--data", str(offline_data), "--verdict", str(tmp_path / "verdict")]
    assert prepare.main(argv) == 0
    verdict = json.loads((tmp_path / "verdict" / prepare.VERDICT_FILE).read_text())
    assert verdict["nonce"] == "n0nce" and verdict["status"] == "ok" and verdict["split"] == "val"
    assert json.loads(capsys.readouterr().out) == verdict


def test_cli_reports_missing_and_corrupt_hand_overs(prepare, offline_data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert prepare.main(["evaluate", "--handover", str(tmp_path / "empty"), "--data", str(offline_data)]) == 3
    assert json.loads(capsys.readouterr().out)["status"] == "error"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / prepare.MODEL_FILE).write_bytes(b"not a model")
    assert prepare.main(["evaluate", "--handover", str(tmp_path / "junk"), "--data", str(offline_data)]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "violation" and "not a graph hand-over" in result["reason"]


def test_the_runner_and_the_scorer_agree_on_the_verdict_channel(prepare):
    from autoresearch.runner.phases import experiment

    assert (experiment.VERDICT_FILE, experiment.NONCE_ENV) == (prepare.VERDICT_FILE, prepare.NONCE_ENV)
