"""Files as the host handles what phases wrote: never through a link.

A phase's files (a seed, a phase root, a hand-over) may hold links a candidate planted; the runner
copies and removes them without ever following one out of the tree it means.
"""

import contextlib
import os
import shutil
import stat
from pathlib import Path


def copy_file(source: Path, dest: Path, mode: int = 0o444) -> int:
    """Copy the regular file source (never through a link) to a new dest; returns its size."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise ValueError(f"{source} is not a regular file")
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 2**20)
            size = dst.tell()
    os.chmod(dest, mode)
    return size


def remove_tree(path: Path) -> None:
    """Remove path and everything in it, never following a link out of it (links are unlinked)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    os.chmod(path, 0o700)
    for folder, names, _ in os.walk(path):  # make every real folder removable (a phase may have chmod'ed one)
        for name in names:  # before os.walk lists them (top-down); links to folders are listed, never entered
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(os.path.join(folder, name)).st_mode):
                    os.chmod(os.path.join(folder, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)  # fd-based on Linux: links are removed, never followed
