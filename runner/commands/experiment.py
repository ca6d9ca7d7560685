"""Single experiments outside the loop: `try` a train.py, and measure the seed `noise` of the best one."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.runner.commands import add_setting_flags, workspace

if TYPE_CHECKING:
    from autoresearch.runner.trial import TrialResult


def register(sub: argparse._SubParsersAction) -> None:
    trial = sub.add_parser("try", help="run one experiment with TRAIN_PY exactly as the loop would, and record it")
    trial.add_argument("train_py", type=Path, metavar="TRAIN_PY")
    trial.add_argument("--policy", type=Path, help="a policy TOML file (default: the bundled default policy)")
    add_setting_flags(trial, "training seconds (default: [budget] seconds, else the policy's time_budget_s)")
    trial.add_argument("--json", action="store_true", help="print the result as one JSON object")
    trial.add_argument("-v", "--verbose", action="store_true", help="echo the training output as it comes")
    trial.set_defaults(func=cmd_try)

    noise = sub.add_parser("noise", help="repeat the best train.py with N seeds and store the spread")
    noise.add_argument("runs", type=int, metavar="N")
    noise.add_argument("--tag", help="the run whose best to repeat (default: HEAD's train.py)")
    noise.set_defaults(func=cmd_noise)


def cmd_try(args: argparse.Namespace) -> int:
    """Works outside a workspace too, in the scratch one (the config's defaults stand in for autoresearch.toml)."""
    import dataclasses
    import json

    from autoresearch.runner.settings import Flags, resolve_settings
    from autoresearch.runner.trial import try_candidate
    from autoresearch.runner.workspace import find_workspace

    ws = find_workspace()
    flags = Flags(time_budget_s=args.budget, flavor=args.flavor, sandbox=args.sandbox, policy=args.policy)
    result = try_candidate(ws, args.train_py, resolve_settings(ws, flags), echo=args.verbose)
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(describe(result))
    return 0 if result.status == "ok" else 1


def cmd_noise(args: argparse.Namespace) -> int:
    from autoresearch.runner.noise import measure_noise

    noise = measure_noise(workspace(), args.runs, args.tag)
    print(f"val_bpb over {len(noise.values)} seeds of {noise.commit[:8]}: mean {noise.mean:.6f}, "
          f"std {noise.std:.6f}")
    return 0


def describe(result: "TrialResult") -> str:
    """The result for people: status and trusted score first, then where the time went, then findings."""
    lines = [f"experiment {result.experiment_id}: {result.status} ({result.exit_reason})"]
    if not result.isolated:
        lines.append(f"  WARNING: ran in the {result.sandbox} sandbox, WITHOUT isolation")
    if result.val_bpb is not None:
        reported = result.reported.get("val_bpb")
        note = f" (train.py reported {reported:.6f}, advisory)" if reported is not None else ""
        lines.append(f"  val_bpb {result.val_bpb:.6f} trusted{note}")
    if result.training_seconds is not None:
        lines.append(f"  training {result.training_seconds:.1f} s of {result.total_seconds:.1f} s in all")
    if result.gpu_busy_seconds is not None:
        lines.append(f"  GPU busy {result.gpu_busy_seconds:.1f} s (host-measured)")
    if result.host_peak_mem_mb is not None:
        vram = result.reported.get("peak_vram_mb")
        torch_note = f", torch reported {vram:.0f} MB" if vram else ""
        lines.append(f"  peak memory {result.host_peak_mem_mb:.0f} MB host-measured{torch_note} [{result.monitor}]")
    for finding in result.findings:
        rule, severity, action = finding["rule_id"], finding["severity"], finding["action"]
        lines.append(f"  finding {rule} ({severity}, {action}): {finding['message']}")
    if result.log_path:
        lines.append(f"  log: {result.log_path}")
    return "\n".join(lines)
