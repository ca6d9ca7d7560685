"""The agents that propose train.py candidates, and the factory that makes one from the [agent] settings.

- claude: the Anthropic Messages API with tool use (needs ANTHROPIC_API_KEY).
- openai: the OpenAI SDK, Chat Completions with function tools (any compatible server: vLLM, Ollama, llama.cpp,
  LM Studio) or OpenAI's Responses API (needs OPENAI_API_KEY, or any key a local server accepts).
- claude-code, codex: the coding-agent CLIs, one fresh run per proposal in a hardened agent container whose only
  way out is the runner's gateway (runner/agents/cli_agent.py).
- sweep: an offline baseline that mutates one numeric hyperparameter at a time.
- replay: recorded edits from a JSONL file, for tests and reproductions.

The registry names each agent's class as "module:Class" and make_agent imports only the module of the agent
it makes, so importing this package (as the config and the CLI do) never loads an agent's SDK (anthropic).
"""

import importlib
from collections.abc import Callable
from pathlib import Path

from autoresearch.runner.agents.base import (
    AGENT_APIS,
    Agent,
    AgentError,
    AgentFatal,
    AgentHost,
    AgentSettings,
    HistoryRow,
    Outcome,
    Proposal,
    ProposalContext,
    TurnLogger,
)
from autoresearch.runner.errors import UserError

REGISTRY: dict[str, str] = {
    "claude": "autoresearch.runner.agents.claude:ClaudeAgent",
    "openai": "autoresearch.runner.agents.openai_agent:OpenAIAgent",
    "claude-code": "autoresearch.runner.agents.cli_agent:ClaudeCodeAgent",
    "codex": "autoresearch.runner.agents.cli_agent:CodexAgent",
    "sweep": "autoresearch.runner.agents.sweep:SweepAgent",
    "replay": "autoresearch.runner.agents.replay:ReplayAgent",
}
AGENTS = tuple(REGISTRY)  # the valid [agent] name values, in the order the config's errors list them

# Names this package re-exports from an agent's module, imported when first asked for (PEP 562).
_LAZY = {"Exhausted": "autoresearch.runner.agents.replay:Exhausted"}

__all__ = [
    "AGENTS",
    "AGENT_APIS",
    "REGISTRY",
    "Agent",
    "AgentError",
    "AgentFatal",
    "AgentHost",
    "AgentSettings",
    "Exhausted",
    "HistoryRow",
    "Outcome",
    "Proposal",
    "ProposalContext",
    "TurnLogger",
    "agent_class",
    "make_agent",
]


def _replay_file(settings: AgentSettings) -> Path:
    if not settings.replay_file:
        raise UserError('the replay agent needs replay_file = "edits.jsonl" in the [agent] table')
    return Path(settings.replay_file)


# The arguments each agent's class is constructed with, from what make_agent is given (their signatures differ).
_ARGUMENTS: dict[str, Callable[[AgentSettings, TurnLogger, int, AgentHost | None], tuple]] = {
    "claude": lambda settings, log_turn, seed, host: (settings, log_turn, host),
    "openai": lambda settings, log_turn, seed, host: (settings, log_turn, host),
    "claude-code": lambda settings, log_turn, seed, host: (settings, log_turn, host),
    "codex": lambda settings, log_turn, seed, host: (settings, log_turn, host),
    "sweep": lambda settings, log_turn, seed, host: (seed,),
    "replay": lambda settings, log_turn, seed, host: (_replay_file(settings),),
}


def _load(target: str) -> object:
    """The object a "module:name" string names, importing its module now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def agent_class(name: str) -> type:
    """The class of the agent called name (importing its module); UserError for an unknown name."""
    if name not in REGISTRY:
        raise UserError(f"unknown agent {name!r}: choose one of {', '.join(AGENTS)}")
    return _load(REGISTRY[name])  # type: ignore[return-value]


def make_agent(name: str, *, settings: AgentSettings, log_turn: TurnLogger, seed: int = 0,
               host: AgentHost | None = None) -> Agent:
    """The agent called name. UserError for an unknown name or a replay without a file; AgentFatal for an LLM
    agent without its key. host is what a coding-agent CLI needs of the runner (None: a temporary folder)."""
    cls = agent_class(name)
    return cls(*_ARGUMENTS[name](settings, log_turn, seed, host))


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return _load(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
