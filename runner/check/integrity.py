"""Hashes of the files an experiment must not change: prepare.py and every data file."""

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def hash_files(paths: list[Path]) -> dict[str, str]:
    """path -> sha256 for each path; a missing file maps to "missing"."""
    return {str(p): sha256_of(p) if p.is_file() else "missing" for p in paths}


def protected_files(task_dir: Path, data: Path) -> list[Path]:
    """prepare.py and every file of the prepared data (all splits, the tokenizer, the manifest)."""
    return [task_dir / "prepare.py", *sorted(p for p in data.iterdir() if p.is_file() and p.suffix != ".log")]
