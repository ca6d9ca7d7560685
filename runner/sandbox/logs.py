"""A log file that cannot grow past a cap, whatever a container prints.

`CappedLog` keeps the first half of the cap verbatim (the head: imports, config, the first steps)
and the last half (the tail: the end of training, the traceback), and drops the middle:

    <head: first max_bytes // 2 bytes>
    [autoresearch: dropped N bytes]
    <tail: last max_bytes - max_bytes // 2 bytes>

Until the cap is reached the file is simply the stream, written as it comes. Past it, the head stays
on disk and the tail lives in a fixed ring buffer in memory, written after the head (with the marker)
every `flush_interval_s` and at close, so a crash of the runner loses at most that much of the tail.
Memory is constant (one ring of the tail's size), and each write is one memcpy, so a flood goes at
pipe speed. The log holds bytes, never decoded: readers decode with errors="replace". The marker
starts on a line of its own (a newline is added when the head ends mid-line) and ends with a newline.
"""

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

MARKER = "[autoresearch: dropped {} bytes]\n"
MAX_LINE_BYTES = 64 * 1024  # longer lines reach on_line cut to this


class Ring:
    """The last `capacity` bytes written to it, in a fixed buffer."""

    def __init__(self, capacity: int):
        self.buffer = bytearray(capacity)
        self.end = 0  # where the next byte goes
        self.filled = 0

    def write(self, data: memoryview) -> None:
        """Append data, forgetting the oldest bytes beyond capacity."""
        capacity = len(self.buffer)
        if len(data) >= capacity:
            self.buffer[:] = data[len(data) - capacity:]
            self.end, self.filled = 0, capacity
            return
        stop = self.end + len(data)
        if stop <= capacity:
            self.buffer[self.end:stop] = data
        else:
            split = capacity - self.end
            self.buffer[self.end:] = data[:split]
            self.buffer[:stop - capacity] = data[split:]
        self.end = stop % capacity
        self.filled = min(capacity, self.filled + len(data))

    def parts(self) -> tuple[memoryview, memoryview]:
        """The contents, oldest first, as two views (no copy)."""
        view = memoryview(self.buffer)
        if self.filled < len(self.buffer):
            return view[:self.filled], view[:0]
        return view[self.end:], view[:self.end]


class CappedLog:
    """Append-only byte log on disk holding at most max_bytes of the stream plus one marker line."""

    def __init__(self, path: Path, max_bytes: int, flush_interval_s: float = 1.0):
        if max_bytes < 2:
            raise ValueError("max_bytes must be at least 2 (one byte of head, one of tail)")
        self.path = path
        self.max_bytes = max_bytes
        self.head_bytes = max_bytes // 2
        self.flush_interval_s = flush_interval_s
        self.bytes_seen = 0
        self._ring = Ring(max_bytes - self.head_bytes)
        self._head_ends_line = True
        self._file = path.open("wb")
        self._flushed_at = time.monotonic()
        self._lock = threading.Lock()

    @property
    def bytes_dropped(self) -> int:
        """Bytes of the stream that are in neither the head nor the tail."""
        return max(0, self.bytes_seen - self.max_bytes)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append data to the log (keeping head and tail only, once past the cap)."""
        view = memoryview(data).cast("B")
        with self._lock:
            if self._file.closed:
                raise ValueError(f"write to a closed CappedLog ({self.path})")
            start = self.bytes_seen
            self.bytes_seen += len(view)
            self._note_head_end(start, view)
            verbatim = min(len(view), max(0, self.max_bytes - start))  # within the cap: straight to disk
            if verbatim:
                self._file.write(view[:verbatim])
            self._ring.write(view)
            if time.monotonic() - self._flushed_at >= self.flush_interval_s:
                self._flush()

    def flush(self) -> None:
        """Put what is kept on disk now."""
        with self._lock:
            if not self._file.closed:
                self._flush()

    def close(self) -> None:
        """Write the final head, marker and tail, and close the file (idempotent)."""
        with self._lock:
            if not self._file.closed:
                self._flush()
                self._file.close()

    def head(self) -> bytes:
        """The first bytes of the stream, up to max_bytes // 2, as kept on disk."""
        self.flush()
        with self.path.open("rb") as f:
            return f.read(min(self.bytes_seen, self.head_bytes))

    def tail(self) -> bytes:
        """The last bytes of the stream, up to max_bytes - max_bytes // 2."""
        with self._lock:
            return b"".join(self._ring.parts())

    def __enter__(self) -> "CappedLog":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _note_head_end(self, start: int, view: memoryview) -> None:
        """Remember whether the head's last byte is a newline, when this write contains it."""
        last = self.head_bytes - 1
        if start <= last < start + len(view):
            self._head_ends_line = view[last - start] == ord("\n")

    def _flush(self) -> None:
        """Past the cap, rewrite marker and tail after the head; before it, just flush the buffer."""
        if self.bytes_dropped:
            self._file.seek(self.head_bytes)
            if not self._head_ends_line:
                self._file.write(b"\n")
            self._file.write(MARKER.format(self.bytes_dropped).encode())
            for part in self._ring.parts():
                self._file.write(part)
            self._file.truncate()
        self._file.flush()
        self._flushed_at = time.monotonic()


def copy_lines(chunks: Iterable[bytes], log: CappedLog, on_line: Callable[[str], None] | None) -> None:
    """Copy a phase's output into the capped log as it comes; hand each complete line to on_line."""
    pending = b""
    for chunk in chunks:
        try:
            log.write(chunk)
        except ValueError:  # the log was closed: the runner gave up waiting for this stream
            return
        if on_line is None:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_line(line.decode("utf-8", "replace"))
        pending = pending[-MAX_LINE_BYTES:]  # a line without end cannot grow without bound
    if on_line is not None and pending:
        on_line(pending.decode("utf-8", "replace"))
