"""Which GPUs a run's containers get: the configured ones (by index or UUID, or "all") or the first, by UUID."""

from dataclasses import dataclass

from autoresearch.runner.errors import UserError

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency, but the host may lack it
    pynvml = None

ALL = "all"  # [gpus] ids = "all" (runner/config.py spells it ALL_GPUS)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str


def chosen_gpus(ids: list[str], flavor: str) -> list[Gpu]:
    """The GPUs [gpus] ids names (empty: the first; "all": every one), none on the CPU image; a clear error when
    one is named but absent, named twice, or when no GPU is there at all."""
    if flavor == "cpu":
        return []
    gpus = visible_gpus()
    if not gpus:
        raise UserError("the cuda image needs an NVIDIA GPU and driver, and NVML sees none: "
                        "set [image] flavor = \"cpu\" in autoresearch.toml to run on CPU")
    if ids == [ALL]:
        return gpus
    chosen = [_find(gpus, wanted) for wanted in (ids or ["0"])]
    if len({gpu.uuid for gpu in chosen}) < len(chosen):
        raise UserError(f"[gpus] ids names a GPU twice ({', '.join(ids)}): name each GPU once")
    return chosen


def assigned_gpu(ids: list[str], flavor: str) -> str | None:
    """The UUID of the first GPU ids names, or None on the CPU image."""
    chosen = chosen_gpus(ids, flavor)
    return chosen[0].uuid if chosen else None


def visible_gpus() -> list[Gpu]:
    """Every GPU NVML sees here, in its index order (none without a driver)."""
    if pynvml is None:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        return [Gpu(i, _text(pynvml.nvmlDeviceGetUUID(h)), _text(pynvml.nvmlDeviceGetName(h)))
                for i, h in enumerate(handles)]
    finally:
        pynvml.nvmlShutdown()


def _find(gpus: list[Gpu], wanted: str) -> Gpu:
    if wanted.isdigit():
        if int(wanted) >= len(gpus):
            raise UserError(f"[gpus] ids names GPU {wanted}, but this machine has {len(gpus)} "
                            f"(0 to {len(gpus) - 1}): name one of those, or \"all\"")
        return gpus[int(wanted)]
    found = next((gpu for gpu in gpus if gpu.uuid == wanted), None)
    if found is None:
        raise UserError(f"[gpus] ids names {wanted}, which is not one of this machine's GPUs: "
                        f"{', '.join(gpu.uuid for gpu in gpus)}")
    return found


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
