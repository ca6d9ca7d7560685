"""The agents that propose train.py candidates, and the factory that makes one from the [agent] settings.

- claude: the Anthropic Messages API with tool use (needs ANTHROPIC_API_KEY).
- sweep: an offline baseline that mutates one numeric hyperparameter at a time.
- replay: recorded edits from a JSONL file, for tests and reproductions.
"""

from pathlib import Path

from autoresearch.runner.agents.base import (
    Agent,
    AgentError,
    AgentFatal,
    AgentSettings,
    HistoryRow,
    Outcome,
    Proposal,
    ProposalContext,
    TurnLogger,
)
from autoresearch.runner.agents.claude import ClaudeAgent
from autoresearch.runner.agents.replay import Exhausted, ReplayAgent
from autoresearch.runner.agents.sweep import SweepAgent
from autoresearch.runner.errors import UserError

AGENTS = ("claude", "sweep", "replay")

__all__ = [
    "AGENTS",
    "Agent",
    "AgentError",
    "AgentFatal",
    "AgentSettings",
    "Exhausted",
    "HistoryRow",
    "Outcome",
    "Proposal",
    "ProposalContext",
    "TurnLogger",
    "make_agent",
]


def make_agent(name: str, *, settings: AgentSettings, log_turn: TurnLogger, seed: int = 0) -> Agent:
    """The agent called name. UserError for an unknown name or a replay without a file; AgentFatal for claude
    without ANTHROPIC_API_KEY."""
    if name == "claude":
        return ClaudeAgent(settings, log_turn)
    if name == "sweep":
        return SweepAgent(seed)
    if name == "replay":
        if not settings.replay_file:
            raise UserError('the replay agent needs replay_file = "edits.jsonl" in the [agent] table')
        return ReplayAgent(Path(settings.replay_file))
    raise UserError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
