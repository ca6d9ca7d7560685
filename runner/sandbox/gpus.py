"""Which GPU a run's containers get: the configured one (by index or UUID) or the first, by UUID."""

from autoresearch.runner.errors import UserError

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency, but the host may lack it
    pynvml = None


def assigned_gpu(ids: list[str], flavor: str) -> str | None:
    """The UUID of the GPU to use, or None on the CPU image; a clear error when a GPU is named but absent."""
    if flavor == "cpu":
        return None
    uuids = _visible_uuids()
    if not uuids:
        raise UserError("the cuda image needs an NVIDIA GPU and driver, and NVML sees none: "
                        "set [image] flavor = \"cpu\" in autoresearch.toml to run on CPU")
    wanted = ids[0] if ids else "0"
    if wanted.isdigit():
        if int(wanted) >= len(uuids):
            raise UserError(f"[gpus] ids names GPU {wanted}, but this machine has {len(uuids)}")
        return uuids[int(wanted)]
    if wanted not in uuids:
        raise UserError(f"[gpus] ids names {wanted}, which is not one of this machine's GPUs: {', '.join(uuids)}")
    return wanted


def _visible_uuids() -> list[str]:
    if pynvml is None:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        return [_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
