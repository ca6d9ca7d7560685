"""Whether each agent can work here, and the fix when not: `autoresearch agents` and the doctor's agent check.

An LLM agent needs its SDK and its key (or, for openai, a base_url: local servers need none); a coding-agent CLI
needs a key (or claude-code's subscription token), a reachable Docker engine, its agent image and a place for
its gateway's socket. Nothing here calls a model or starts a container.
"""

import importlib.util
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from autoresearch.runner.agents import REGISTRY
from autoresearch.runner.agents.base import KEY_ENVS, AgentSettings
from autoresearch.runner.sandbox.engine import engine_reachable


@dataclass(frozen=True)
class Readiness:
    """One agent's readiness: each check as (what, ok, detail), and the fix for the first that failed."""

    name: str
    kind: str  # "api" (in-process LLM), "cli" (coding-agent CLI in a container) or "offline"
    ready: bool
    checks: list[tuple[str, bool, str]]
    fix: str | None

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in self.checks]}


KINDS = {"claude": "api", "openai": "api", "claude-code": "cli", "codex": "cli", "sweep": "offline",
         "replay": "offline"}
SDKS = {"claude": "anthropic", "openai": "openai"}
OAUTH_ENV = "CLAUDE_CODE_OAUTH_TOKEN"


def readiness(name: str, settings: AgentSettings, engine: bool | None = None) -> Readiness:
    """name's readiness under settings ([agent] key_env and base_url apply to the configured agent only).
    engine: whether Docker answers (None: ask it now, only for a coding-agent CLI)."""
    own = settings if settings.name == name else AgentSettings(name=name)
    checks: list[tuple[str, bool, str]] = []
    fixes: list[str] = []

    def check(what: str, ok: bool, detail: str, fix: str) -> None:
        checks.append((what, ok, detail))
        if not ok:
            fixes.append(fix)

    if name in SDKS:
        found = importlib.util.find_spec(SDKS[name]) is not None
        check("sdk", found, f"the {SDKS[name]} package {'is' if found else 'is not'} installed",
              f"pip install {SDKS[name]}")
    if name in KEY_ENVS:
        _key(name, own, check)
    if name == "replay":
        given = own.replay_file and Path(own.replay_file).is_file()
        check("file", bool(given), f"replay_file {own.replay_file or 'is not set'}",
              'set [agent] replay_file = "edits.jsonl", a JSONL file of edits')
    if KINDS[name] == "cli":
        engine = engine_reachable() if engine is None else engine
        check("docker", engine, "the Docker engine " + ("answers" if engine else "does not answer"),
              "start dockerd (or set DOCKER_HOST)")
        if engine:
            _image(name, check)
        _gateway(check)
    return Readiness(name, KINDS[name], all(ok for _, ok, _ in checks), checks, fixes[0] if fixes else None)


def all_readiness(settings: AgentSettings) -> list[Readiness]:
    engine = engine_reachable()
    return [readiness(name, settings, engine) for name in REGISTRY]


def _key(name: str, settings: AgentSettings, check) -> None:
    env = settings.key_env or KEY_ENVS[name]
    if os.environ.get(env):
        check("key", True, f"{env} is set", "")
    elif name == "claude-code" and os.environ.get(OAUTH_ENV):
        check("key", True, f"{OAUTH_ENV} is set (subscription: the token passes through to Claude Code)", "")
    elif name == "openai" and settings.base_url:
        check("key", True, f"{env} is not set; {settings.base_url} gets a placeholder (local servers need none)", "")
    else:
        also = f", or {OAUTH_ENV} (from `claude setup-token`)" if name == "claude-code" else ""
        also = ", or set [agent] base_url to a local server" if name == "openai" else also
        check("key", False, f"{env} is not set", f"export {env}=...{also}, or set [agent] name = \"sweep\" to run "
              "offline")


def _image(name: str, check) -> None:
    from autoresearch.runner.agents.cli_images import image_tag, require_agent_image
    from autoresearch.runner.errors import UserError

    try:
        require_agent_image(name)
    except UserError:
        check("image", False, f"{image_tag(name)} is missing", f"autoresearch image --agent {name}")
        return
    check("image", True, f"{image_tag(name)} is built", "")


def _gateway(check) -> None:
    """The gateway's socket can be made where the agents make it (a Unix socket in the temporary folder)."""
    folder = Path(tempfile.mkdtemp(prefix="ar-gateway-check-"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.bind(str(folder / "gateway.sock"))
        check("gateway", True, f"Unix sockets work in {tempfile.gettempdir()}", "")
    except OSError as exc:
        check("gateway", False, f"no Unix socket in {tempfile.gettempdir()} ({exc.strerror})",
              "set TMPDIR to a local, writable folder")
    finally:
        (folder / "gateway.sock").unlink(missing_ok=True)
        folder.rmdir()


def render(rows: list[Readiness]) -> str:
    """The table `autoresearch agents` prints."""
    lines = [f"{'agent':<12} {'kind':<8} {'ready':<6} detail"]
    for row in rows:
        detail = "; ".join(d for _, ok, d in row.checks if not ok) or "; ".join(d for _, _, d in row.checks)
        lines.append(f"{row.name:<12} {row.kind:<8} {'yes' if row.ready else 'no':<6} {detail or 'nothing needed'}")
        if row.fix:
            lines.append(f"{'':<28} fix: {row.fix}")
    return "\n".join(lines)
