"""The experiment image's self-test: run inside a freshly built image before it gets its tag.

The builder (runner/sandbox/images.py) runs this file in a container of the candidate image with the bundled
task mounted read-only at /task, no network, as the image's user. It checks, in order:

1. api:       every library name the task's files use (torch.optim.Muon, F.rms_norm, np.random.default_rng,
              ...) exists here, and torch is at least the task's minimum;
2. toolchain: what torch.compile needs at run time: a C++ compiler and Python's headers (Inductor on CPU,
              Triton's launcher on CUDA), and on the cuda flavor a CUDA build of torch and Triton;
3. cpu:       the task end to end on CPU at a tiny budget: data, train (cpu profile), export, trusted score;
4. smoke:     the GPU profile's code path (torch.compile, bf16 autocast, fused AdamW) at toy sizes on CPU.

Each step prints one line; a failure is one line `FAIL <step>: <why>` and exit 1. The last line on success is
`RESULT {json}` with the figures the builder prints.
"""

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

TASK = Path("/task")
WORK = Path("/tmp/selftest")
TASK_FILES = ("train.py", "prepare.py")
BUDGET_S = "2"  # training seconds of each tiny run
STEP_TIMEOUT_S = 600
MIN_TORCH = os.environ["AUTORESEARCH_MIN_TORCH"]
FLAVOR = os.environ["AUTORESEARCH_FLAVOR"]


class Failed(Exception):
    """One step failed; the message is the line to print."""


def library_names(path: Path) -> set[str]:
    """Dotted names path uses from the modules it imports, with aliases expanded (F.rms_norm -> torch...)."""
    tree = ast.parse(path.read_text())
    local = {p.stem for p in TASK.glob("*.py")}
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                aliases[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    names = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases and parts:
            full = aliases[node.id]
            if full.split(".")[0] not in local:
                names.add(".".join([full, *reversed(parts)]))
    return names


def resolves(name: str) -> bool:
    """Whether a dotted name exists: import its longest module prefix, then look up the rest."""
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                return False
    return True


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".")[:2])


def check_api() -> str:
    import torch

    if version_tuple(torch.__version__) < version_tuple(MIN_TORCH):
        raise Failed(f"FAIL api: torch {torch.__version__} is older than the task's minimum {MIN_TORCH}")
    names = set().union(*(library_names(TASK / name) for name in TASK_FILES))
    missing = sorted(name for name in names if not resolves(name))
    if missing:
        raise Failed(f"FAIL api: torch {torch.__version__} lacks what the task uses: {', '.join(missing[:5])}")
    return f"api: {len(names)} names the task uses all resolve (torch {torch.__version__})"


def check_toolchain() -> str:
    compiler = shutil.which("c++") or shutil.which("g++")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if compiler is None:
        raise Failed("FAIL toolchain: no C++ compiler (torch.compile's Inductor needs one): add g++ to the base")
    if not headers.is_file():
        raise Failed(f"FAIL toolchain: {headers} is missing (Triton builds against it): add python3-dev to the base")
    found = f"toolchain: {compiler}, {headers}"
    if FLAVOR == "cuda":
        import torch

        if torch.version.cuda is None:
            raise Failed(f"FAIL toolchain: the cuda flavor has torch {torch.__version__}, a build without CUDA")
        try:
            import triton
        except ImportError:
            raise Failed("FAIL toolchain: the cuda flavor has no Triton (torch.compile on GPU needs it)") from None
        found += f", CUDA {torch.version.cuda}, Triton {triton.__version__}"
    return found


def run(step: str, command: list[str], env: dict[str, str]) -> str:
    """Run command; its output, or Failed with its last line."""
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, cwd=WORK,
                          timeout=STEP_TIMEOUT_S)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines() or [f"exit {done.returncode}"]
        raise Failed(f"FAIL {step}: {lines[-1][:300]}")
    return done.stdout


def train_and_score(profile: str, data: Path) -> dict[str, float]:
    """Train the bundled train.py under profile at a tiny budget, then score its hand-over as the scorer does."""
    handover = WORK / profile
    started = time.monotonic()
    out = run(profile, [sys.executable, str(TASK / "train.py")],
              {"AUTORESEARCH_PROFILE": profile, "AUTORESEARCH_DATA": str(data),
               "AUTORESEARCH_TIME_BUDGET": BUDGET_S, "AUTORESEARCH_HANDOVER": str(handover)})
    trained = time.monotonic()
    sys.path.insert(0, str(TASK))
    import prepare

    try:
        verdict = prepare.evaluate(handover, data, "val")
    except Exception as exc:  # a refused hand-over (ViolationError) or a scorer that breaks in this image
        raise Failed(f"FAIL {profile}: the trusted score failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    summary = dict(line.split(":", 1) for line in out.split("\n---\n")[-1].splitlines() if ":" in line)
    return {"val_bpb": verdict["bpb"], "train_s": trained - started, "score_s": time.monotonic() - trained,
            "compile_s": float(summary.get("compile_seconds", "0"))}


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"flavor": FLAVOR}
    try:
        print(check_api(), flush=True)
        print(check_toolchain(), flush=True)
        started = time.monotonic()
        data = WORK / "data"
        run("data", [sys.executable, str(TASK / "prepare.py"), "data", "--source", "offline", "--out", str(data)], {})
        result["data_s"] = round(time.monotonic() - started, 1)
        for profile in ("cpu", "smoke"):
            figures = train_and_score(profile, data)
            result[profile] = {key: round(value, 4) for key, value in figures.items()}
            print(f"{profile}: trained in {figures['train_s']:.0f} s (compile {figures['compile_s']:.0f} s), "
                  f"scored val_bpb {figures['val_bpb']:.4f} in {figures['score_s']:.0f} s", flush=True)
    except Failed as failure:
        print(failure, flush=True)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"FAIL timeout: {' '.join(map(str, exc.cmd))[:200]} ran past {STEP_TIMEOUT_S} s", flush=True)
        return 1
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
