"""The coding-agent CLIs, confined: claude-code (Claude Code) and codex (OpenAI's Codex CLI).

One proposal is one fresh CLI run in a fresh agent container (agent_container.py) of the CLI's own image
(cli_images.py). The runner stages the task files, the research memory (CONTEXT.md) and the agent's three files
(train.py, notes.md, description.txt); the container has no network, and the CLI reaches its model only through
the runner's gateway on a Unix socket (gateway.py), which holds the real key (the container gets a placeholder),
logs every call with its tokens and cost, and refuses calls past the run's dollar cap. What comes back is judged
by workdir.py: a changed, parseable train.py, or a violation with its evidence.

The CLI's own permission flags (allowed tools, turn limits) are set too, as a second layer, never as the
boundary. Subscription use: without an API key, the user's own CLAUDE_CODE_OAUTH_TOKEN passes through to Claude
Code unchanged (the gateway then only meters and caps); Codex with a ChatGPT login cannot use a custom base URL,
so codex needs OPENAI_API_KEY.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from autoresearch.runner.agents.agent_container import (
    GATEWAY_SOCKET,
    AgentLimits,
    ContainerRun,
    run_agent_container,
)
from autoresearch.runner.agents.base import (
    BILLING_PHRASES,
    KEY_ENVS,
    AgentError,
    AgentFatal,
    AgentHost,
    AgentSettings,
    AgentViolation,
    Outcome,
    Proposal,
    ProposalContext,
    TurnLogger,
)
from autoresearch.runner.agents.cli_images import image_tag, require_agent_image
from autoresearch.runner.agents.gateway import PLACEHOLDER_KEY, Gateway, Upstream
from autoresearch.runner.agents.memory import render_memory
from autoresearch.runner.agents.pricing import prices
from autoresearch.runner.agents.workdir import (
    AGENT_FILES,
    DESCRIPTION,
    NOTES,
    TRAIN_PY,
    NoChange,
    judge_workdir,
)
from autoresearch.runner.errors import UserError

CONTEXT_MD = "CONTEXT.md"
RELAY_PORT = 8377  # codex's base URL inside the container: the relay to the gateway's socket
OUTPUT_TAIL_CHARS = 600

TASK = """\
You are an ML researcher running one experiment at a time to lower val_bpb (validation bits per byte) of the
small GPT that train.py trains. The rules are in program.md; prepare.py (data, tokenizer, evaluation) is
read-only. CONTEXT.md holds the research memory: the history of experiments, recent changes and their diffs,
the last experiment's summary, what is training now, and your notes.

Make exactly one experiment, in this folder:
1. edit train.py in place (the only code you may change; you cannot run it here: there is no data and no GPU);
2. write one line into description.txt: the idea and what you expect of it;
3. optionally rewrite notes.md: your own notes for your next proposals (at most a few thousand characters).
Do not create, delete or rename files. Then stop."""


FATAL_STATUSES = {401: "the upstream refused the key", 403: "the key lacks permission",
                  402: "the upstream refused to bill the call"}


def _fatal(failures: list[tuple[int, str]], base_url: str, model: str) -> str | None:
    """Why no retry can help, from the upstream's failed replies during a proposal; None when one may."""
    for status, error in failures:
        if status in FATAL_STATUSES:
            return f"{FATAL_STATUSES[status]} ({status}): {error[:200]}"
        if status == 404:
            return f"not found (404); check [agent] model {model or '(the CLI default)'!r} and base_url {base_url}"
        if status in (400, 429) and any(phrase in error.lower() for phrase in BILLING_PHRASES):
            return f"the upstream refused to bill the call ({status}): {error[:200]}"
    return None


class CliAgent:
    """What claude-code and codex share: the staging, the gateway, the container and the judging of /work."""

    name = ""
    KEY_ENV = ""
    PROTOCOL = ""  # the gateway's upstream protocol
    DEFAULT_BASE_URL = ""

    def __init__(self, settings: AgentSettings, log_turn: TurnLogger, host: AgentHost | None = None) -> None:
        self.model = settings.model or ""
        self.warnings: list[str] = []
        self._settings = settings
        self._host = host or AgentHost(Path(tempfile.mkdtemp(prefix="autoresearch-agent-")))
        self._log_turn = log_turn
        self.upstream = self._upstream()
        self.image = image_tag(self.name)
        self.limits = AgentLimits()
        self._gateway: Gateway | None = None
        self.last_run: ContainerRun | None = None  # for the bench's and the tests' figures

    def _upstream(self) -> Upstream:
        key = os.environ.get(self._settings.key_env or self.KEY_ENV)
        if not key and not self._subscription():
            raise AgentFatal(f"{self._settings.key_env or self.KEY_ENV} is not set: export it, or set agent = "
                             '"sweep" to run offline')
        return Upstream(self._settings.base_url or self.DEFAULT_BASE_URL, self.PROTOCOL, key or None)

    def _subscription(self) -> bool:
        return False

    def preflight(self) -> None:
        """The agent image must be there (a missing one is fatal, with the command that builds it)."""
        try:
            require_agent_image(self.name, self.image)
        except UserError as exc:
            raise AgentFatal(str(exc)) from None

    def observe(self, outcome: Outcome) -> None:
        """Nothing to do: the outcome reaches the CLI through the next proposal's CONTEXT.md."""

    def close(self) -> None:
        """Stop the gateway and remove its folder."""
        if self._gateway is not None:
            self._gateway.close()
            shutil.rmtree(self._gateway.socket_path.parent, ignore_errors=True)
            self._gateway = None

    def propose(self, context: ProposalContext) -> Proposal:
        """One fresh CLI run in a fresh agent container; its /work judged (workdir.py)."""
        gateway = self._ensure_gateway()
        gateway.take_turns()
        gateway.take_failures()
        staging = Path(tempfile.mkdtemp(prefix="stage-", dir=self._host.scratch_dir))
        try:
            task_files, given = self._stage(staging, context)
            run = run_agent_container(self.image, self.argv(), self.env(), staging, gateway.socket_path.parent,
                                      self._host.labels, self._settings.cli_timeout_s, self.limits)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            turn_ids = gateway.take_turns()
        self.last_run = run
        if gateway.capped:
            raise AgentFatal("the run's dollar cap is reached: the gateway refused the agent's next call")
        fatal = _fatal(gateway.take_failures(), self.upstream.base_url, self.model)
        if fatal:
            raise AgentFatal(fatal)
        if gateway.closed:  # the CLI lost its model mid-run: whatever it left is cut short, never half-applied
            raise AgentError("the gateway stopped during the proposal; its result is discarded")
        try:
            returned = judge_workdir(run.work_tar, task_files, given)
        except AgentViolation as exc:
            exc.turn_ids = turn_ids
            raise
        except NoChange:
            if run.exit_code in (126, 127):  # the shell's "cannot execute" and "not found"
                raise AgentFatal(f"the {self.image} image cannot run its CLI ({self._tail(run.output)}): rebuild it "
                                 f"with `autoresearch image --agent {self.name} --force`") from None
            if run.exit_code != 0:
                raise AgentError(f"{self.name} exited {run.exit_code}: {self._tail(run.output)}") from None
            raise
        if run.exit_code != 0:  # cut short (its turn limit, an error): what it left may be half an idea
            raise AgentError(f"{self.name} exited {run.exit_code}, so its train.py is discarded: "
                             f"{self._tail(run.output)}")
        description = returned.description or self._fallback_description(run.output)
        notes = returned.notes if returned.notes != context.notes else None
        return Proposal(returned.train_py, description, turn_ids, notes=notes)

    def _ensure_gateway(self) -> Gateway:
        """The gateway, started at the first proposal, and again after one that died."""
        if self._gateway is not None and self._gateway.closed:
            self.close()
        if self._gateway is None:
            folder = Path(tempfile.mkdtemp(prefix="ar-gateway-"))  # short: a socket's path has at most 107 bytes
            folder.chmod(0o755)
            self._gateway = Gateway(folder / Path(GATEWAY_SOCKET).name, self.upstream, log_turn=self._log_turn,
                                    prices=prices(self._settings), dollars_left=self._host.dollars_left,
                                    timeout_s=self._settings.timeout_s).start()
        return self._gateway

    def _stage(self, staging: Path, context: ProposalContext) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Write /in: task/ (read-only in /work) and agent/ (the agent's files). Both as they were written."""
        task_files = {"program.md": context.program_md.encode(), "prepare.py": context.prepare_py.encode(),
                      CONTEXT_MD: render_memory(context, self._settings.memory_tokens).encode()}
        given = {TRAIN_PY: context.train_py.encode(), NOTES: context.notes.encode(), DESCRIPTION: b""}
        for folder, contents in (("task", task_files), ("agent", given)):
            (staging / folder).mkdir()
            for name, data in contents.items():
                (staging / folder / name).write_bytes(data)
                (staging / folder / name).chmod(0o644)
            (staging / folder).chmod(0o755)
        staging.chmod(0o755)
        assert set(given) == set(AGENT_FILES)
        return task_files, given

    def _fallback_description(self, output: str) -> str:
        return f"{self.name}: no description given"

    def _tail(self, output: str) -> str:
        return " ".join(output[-OUTPUT_TAIL_CHARS:].split()) or "no output"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError


class ClaudeCodeAgent(CliAgent):
    """Claude Code (`claude -p`), reaching the gateway through ANTHROPIC_UNIX_SOCKET."""

    name = "claude-code"
    KEY_ENV = KEY_ENVS["claude-code"]
    PROTOCOL = "anthropic"
    DEFAULT_BASE_URL = "https://api.anthropic.com"
    OAUTH_ENV = "CLAUDE_CODE_OAUTH_TOKEN"
    # The second layer: file tools only, and only edits without asking; the container is the boundary.
    permission_args: tuple[str, ...] = (
        "--permission-mode", "acceptEdits", "--allowedTools", "Read,Edit,Write,Glob,Grep",
        "--disallowedTools", "Bash,WebFetch,WebSearch,Task")

    def _subscription(self) -> bool:
        return bool(os.environ.get(self.OAUTH_ENV))

    def argv(self) -> list[str]:
        model = ["--model", self.model] if self.model else []
        return ["claude", "-p", TASK, "--output-format", "json", "--max-turns", str(self._settings.max_turns),
                *model, *self.permission_args]

    def env(self) -> dict[str, str]:
        env = {"ANTHROPIC_UNIX_SOCKET": GATEWAY_SOCKET, "ANTHROPIC_BASE_URL": "http://localhost",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_RETRIES": "1",
               "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1"}
        if self.upstream.key is None:  # subscription: the user's own token, passed through unchanged
            env[self.OAUTH_ENV] = os.environ[self.OAUTH_ENV]
        else:
            env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
        return env

    def _fallback_description(self, output: str) -> str:
        try:
            result = json.loads(output.strip().splitlines()[-1]).get("result", "")
        except (ValueError, IndexError, AttributeError):
            return super()._fallback_description(output)
        line = " ".join(str(result).split())[:200]
        return line or super()._fallback_description(output)


class CodexAgent(CliAgent):
    """Codex (`codex exec`), reaching the gateway through a relay on the container's loopback (it speaks TCP)."""

    name = "codex"
    KEY_ENV = KEY_ENVS["codex"]
    PROTOCOL = "openai"
    DEFAULT_BASE_URL = "https://api.openai.com"
    # Codex's own sandbox (bubblewrap) needs user namespaces, which the agent container refuses, so it cannot nest
    # there: its commands run unsandboxed inside the container, with no approvals asked; the container is the
    # boundary, and the second layer is the turn limit and what the container holds (no key, no data, no network).
    permission_args: tuple[str, ...] = ("--sandbox", "danger-full-access")

    def argv(self) -> list[str]:
        provider = {"name": "autoresearch", "base_url": f"http://127.0.0.1:{RELAY_PORT}/v1",
                    "env_key": "OPENAI_API_KEY", "wire_api": "responses"}
        config = ["-c", "model_provider=autoresearch", "-c",
                  "model_providers.autoresearch={" + ", ".join(f'{k}="{v}"' for k, v in provider.items()) + "}",
                  "-c", "analytics.enabled=false"]  # else codex waits 5 s at exit to send analytics it cannot send
        model = ["--model", self.model] if self.model else []
        codex = ["codex", "exec", "--json", "--skip-git-repo-check", *self.permission_args, *config, *model, TASK]
        relay = (f'mkdir -p "$CODEX_HOME"; python3 /opt/autoresearch/relay.py {RELAY_PORT} {GATEWAY_SOCKET} & '
                 'sleep 0.2; exec "$@"')
        return ["sh", "-c", relay, "codex-relay", *codex]

    def env(self) -> dict[str, str]:
        return {"OPENAI_API_KEY": PLACEHOLDER_KEY, "CODEX_HOME": "/home/agent/.codex", "NO_COLOR": "1"}
