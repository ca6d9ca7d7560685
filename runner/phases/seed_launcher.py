"""Run first in a seeded train phase: copy the run's compile seed into the phase's own cache, then become train.py.

    python3 -I seed_launcher.py SEED CACHE TRAIN_PY [ARG ...]

The runner mounts this file and the seed read-only (runner/phases/compile_seed.py); it runs before
anything of the candidate, with the standard library only. CACHE lies in the phase's private /tmp,
which dies with the phase. Folders and regular files are copied, never through a link; then the
process replaces itself with `python3 TRAIN_PY ARG ...`, so what the host watches is train.py.
"""

import os
import shutil
import sys


def copy_seed(seed: str, cache: str) -> None:
    """Copy seed's folders and regular files under cache (links and anything else are left out)."""
    for folder, _, names in os.walk(seed):  # never descends into a link to a folder
        inside = os.path.join(cache, os.path.relpath(folder, seed))
        os.makedirs(inside, exist_ok=True)
        for name in names:
            source = os.path.join(folder, name)
            if os.path.isfile(source) and not os.path.islink(source):
                shutil.copyfile(source, os.path.join(inside, name))


def main(argv: list[str]) -> None:
    seed, cache, *train = argv[1:]
    copy_seed(seed, cache)
    os.execv(sys.executable, [sys.executable, *train])


if __name__ == "__main__":
    main(sys.argv)
