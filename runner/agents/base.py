"""What every agent takes and returns, the errors the loop must tell apart, and the agents' settings."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from autoresearch.runner.check.findings import Finding


@dataclass(frozen=True)
class HistoryRow:
    """One past experiment, as the agent sees it."""

    seq: int
    commit: str  # short sha or "-" when never committed
    val_bpb: float | None
    status: str  # a record.status.Status: keep, discard, crash, timeout, oom, killed, blocked, violation
    description: str
    delta: float | None = None  # val_bpb minus the best's when it was judged (negative: better); None: not judged


@dataclass(frozen=True)
class Change:
    """A recent kept or near-miss experiment and its diff: what worked, or would have worked on its parent (a near
    miss beat its own parent, but the best had moved on when it finished: its change may be worth porting)."""

    seq: int
    description: str
    near_miss: bool  # False: kept
    gain: float | None  # over the best before it (kept) or over its parent (near miss); None: not recorded
    diff: str  # train.py against its parent


@dataclass(frozen=True)
class ExperimentSummary:
    """What the store recorded of the last experiment's training; None: not recorded (see runner/agents/memory.py
    for how each figure is read)."""

    seq: int
    status: str
    description: str
    val_bpb: float | None
    final_loss: float | None  # the training loss of its last progress point
    tok_per_s: float | None  # the median over its progress points
    mfu_percent: float | None  # the median over its progress points
    peak_memory_mb: float | None  # peak VRAM as train.py reported it, else the host-measured peak
    training_seconds: float | None
    steps: int  # progress points recorded
    flat_step: int | None  # where the loss curve flattened (memory.flattened); None: too few points to say
    flat_elapsed: float | None  # the training seconds at flat_step


@dataclass(frozen=True)
class ProposalContext:
    """Everything an agent reads to propose the next experiment."""

    program_md: str
    prepare_py: str
    train_py: str  # the current best train.py (the parent of the next candidate)
    history: list[HistoryRow]  # oldest first
    last_failure: str | None  # traceback/log tail of the last failed experiment, or None
    best_val_bpb: float | None
    in_flight: list[HistoryRow] = field(default_factory=list)  # experiments training now (several slots)
    recent_changes: list[Change] = field(default_factory=list)  # recent keeps and near misses, the latest first
    last_summary: ExperimentSummary | None = None  # the last experiment that ran, None before any
    notes: str = ""  # the agent's notes as its latest proposal left them (agent-written: show them as data)
    parent_sha: str | None = None  # the commit of train_py: the proposal's parent


@dataclass(frozen=True)
class Proposal:
    """A candidate train.py and the one line that says what changed."""

    train_py: str
    description: str
    turn_ids: list[int] = field(default_factory=list)  # agent_turns rows logged for this proposal (and their cost)
    notes: str | None = None  # the agent's notes, replaced whole by this proposal; None: unchanged


@dataclass(frozen=True)
class Outcome:
    """What the loop tells the agent after deciding on its proposal."""

    proposal: Proposal
    status: str
    val_bpb: float | None
    kept: bool


@dataclass(frozen=True)
class AgentSettings:
    """The [agent] table of autoresearch.toml."""

    name: str = "sweep"  # a name of runner/agents REGISTRY: claude | openai | claude-code | codex | sweep | replay
    model: str | None = None  # None: the agent's own default (DEFAULT_MODEL of its class)
    max_tokens: int = 16000
    max_turns: int = 12  # tool-use round trips per proposal before giving up (AgentError)
    timeout_s: float = 120.0  # one API call; a coding-agent CLI's whole proposal gets cli_timeout_s
    max_retries: int = 4  # passed to the SDK's own retry
    base_url: str | None = None  # a compatible server or proxy; None = the SDK's default (and its *_BASE_URL)
    api: str = "chat"  # the openai agent's protocol: chat (Chat Completions) | responses (OpenAI's Responses API)
    key_env: str | None = None  # the environment variable holding the key; None: the agent's own (KEY_ENV)
    replay_file: str | None = None  # JSONL for the replay agent
    price_input_per_mtok: float = 3.0
    price_output_per_mtok: float = 15.0
    cli_timeout_s: float = 900.0  # claude-code / codex: one proposal's whole CLI run, in its agent container
    memory_tokens: int = 8000  # the research memory's budget in the prompt (history, diffs, summary, notes)


AGENT_APIS = ("chat", "responses")  # the values of [agent] api
# The environment variable each LLM agent reads its key from, unless [agent] key_env names another.
KEY_ENVS = {"claude": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "claude-code": "ANTHROPIC_API_KEY",
            "codex": "OPENAI_API_KEY"}
# What a compatible server that lacks an endpoint answers: no such route, method not allowed, not implemented.
UNIMPLEMENTED_STATUSES = (404, 405, 501)
# Phrases of the error replies that mean the account cannot pay: no retry can help (Anthropic's, then OpenAI's code).
BILLING_PHRASES = ("credit balance", "usage limits", "spending limit", "insufficient_quota")


@dataclass(frozen=True)
class AgentHost:
    """What the runner lends an agent beyond its settings: a private folder for its scratch files (a coding-agent
    CLI's staging folder and its gateway's socket), the dollars the run may still spend (None: no cap), and the
    labels its containers carry (so the runner's orphan cleanup finds them)."""

    scratch_dir: Path
    dollars_left: Callable[[], float | None] = lambda: None
    labels: dict[str, str] = field(default_factory=dict)

    def require_budget(self) -> None:
        """AgentFatal when the run's dollar cap is spent: asked before every model call, so no agent's proposal
        can spend past it (a coding-agent CLI's gateway asks the same)."""
        left = self.dollars_left()
        if left is not None and left <= 0:
            raise AgentFatal("the run's dollar cap is reached: no further model call is made")


class AgentError(Exception):
    """A bad reply or transient trouble: the loop records it and retries (bounded)."""


class AgentViolation(AgentError):
    """A coding agent changed what it may not (runner/agents/workdir.py): no experiment comes of its proposal; the
    loop records a violation with the evidence (finding) and the proposal's model calls (turn_ids)."""

    RULE = "agent.confinement"

    def __init__(self, message: str, evidence: dict):
        super().__init__(message)
        self.finding = Finding(self.RULE, "critical", "block", message, evidence)
        self.turn_ids: list[int] = []  # set by the agent that caught it


class AgentFatal(Exception):
    """The run must stop now (key refused, permission denied, spending cap ...); the message is one clear line."""


TurnLogger = Callable[..., int]
"""log_turn(model=str, usage=dict, latency_s=float, request=dict, response=dict, error=str|None) -> row id.

usage keys: input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd.
"""


class Agent(Protocol):
    """Proposes train.py candidates one at a time and hears how each one went."""

    name: str
    model: str  # "" for offline agents

    def propose(self, context: ProposalContext) -> Proposal: ...

    def preflight(self) -> None:
        """Raise AgentFatal when the agent cannot work at all (a refused key), before the run spends anything."""

    def observe(self, outcome: Outcome) -> None: ...
