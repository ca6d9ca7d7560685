"""prepare.py: the tokenizer, the splits, the shards and their checks."""

import json
import shutil

import numpy as np
import pytest


def test_tokenizer_round_trips_text(prepare, offline_data):
    enc = prepare.load_tokenizer(offline_data)
    assert enc.n_vocab == prepare.SOURCES["offline"].vocab_size
    for text in ["To be, or not to be: that is the question.", "Whether 'tis nobler\n\n  in 1623 ©é", ""]:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text
        assert max(ids, default=0) < enc.n_vocab - 1  # ordinary text never produces BOS


def test_tokenizer_compresses_the_corpus(prepare, offline_data):
    enc = prepare.load_tokenizer(offline_data)
    sample = next(prepare.offline_documents())
    assert len(sample.encode()) / len(enc.encode_ordinary(sample)) > 2.5  # bytes per token


def test_splits_are_disjoint_and_cover_every_document(prepare):
    source = prepare.SOURCES["offline"]
    by_split = {"train": set(), "val": set(), "test": set()}
    for doc in prepare.offline_documents():
        by_split[prepare.split_of(doc, source)].add(doc)
    assert not by_split["train"] & by_split["val"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    total = sum(len(s) for s in by_split.values())
    assert 0.02 < len(by_split["val"]) / total < 0.10
    assert 0.02 < len(by_split["test"]) / total < 0.10


def test_shards_hold_bos_separated_documents(prepare, offline_data):
    manifest = prepare.read_manifest(offline_data)
    for split in ("train", "val", "test"):
        tokens = np.concatenate(prepare.token_shards(offline_data, split))
        assert tokens[0] == manifest["bos_id"]
        assert len(tokens) == sum(e["tokens"] for e in manifest["splits"][split])
    assert manifest["source"]["seq_len"] == 256


def test_prepare_is_done_once(prepare, offline_data):
    before = (offline_data / "manifest.json").stat().st_mtime_ns
    assert prepare.main(["data", "--source", "offline", "--out", str(offline_data)]) == 0
    assert (offline_data / "manifest.json").stat().st_mtime_ns == before


def test_corrupt_shard_is_refused(prepare, offline_data, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(offline_data, copy)
    shard = copy / "val_000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(prepare.DataError, match="corrupt"):
        prepare.token_shards(copy, "val")
    (copy / "train_000.bin").write_bytes(b"")  # a partial shard is caught the same way
    with pytest.raises(prepare.DataError, match=r"train_000\.bin is corrupt"):
        prepare.verify_data(copy, ("train",))


def test_missing_data_names_the_command(prepare, tmp_path):
    with pytest.raises(prepare.DataError, match=r"prepare\.py data --source offline"):
        prepare.read_manifest(tmp_path)


def test_unknown_source_is_one_line(prepare, tmp_path, capsys):
    assert prepare.main(["data", "--source", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "prepare.py: unknown source 'nope' (choose from web, offline)"


def test_web_source_without_internet_names_the_offline_source(prepare, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare, "WEB_URL", "http://127.0.0.1:9/shard_{:05d}.parquet")  # nothing listens
    monkeypatch.setattr(prepare.time, "sleep", lambda s: None)
    assert prepare.main(["data", "--source", "web", "--out", str(tmp_path / "web")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--source offline" in err
    assert not (tmp_path / "web" / "manifest.json").exists()


def test_download_resumes_a_partial_file(prepare, tmp_path):
    import http.server
    import threading

    payload = bytes(range(256)) * 4096
    ranges = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
            ranges.append(start)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "shard.parquet"
        (tmp_path / "shard.parquet.part").write_bytes(payload[:1000])
        prepare.download(f"http://127.0.0.1:{server.server_port}/x", dest)
    finally:
        server.shutdown()
    assert dest.read_bytes() == payload
    assert ranges == [1000]


def test_manifest_records_a_checksum_for_every_file(prepare, offline_data):
    manifest = json.loads((offline_data / "manifest.json").read_text())
    files = [manifest["tokenizer"]] + [e for split in manifest["splits"].values() for e in split]
    assert all(len(e["sha256"]) == 64 for e in files)
    assert prepare.verify_data(offline_data) == manifest
