"""Preparing the task's data once per cache, in a sandbox phase (a container of the experiment image).

Preparation is the only phase allowed the network (the web source downloads parquet shards); the
offline source needs none and runs with the network off. The result is a folder of token shards
and a manifest that every experiment mounts read-only, split by split.
"""

import hashlib
import json
import sys
from pathlib import Path

from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.sources import SOURCES
from autoresearch.runner.sandbox.base import PHASE_LABEL, Mount, PhaseSpec, Sandbox, grant_phase_write
from autoresearch.runner.task_files import OFFLINE_CORPUS, default_task_dir
from autoresearch.runner.workspace import cache_dir


def data_dir(task_dir: Path, source: str) -> Path:
    """The prepared data of a source, per version of prepare.py (a changed task prepares anew)."""
    digest = hashlib.sha256((task_dir / "prepare.py").read_bytes()).hexdigest()[:12]
    return cache_dir() / "data" / f"{source}-{digest}"


def read_manifest(directory: Path) -> dict | None:
    path = directory / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def split_files(directory: Path, split: str) -> list[Path]:
    """The files a phase needs to see one split: the manifest, the tokenizer and the split's shards."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise UserError(f"no prepared data in {directory}: run `autoresearch prepare`")
    shards = [directory / entry["file"] for entry in manifest["splits"][split]]
    return [directory / "manifest.json", directory / manifest["tokenizer"]["file"], *shards]


def prepare_data(sandbox: Sandbox, image: str, task_dir: Path, source: str = "offline") -> Path:
    """Prepared data for source, made now if missing; returns its folder."""
    if source not in SOURCES:
        raise UserError(f"unknown data source {source!r} (choose from {', '.join(SOURCES)})")
    out = data_dir(task_dir, source)
    if read_manifest(out) is not None:
        return out
    out.mkdir(parents=True, exist_ok=True)
    grant_phase_write(out)
    spec = PhaseSpec(
        image=image,
        command=["python3", "/task/prepare.py", "data", "--source", source, "--out", "/data"],
        mounts=[
            Mount(task_dir / "prepare.py", "/task/prepare.py"),
            Mount(default_task_dir() / OFFLINE_CORPUS, f"/task/{OFFLINE_CORPUS}"),
            Mount(out, "/data", read_only=False),
        ],
        labels={PHASE_LABEL: "prepare"},
        network=source == "web",
        deadline_s=24 * 3600 if source == "web" else 900,
    )
    print(f"preparing the {source} data in {out} (once) ...", file=sys.stderr, flush=True)
    result = sandbox.run(spec, out / "prepare.log",
                         on_line=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    if result.exit_code != 0 or read_manifest(out) is None:
        reason = "timed out" if result.timed_out else f"exit code {result.exit_code}"
        last = result.log_tail.strip().splitlines()[-1:] or [""]
        raise UserError(f"data preparation failed ({reason}): {last[0][:200]} (log: {out / 'prepare.log'})")
    return out
