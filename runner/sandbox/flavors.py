"""The experiment image's flavors: which build of torch phases run with (cpu or cuda), and how "auto" picks one.

Kept apart from images.py (which drives Docker) so that settings can name and resolve a flavor without
loading docker-py.
"""

import subprocess

from autoresearch.runner.errors import UserError

IMAGE_REPO = "autoresearch-experiment"
FLAVORS = ("cpu", "cuda")
# The one torch both flavors install (cpu: the +cpu build; cuda: PyPI's CUDA build with its NVIDIA runtime
# wheels), and the oldest torch the bundled task runs on: torch.optim.Muon arrived in 2.9. A custom base
# image (`autoresearch image --base`) brings its own torch; the image self-test holds it to the minimum.
TORCH_VERSION = "2.13.0"
TASK_MIN_TORCH = "2.9"


def image_tag(flavor: str) -> str:
    """The experiment image's tag for a resolved flavor ("cpu" or "cuda")."""
    if flavor not in FLAVORS:
        raise UserError(f"unknown image flavor {flavor!r}: use cpu, cuda or auto (make image FLAVOR=cpu)")
    return f"{IMAGE_REPO}:{flavor}"


def detect_flavor() -> str:
    """Return "cuda" when `nvidia-smi -L` lists a GPU, else "cpu"."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    return "cuda" if listing.returncode == 0 and gpus else "cpu"


def resolve_flavor(flavor: str) -> str:
    """Turn "auto", "cpu" or "cuda" into "cpu" or "cuda"."""
    if flavor == "auto":
        return detect_flavor()
    image_tag(flavor)  # validates
    return flavor
