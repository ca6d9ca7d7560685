"""The settings one command runs with, resolved once from the command line, autoresearch.toml and the policy.

Precedence, highest first (like modal's config: one table, one rule):

    1. a command-line flag              (--budget, --flavor, --sandbox, --slots, --max-experiments, --target-bpb,
                                         --patience, --policy, ...)
    2. autoresearch.toml                ([budget] seconds, [image] flavor, [sandbox] provider, [caps] ...)
    3. the policy                       ([limits] time_budget_s: the policy's own default budget)
    4. the built-in default             (Config's defaults: offline data, flavor auto, the docker sandbox)

Outside a workspace (the scratch workspace of `autoresearch try`) there is no autoresearch.toml, so
the config's defaults stand in for it. `resolve_settings` is the one place that folds these together;
everything downstream reads a frozen `Settings`. The time budget has one name from here to the kill:
`Settings.policy.limits.time_budget_s` (`Settings.time_budget_s`), which the experiment gives the
candidate (AUTORESEARCH_TIME_BUDGET), the sandbox turns into the phase's deadline
(`training_deadline_s`), the budget rules meter, and the run records.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner.agents.base import AgentSettings
from autoresearch.runner.check.policy import Limits, Policy, load_policy
from autoresearch.runner.config import Caps, Config, ExecutorConfig, KeepRule, NotifyConfig, load_config
from autoresearch.runner.errors import UserError
from autoresearch.runner.sandbox.flavors import resolve_flavor
from autoresearch.runner.workspace import CONFIG_FILE, Workspace

BUNDLED_POLICIES = ("default", "strict")
CAP_FLAGS = ("max_experiments", "max_hours", "max_usd", "target_val_bpb", "patience")  # Flags that set a Caps field
FLAG_NAMES = {"time_budget_s": "--budget", "target_val_bpb": "--target-bpb"}  # else --the-field-name


@dataclass(frozen=True)
class Flags:
    """What the command line asked for; None: not given (the next source in the precedence decides)."""

    time_budget_s: float | None = None
    flavor: str | None = None
    sandbox: str | None = None
    policy: Path | None = None
    max_experiments: int | None = None
    max_hours: float | None = None
    max_usd: float | None = None
    target_val_bpb: float | None = None  # --target-bpb
    patience: int | None = None
    slots: int | None = None
    executor: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a run, a trial or a bench needs to know, resolved once."""

    config: Config  # autoresearch.toml as written (or its defaults outside a workspace)
    policy: Policy  # with limits.time_budget_s the resolved budget
    flavor: str  # resolved: cpu or cuda
    sandbox: str  # the provider's name
    sandbox_insisted: bool  # named on the command line (the process provider may then run beside Docker)
    caps: Caps

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    @property
    def time_budget_s(self) -> float:
        return self.policy.limits.time_budget_s

    @property
    def source(self) -> str:
        return self.config.source

    @property
    def gpus(self) -> list[str]:
        return self.config.gpus

    @property
    def agent(self) -> AgentSettings:
        return self.config.agent

    @property
    def keep(self) -> KeepRule:
        return self.config.keep

    @property
    def executor(self) -> ExecutorConfig:
        return self.config.executor

    @property
    def notify(self) -> NotifyConfig:
        return self.config.notify


def resolve_settings(ws: Workspace, flags: Flags = Flags()) -> Settings:
    """The settings of a command in ws: flags over autoresearch.toml over the policy over the defaults."""
    config = Config() if ws.is_scratch else load_config(ws.root / CONFIG_FILE)
    _check_flags(flags)
    policy = _policy(ws, config, flags.policy)
    budget = next(value for value in (flags.time_budget_s, config.time_budget_s, policy.limits.time_budget_s)
                  if value is not None)
    policy = dataclasses.replace(policy, limits=dataclasses.replace(policy.limits, time_budget_s=budget))
    caps = dataclasses.replace(config.caps, **{name: getattr(flags, name) for name in CAP_FLAGS
                                               if getattr(flags, name) is not None})
    executor = dataclasses.replace(config.executor, **{name: value for name, value in (
        ("slots", flags.slots), ("name", flags.executor)) if value is not None})
    config = dataclasses.replace(config, executor=executor)
    return Settings(config=config, policy=policy, flavor=resolve_flavor(flags.flavor or config.flavor),
                    sandbox=flags.sandbox or config.sandbox, sandbox_insisted=flags.sandbox is not None, caps=caps)


def device_of(gpu_uuid: str | None) -> str:
    """"gpu" when a phase has a GPU, else "cpu": the one test that picks every CPU-or-GPU allowance."""
    return "gpu" if gpu_uuid else "cpu"


def training_deadline_s(limits: Limits, device: str) -> float:
    """When the host kills a training phase: the budget plus the device's allowance (imports, first step, export)."""
    allowance = limits.deadline_allowance_cuda_s if device == "gpu" else limits.deadline_allowance_cpu_s
    return limits.time_budget_s + allowance


def _policy(ws: Workspace, config: Config, flag: Path | None) -> Policy:
    """The --policy file, else the config's policy: a bundled name or a path in the workspace."""
    if flag is not None:
        return load_policy(flag)
    if config.policy in BUNDLED_POLICIES:
        return load_policy(name=config.policy)
    return load_policy(ws.root / config.policy)


def _check_flags(flags: Flags) -> None:
    for name in ("time_budget_s", *CAP_FLAGS, "slots"):
        value = getattr(flags, name)
        if value is not None and value <= 0:
            flag = FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")
            raise UserError(f"{flag} must be positive, got {value:g}")
