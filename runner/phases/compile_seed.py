"""The run's compile seed: torch.compile's caches reused across a run's experiments, never a channel between them.

Inductor and Triton keep what they compile (generated Python and C++, built kernels) in cache folders
whose content a later compile loads and runs. A cache shared as it is would let a candidate plant code
that the next experiment executes. So:

- Every train phase keeps its caches under CACHE_DIR (CACHE_ENV names them to torch), in its private
  /tmp: the docker provider's tmpfs, the process provider's phase root. What a candidate writes there
  dies with the phase.
- The run's baseline (the run's starting train.py, which the user wrote, not the agent) is the only
  phase that seeds: its CACHE_DIR is a writable mount of a fresh staging folder. Once it exits
  cleanly, the runner copies what it left (folders and regular files, never through a link, within
  MAX_SEED_ENTRIES and MAX_SEED_BYTES) into the seed's folder, per run and image id, read-only, and the
  caller records the seed's digest (SHA-256 over every path, its kind and each file's bytes).
- A later train phase of the run gets the seed mounted read-only at SEED_MOUNT, only after the runner
  found it still has the recorded digest (a changed seed is refused: the phase compiles cold), and
  starts with the trusted launcher (seed_launcher.py), which copies it into the private CACHE_DIR
  before train.py runs.

Nothing a later experiment writes reaches the seed: its one writable compile cache is private, the seed
is read-only to it (docker: a read-only bind; process: a copy in its phase root), and the process
provider's phases, which can write the host's files as the runner's user, fail the digest check when
they change the seed.
"""

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.sandbox.base import Mount, grant_phase_write
from autoresearch.runner.sandbox.files import copy_file, remove_tree
from autoresearch.runner.workspace import cache_dir

CACHE_DIR = "/tmp/compile-cache"  # a train phase's compile caches, in its private /tmp
CACHE_ENV = {"TORCHINDUCTOR_CACHE_DIR": f"{CACHE_DIR}/torchinductor", "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton"}
SEED_MOUNT = "/compile-seed"
LAUNCHER = Path(__file__).with_name("seed_launcher.py")
LAUNCHER_MOUNT = "/runner/seed_launcher.py"
MAX_SEED_ENTRIES = 5000  # files and folders: below the process provider's MAX_COPY_ENTRIES (a copy in each root)
MAX_SEED_BYTES = 512 * 2**20  # each seeded phase holds a copy in its /tmp (the policy's tmpfs_size)


@dataclass(frozen=True)
class Seed:
    """A sealed seed as recorded: the digest of its paths and contents, its files and bytes."""

    digest: str
    files: int
    bytes: int


@dataclass(frozen=True)
class CompileCache:
    """A train phase's part in a run's seed: the baseline fills it (sealed None), later phases start from it."""

    folder: Path  # where the seed lies on the host (seed_folder)
    sealed: Seed | None = None  # the recorded seed to start from; None: this phase is the run's baseline


@dataclass(frozen=True)
class PhaseCache:
    """What one train phase gets of the compile cache."""

    command: list[str]
    mounts: list[Mount]
    note: str  # cold, seeding, warm, or why the run's seed was refused
    staging: Path | None = None  # seeding: where the phase's cache lands, sealed after a clean exit


def seed_folder(workspace_key: str, run_id: int, image_id: str) -> Path:
    """The seed of one run for one image: a rebuilt image never starts from another image's seed."""
    image_key = hashlib.sha256(image_id.encode()).hexdigest()[:16]
    return cache_dir() / "compile-seeds" / f"{workspace_key}-run{run_id}" / image_key


def phase_cache(cache: CompileCache | None, work_dir: Path, command: list[str]) -> PhaseCache:
    """How a train phase runs command (`python3 TRAIN_PY ...`) under cache; None: without a seed (cold)."""
    if cache is None:
        return PhaseCache(command, [], "cold")
    if cache.sealed is None:
        remove_tree(cache.folder)  # a seed the run never recorded (its runner died first) is not trusted
        staging = work_dir / "compile-cache"
        remove_tree(staging)
        staging.mkdir(parents=True)
        grant_phase_write(staging)
        return PhaseCache(command, [Mount(staging, CACHE_DIR, read_only=False)], "seeding", staging)
    problem = seed_problem(cache.folder, cache.sealed)
    if problem:
        return PhaseCache(command, [], f"cold: the run's seed was refused ({problem})")
    return PhaseCache(["python3", "-I", LAUNCHER_MOUNT, SEED_MOUNT, CACHE_DIR, *command[1:]],
                      [Mount(cache.folder, SEED_MOUNT), Mount(LAUNCHER, LAUNCHER_MOUNT)],
                      f"warm: {cache.sealed.files} files of the run's seed {cache.sealed.digest[:12]}")


def seal_phase(phase: PhaseCache, cache: CompileCache | None, clean: bool) -> tuple[Seed | None, str]:
    """After the train phase: a seeding phase's cache sealed as the seed when it exited cleanly; (seed, note)."""
    if phase.staging is None or cache is None:
        return None, phase.note
    try:
        if not clean:
            return None, "not seeded: the baseline did not exit cleanly"
        return seal(phase.staging, cache.folder)
    finally:
        remove_tree(phase.staging)


def seal(staging: Path, folder: Path) -> tuple[Seed | None, str]:
    """Copy staging into folder, read-only, and digest it; (None, why) when it is empty or over a cap."""
    building = folder.with_name(f"{folder.name}.sealing")
    remove_tree(building)
    building.parent.mkdir(parents=True, exist_ok=True)
    try:
        _copy_regular(staging, building, [MAX_SEED_ENTRIES, MAX_SEED_BYTES])
    except ValueError as exc:
        remove_tree(building)
        return None, f"not seeded: {exc}"
    seed = seed_digest(building)
    if seed.files == 0:
        remove_tree(building)
        return None, "not seeded: the baseline compiled nothing"
    for inside, _, _ in os.walk(building, topdown=False):
        os.chmod(inside, 0o555)
    os.rename(building, folder)
    return seed, f"seeded: {seed.files} files, {seed.bytes / 2**20:.1f} MiB, digest {seed.digest[:12]}"


def seed_problem(folder: Path, sealed: Seed) -> str | None:
    """Why the seed in folder may not be used; None when it is exactly the one recorded."""
    try:
        found = seed_digest(folder)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    if found != sealed:
        return f"its digest is {found.digest[:12]}, not the recorded {sealed.digest[:12]}"
    return None


def seed_digest(folder: Path) -> Seed:
    """The digest of everything under folder: each path with its kind and each file's bytes, links never followed."""
    digest, files, size = hashlib.sha256(), 0, 0
    for path, kind in _entries(folder):
        digest.update(f"{kind} {path.relative_to(folder)}\0".encode())
        if kind == "file":
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
                files, size = files + 1, size + os.fstat(f.fileno()).st_size
    return Seed(digest.hexdigest(), files, size)


def _entries(folder: Path) -> Iterator[tuple[Path, str]]:
    """Every path under folder, sorted, with its kind (dir, file, link, other); only folders are entered."""
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            yield path, "link"
        elif entry.is_dir(follow_symlinks=False):
            yield path, "dir"
            yield from _entries(path)
        else:
            yield path, "file" if entry.is_file(follow_symlinks=False) else "other"


def _copy_regular(source: Path, dest: Path, budget: list[int]) -> None:
    """Copy source's folders and regular files to dest (files read-only), never through a link; ValueError
    when budget ([entries, bytes] left) runs out."""
    dest.mkdir()
    for path, kind in _entries(source):
        inside = dest / path.relative_to(source)
        if kind == "dir":
            inside.mkdir()
        elif kind == "file":
            budget[1] -= copy_file(path, inside)
        else:
            continue  # a link or anything else stays out
        budget[0] -= 1
        if budget[0] < 0 or budget[1] < 0:
            raise ValueError(f"the baseline's cache holds more than {MAX_SEED_ENTRIES} files and folders or "
                             f"{MAX_SEED_BYTES >> 20} MiB")
