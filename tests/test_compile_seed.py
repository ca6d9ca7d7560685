"""The compile seed's host side and its launcher, without a sandbox (with one: tests/sandbox/test_compile_seed.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.runner.phases import compile_seed
from autoresearch.runner.phases.compile_seed import (
    CACHE_DIR,
    LAUNCHER,
    LAUNCHER_MOUNT,
    SEED_MOUNT,
    CompileCache,
    phase_cache,
    seal,
    seal_phase,
    seed_digest,
    seed_problem,
)

TRAIN = ["python3", "/task/train.py"]


def staged(tmp_path: Path) -> Path:
    """A baseline's cache as Inductor leaves it, plus a link and a FIFO that a seed never takes."""
    staging = tmp_path / "staging"
    (staging / "torchinductor" / "ab").mkdir(parents=True)
    (staging / "torchinductor" / "ab" / "kernel.py").write_text("KERNEL")
    (staging / "triton").mkdir()
    (staging / "triton" / "launcher.so").write_bytes(b"\x7fELF")
    (staging / "torchinductor" / "link.py").symlink_to("/etc/passwd")
    os.mkfifo(staging / "triton" / "fifo")
    return staging


def test_seal_keeps_folders_and_regular_files_read_only_and_its_digest_is_what_it_holds(tmp_path):
    folder = tmp_path / "seeds" / "run1"
    seed, note = seal(staged(tmp_path), folder)
    assert (seed.files, seed.bytes) == (2, len("KERNEL") + 4)
    assert note == f"seeded: 2 files, 0.0 MiB, digest {seed.digest[:12]}"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "torchinductor", "torchinductor/ab", "torchinductor/ab/kernel.py", "triton", "triton/launcher.so"]
    assert all(not p.stat().st_mode & 0o222 for p in (folder, *folder.rglob("*")))
    assert seed_digest(folder) == seed and seed_problem(folder, seed) is None
    assert not (tmp_path / "seeds" / "run1.sealing").exists()


@pytest.mark.parametrize("change", ["content", "added", "removed", "link", "renamed"])
def test_any_change_to_a_sealed_seed_is_refused(tmp_path, change):
    folder = tmp_path / "seed"
    seed, _ = seal(staged(tmp_path), folder)
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # what a phase of the runner's own user may do
    kernel = folder / "torchinductor" / "ab" / "kernel.py"
    {"content": lambda: kernel.write_text("PLANTED"), "added": lambda: (folder / "planted.py").write_text("x"),
     "removed": kernel.unlink, "link": lambda: (folder / "planted.py").symlink_to(kernel),
     "renamed": lambda: kernel.rename(kernel.with_name("other.py"))}[change]()
    assert seed_problem(folder, seed).startswith("its digest is ")


def test_a_missing_seed_is_refused_with_the_reason(tmp_path):
    seed, _ = seal(staged(tmp_path), tmp_path / "seed")
    assert seed_problem(tmp_path / "elsewhere", seed) == "it cannot be read: No such file or directory"


def test_an_empty_or_oversized_cache_seeds_nothing(tmp_path, monkeypatch):
    (tmp_path / "empty" / "torchinductor").mkdir(parents=True)
    assert seal(tmp_path / "empty", tmp_path / "seed") == (None, "not seeded: the baseline compiled nothing")
    monkeypatch.setattr(compile_seed, "MAX_SEED_ENTRIES", 4)  # the staged cache has 3 folders and 2 files
    seed, note = seal(staged(tmp_path), tmp_path / "seed")
    assert seed is None and note.startswith("not seeded: the baseline's cache holds more than 4 files and folders")
    assert not (tmp_path / "seed").exists() and not (tmp_path / "seed.sealing").exists()


def test_without_a_seed_the_phase_runs_train_py_as_ever(tmp_path):
    assert phase_cache(None, tmp_path, TRAIN) == compile_seed.PhaseCache(TRAIN, [], "cold")


def test_the_baseline_gets_a_writable_staging_folder_as_its_cache_and_an_unrecorded_seed_is_dropped(tmp_path):
    folder = tmp_path / "seed"
    folder.mkdir()
    (folder / "left-by-a-dead-runner.py").write_text("x")
    phase = phase_cache(CompileCache(folder), tmp_path / "work", TRAIN)
    assert (phase.command, phase.note, phase.staging) == (TRAIN, "seeding", tmp_path / "work" / "compile-cache")
    (mount,) = phase.mounts
    assert (mount.source, mount.target, mount.read_only) == (phase.staging, CACHE_DIR, False)
    assert phase.staging.is_dir() and not folder.exists()


def test_a_baseline_that_failed_seals_nothing_and_its_staging_goes(tmp_path):
    phase = phase_cache(CompileCache(tmp_path / "seed"), tmp_path / "work", TRAIN)
    (phase.staging / "kernel.py").write_text("KERNEL")
    assert seal_phase(phase, CompileCache(tmp_path / "seed"), clean=False) == (
        None, "not seeded: the baseline did not exit cleanly")
    assert not phase.staging.exists() and not (tmp_path / "seed").exists()


def test_a_later_phase_starts_from_the_verified_seed_through_the_launcher_or_cold_when_it_changed(tmp_path):
    folder = tmp_path / "seed"
    seed, _ = seal(staged(tmp_path), folder)
    phase = phase_cache(CompileCache(folder, seed), tmp_path / "work", TRAIN)
    assert phase.command == ["python3", "-I", LAUNCHER_MOUNT, SEED_MOUNT, CACHE_DIR, "/task/train.py"]
    assert [(m.source, m.target, m.read_only) for m in phase.mounts] == [
        (folder, SEED_MOUNT, True), (LAUNCHER, LAUNCHER_MOUNT, True)]
    assert phase.note == f"warm: 2 files of the run's seed {seed.digest[:12]}" and phase.staging is None
    folder.chmod(0o755)
    (folder / "planted.py").write_text("x")
    refused = phase_cache(CompileCache(folder, seed), tmp_path / "work", TRAIN)
    assert (refused.command, refused.mounts) == (TRAIN, [])
    assert refused.note.startswith("cold: the run's seed was refused (its digest is ")


def test_the_launcher_copies_the_seed_into_the_private_cache_then_becomes_train_py(tmp_path):
    seal(staged(tmp_path), tmp_path / "seed")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "seed").chmod(0o755)
    (tmp_path / "seed" / "link").symlink_to(tmp_path / "elsewhere")  # a link in a seed is never followed
    train = tmp_path / "train.py"
    train.write_text("import os, sys\nprint(sys.argv, sys.flags.isolated)\n"
                     "print(sorted(os.path.relpath(os.path.join(d, f), sys.argv[1]) for d, _, fs in "
                     "os.walk(sys.argv[1]) for f in fs))\n")
    cache = tmp_path / "private" / "compile-cache"
    done = subprocess.run([sys.executable, "-I", str(LAUNCHER), str(tmp_path / "seed"), str(cache), str(train),
                           str(cache)], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == [f"[{str(train)!r}, {str(cache)!r}] 0",
                                        "['torchinductor/ab/kernel.py', 'triton/launcher.so']"]
    assert (cache / "torchinductor" / "ab" / "kernel.py").stat().st_mode & 0o200  # its own, writable copy
