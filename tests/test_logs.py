"""CappedLog: exact bytes on disk, binary output, crash-time flushes, and a flood in constant memory."""

import os
import random
import tracemalloc
from pathlib import Path

import pytest

from autoresearch.runner.sandbox.logs import CappedLog


def expected_file(stream: bytes, max_bytes: int) -> bytes:
    """What the file must hold after stream went through a CappedLog of max_bytes."""
    if len(stream) <= max_bytes:
        return stream
    head, tail = stream[:max_bytes // 2], stream[len(stream) - (max_bytes - max_bytes // 2):]
    newline = b"" if head.endswith(b"\n") else b"\n"
    return head + newline + f"[autoresearch: dropped {len(stream) - max_bytes} bytes]\n".encode() + tail


def write_all(path: Path, max_bytes: int, chunks: list[bytes]) -> CappedLog:
    with CappedLog(path, max_bytes) as log:
        for chunk in chunks:
            log.write(chunk)
    return log


def test_under_the_cap_the_file_is_the_stream(tmp_path):
    log = write_all(tmp_path / "a.log", 100, [b"hello\n", b"world\n"])
    assert (tmp_path / "a.log").read_bytes() == b"hello\nworld\n"
    assert (log.bytes_seen, log.bytes_dropped) == (12, 0)
    assert log.head() == b"hello\nworld\n"
    assert log.tail() == b"hello\nworld\n"


def test_exactly_at_the_cap_nothing_is_dropped(tmp_path):
    write_all(tmp_path / "a.log", 10, [b"0123456789"])
    assert (tmp_path / "a.log").read_bytes() == b"0123456789"


def test_over_the_cap_head_marker_and_tail_are_exact(tmp_path):
    log = write_all(tmp_path / "a.log", 10, [b"012", b"3456789AB", b"C", b"DEF"])
    assert (tmp_path / "a.log").read_bytes() == b"01234\n[autoresearch: dropped 6 bytes]\nBCDEF"
    assert (log.bytes_seen, log.bytes_dropped) == (16, 6)
    assert (log.head(), log.tail()) == (b"01234", b"BCDEF")


def test_a_head_ending_a_line_gets_no_extra_newline(tmp_path):
    write_all(tmp_path / "a.log", 8, [b"abc\nxxxxxxxxxxxx", b"wxyz"])
    assert (tmp_path / "a.log").read_bytes() == b"abc\n[autoresearch: dropped 12 bytes]\nwxyz"


@pytest.mark.parametrize("max_bytes", [2, 3, 17, 64, 1000])
def test_any_chunking_gives_the_same_file(tmp_path, max_bytes):
    rng = random.Random(max_bytes)
    stream = bytes(rng.randrange(256) for _ in range(5000))
    cuts = sorted(rng.sample(range(1, len(stream)), 200))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    log = write_all(tmp_path / "a.log", max_bytes, chunks)
    assert (tmp_path / "a.log").read_bytes() == expected_file(stream, max_bytes)
    assert log.tail() == stream[-(max_bytes - max_bytes // 2):]


def test_binary_and_invalid_utf8_are_stored_as_bytes(tmp_path):
    stream = bytes(range(256)) * 4 + b"\xff\xfe\xc3(\xed\xa0\x80 caf\xc3\xa9\n"
    log = write_all(tmp_path / "a.log", 10_000, [stream[:100], bytearray(stream[100:700]),
                                                  memoryview(stream)[700:]])
    assert (tmp_path / "a.log").read_bytes() == stream
    assert log.tail().decode("utf-8", "replace").endswith("\ufffd caf\u00e9\n")


def test_the_kept_bytes_reach_the_disk_before_close(tmp_path):
    path = tmp_path / "a.log"
    log = CappedLog(path, 10, flush_interval_s=0.0)  # flush on every write: what a crash would leave
    log.write(b"abc")
    assert path.read_bytes() == b"abc"
    log.write(b"defghijklmnop")
    assert path.read_bytes() == b"abcde\n[autoresearch: dropped 6 bytes]\nlmnop"
    log.write(b"q")
    assert path.read_bytes() == b"abcde\n[autoresearch: dropped 7 bytes]\nmnopq"
    log.close()


def test_explicit_flush_and_close_are_idempotent(tmp_path):
    path = tmp_path / "a.log"
    log = CappedLog(path, 10, flush_interval_s=3600)
    log.write(b"0123456789ABCDEF")
    log.flush()
    assert path.read_bytes() == expected_file(b"0123456789ABCDEF", 10)
    log.close()
    log.close()
    log.flush()
    assert path.read_bytes() == expected_file(b"0123456789ABCDEF", 10)
    with pytest.raises(ValueError, match="closed"):
        log.write(b"more")


def test_a_cap_below_two_bytes_is_refused(tmp_path):
    with pytest.raises(ValueError):
        CappedLog(tmp_path / "a.log", 1)


def test_a_200_mb_flood_keeps_memory_and_disk_bounded(tmp_path):
    max_bytes = 4 * 2**20
    chunk = os.urandom(64 * 1024 - 1) + b"x"  # the head ends mid-line: the marker starts with a newline
    total = 200 * 2**20
    tracemalloc.start()
    try:
        log = CappedLog(tmp_path / "flood.log", max_bytes)
        for _ in range(total // len(chunk)):
            log.write(chunk)
        log.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_bytes + 2**20  # the ring, a chunk and small change; never the stream
    assert (log.bytes_seen, log.bytes_dropped) == (total, total - max_bytes)
    marker = f"\n[autoresearch: dropped {total - max_bytes} bytes]\n".encode()
    data = (tmp_path / "flood.log").read_bytes()
    assert len(data) == max_bytes + len(marker)
    assert data[max_bytes // 2:max_bytes // 2 + len(marker)] == marker
    assert data[-len(chunk):] == chunk
