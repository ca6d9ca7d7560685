"""A workspace's settings, `autoresearch.toml`: read with tomllib, written with tomli-w.

Every setting has a default, so an empty file is a valid config. The sections:

    [task]   source = "auto"           # the data: web (FineWeb-Edu), offline (bundled), auto (web when it answers)
    [image]  flavor = "auto"           # the experiment image: auto | cpu | cuda
    [policy] file = "default"          # "default", "strict" or a policy file relative to the workspace
    [budget] seconds = 300             # training seconds; absent: the policy's time budget
    [gpus]   ids = ["GPU-...", 1]      # GPU UUIDs or indexes, or "all"; empty: the first GPU, or the CPU
    [executor] name = "local", slots, prefetch, wave   # see ExecutorConfig
    [cluster] address, bind, port, token_file, stall_s   # the Ray cluster of [executor] name = "ray": see ClusterConfig
    [sandbox] provider = "docker"      # docker, or process (no isolation: for machines without Docker)
    [agent]  name = "sweep", model, max_tokens, max_turns, timeout_s, max_retries, base_url, api, key_env,
             replay_file, price_input_per_mtok, price_output_per_mtok, cli_timeout_s, memory_tokens
    [keep]   threshold, noise_multiplier, noise_seeds, confirm_multiplier   # see KeepRule
    [caps]   max_experiments, max_hours, max_usd, target_val_bpb, patience   # see Caps
    [notify] urls, events, failures_in_a_row, spend_fraction   # apprise notifications: see NotifyConfig

TOML has no null: a setting that may be unset (`max_usd`, `base_url`, ...) is unset with `false`.
Everything is checked on load; a syntax error, an unknown section or key, a value of the wrong type
or out of range is a UserError naming the file and the line, so a typo never silently falls back to
a default. `[notify] urls` hold secrets (tokens, passwords): a run records the file with them redacted
(`recordable_config`), and whether apprise understands them is checked where they are used
(runner/notify.py: apprise loads only there).
"""

import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import tomli_w

from autoresearch.runner.agents import AGENT_APIS, AGENTS, AgentSettings
from autoresearch.runner.check.policy import toml_spelling
from autoresearch.runner.errors import UserError
from autoresearch.runner.phases.sources import CHOICES as SOURCE_CHOICES
from autoresearch.runner.sandbox import PROVIDERS
from autoresearch.runner.sandbox.flavors import FLAVORS
from autoresearch.runner.sandbox.gpus import ALL as ALL_GPUS


@dataclass(frozen=True)
class KeepRule:
    """When a candidate is kept: it must beat the best val_bpb by more than the threshold."""

    threshold: float = 0.0005  # minimum val_bpb improvement to keep
    noise_multiplier: float = 2.0  # with a noise measurement: threshold = max(threshold, multiplier * std)
    noise_seeds: int = 3  # the run measures its noise: the baseline on this many seeds in all (1: it does not)
    confirm_multiplier: float = 4.0  # a keep that gains less than this * std is run on a second seed first (0: never)


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """How many experiments are in flight at once, and where (runner/executors)."""

    name: str = "local"  # local: this host's GPUs (or CPU cores); ray: the GPUs of a Ray cluster
    slots: int | None = None  # None: one per GPU of [gpus] ids (or 1 on CPU); on CPU, N slots of their own cores
    prefetch: int = 1  # proposals the agent keeps ready beyond the free slots (0: it proposes when a slot frees)
    wave: int = 0  # 0: asynchronous; k: waves of k proposals from the same best, the wave's best kept


@dataclass(frozen=True)
class ClusterConfig:
    """The Ray cluster of the ray executor and of `autoresearch node` (runner/commands/node.py)."""

    address: str | None = None  # the head's "host:port"; None: the head this workspace's `node head` started
    bind: str = "127.0.0.1"  # the interface the head listens on (a private network's address, never a public one)
    port: int = 6379  # the head's port (the GCS)
    token_file: str | None = None  # the cluster's token; None: .autoresearch/cluster/token, made by `node head`
    stall_s: float = 20.0  # a node that does not answer for this long loses its jobs (they run again elsewhere)


@dataclass(frozen=True)
class Caps:
    """When a run stops on its own (None: no cap)."""

    max_experiments: int | None = None
    max_hours: float | None = None
    max_usd: float | None = 20.0
    target_val_bpb: float | None = None  # the run ends once a kept experiment's val_bpb is at or below this
    patience: int | None = None  # the run ends after this many candidates in a row ended without a keep


NOTIFY_EVENTS = ("best", "end", "stalled", "failures", "spend")
REDACTED = "(redacted)"


@dataclass(frozen=True)
class NotifyConfig:
    """Who hears of a run, through apprise (runner/notify.py), and of what.

    Events: best (a keep that beats the best), end (the run finished, stopped or crashed, with why), stalled
    (nothing finished in twice one experiment's expected time), failures (failures_in_a_row candidates in a row
    crashed or broke a rule), spend (the agent's spending passed spend_fraction of [caps] max_usd, once).
    """

    urls: tuple[str, ...] = ()  # apprise URLs (ntfy://..., json://host/path, ...): secrets, never recorded in clear
    events: tuple[str, ...] = NOTIFY_EVENTS
    failures_in_a_row: int = 3
    spend_fraction: float = 0.8


@dataclass(frozen=True)
class Config:
    """The settings of a workspace."""

    source: str = "auto"
    flavor: str = "auto"
    policy: str = "default"
    time_budget_s: float | None = None
    gpus: list[str] = field(default_factory=list)
    sandbox: str = "docker"
    agent: AgentSettings = field(default_factory=AgentSettings)
    keep: KeepRule = field(default_factory=KeepRule)
    caps: Caps = field(default_factory=Caps)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)


# The one-key sections, as (section, key) -> Config field; [agent], [keep] and [caps] hold their dataclass's fields.
SINGLE_KEYS = {
    ("task", "source"): "source",
    ("image", "flavor"): "flavor",
    ("policy", "file"): "policy",
    ("budget", "seconds"): "time_budget_s",
    ("gpus", "ids"): "gpus",
    ("sandbox", "provider"): "sandbox",
}
NESTED = ("agent", "keep", "caps", "executor", "cluster", "notify")
SECTIONS = (*(section for section, _ in SINGLE_KEYS), *NESTED)
CHOICES = {("task", "source"): SOURCE_CHOICES, ("image", "flavor"): ("auto", *FLAVORS), ("agent", "name"): AGENTS,
           ("agent", "api"): AGENT_APIS, ("sandbox", "provider"): tuple(PROVIDERS), ("executor", "name"): EXECUTORS,
           ("notify", "events"): NOTIFY_EVENTS}
POSITIVE = {("budget", "seconds"), ("agent", "max_tokens"), ("agent", "max_turns"), ("agent", "timeout_s"),
            ("agent", "cli_timeout_s"), ("agent", "memory_tokens"),
            ("keep", "noise_seeds"), ("executor", "slots"), ("cluster", "port"), ("cluster", "stall_s"),
            ("caps", "target_val_bpb"), ("caps", "patience"), ("notify", "failures_in_a_row"),
            ("notify", "spend_fraction")}
AT_MOST_ONE = {("notify", "spend_fraction")}
HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
EXPECTED = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false"}
TYPE_KINDS = {str: "str", int: "int", float: "number", bool: "bool", list[str]: "ids",  # "ids": [gpus] ids
              tuple[str, ...]: "strs"}


def load_config(path: Path) -> Config:
    """The validated config in the file at path."""
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label}: cannot read the config ({exc})") from None
    return parse_config(text, label)


def parse_config(text: str, label: str = "autoresearch.toml") -> Config:
    """The validated config in text; errors name label and the line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(_syntax_error(label, str(exc))) from None
    return _Reader(label, text).config(doc)


def config_to_dict(config: Config) -> dict:
    """config as the TOML document's tables (an unset setting is left out when that is its default)."""
    doc: dict[str, dict] = {}
    for (section, key), name in SINGLE_KEYS.items():
        _put(doc.setdefault(section, {}), key, getattr(config, name), _default(Config, name))
    for section in NESTED:
        settings = getattr(config, section)
        table = doc.setdefault(section, {})
        for item in fields(settings):
            _put(table, item.name, getattr(settings, item.name), _default(type(settings), item.name))
    return {section: table for section, table in doc.items() if table}


def dump_config(config: Config) -> str:
    """config as the text of an autoresearch.toml that load_config reads back to the same config."""
    return tomli_w.dumps(config_to_dict(config))


def default_config_toml() -> str:
    """The autoresearch.toml that `autoresearch init` writes: every default, spelled out."""
    header = ("# autoresearch settings: every key is optional (a missing one takes its default) and `false`\n"
              "# unsets one that may be unset (max_usd, base_url, ...). More: [budget] seconds = 300 sets the\n"
              "# training time (default: the policy's); [gpus] ids = [\"GPU-...\"], [0, 1] or \"all\" picks the\n"
              "# GPUs (one experiment in flight on each).\n")
    return header + dump_config(Config())


def recordable_config(text: str, label: str = "autoresearch.toml") -> str:
    """The config file's text as a run records it: the text as written, or, when it has [notify] urls (which hold
    secrets), its document again with each of them replaced by REDACTED."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(_syntax_error(label, str(exc))) from None
    notify = doc.get("notify")
    if not (isinstance(notify, dict) and notify.get("urls")):
        return text
    notify["urls"] = [REDACTED for _ in notify["urls"]]
    return tomli_w.dumps(doc)


def _put(table: dict, key: str, value: Any, default: Any) -> None:
    """Set table[key] to value, spelling None as false unless None is the default (then leave it out)."""
    if value == [ALL_GPUS]:
        table[key] = ALL_GPUS
    elif value is not None:
        table[key] = value
    elif default is not None:
        table[key] = False


def _default(cls: type, name: str) -> Any:
    item = next(item for item in fields(cls) if item.name == name)
    return item.default_factory() if item.default is MISSING else item.default


def _syntax_error(label: str, message: str) -> str:
    """tomllib's "msg (at line N, column M)" as "label: line N: msg (column M)"."""
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found is None:
        return f"{label}: not valid TOML: {message}"
    return f"{label}: line {found[1]}: not valid TOML: {message[:found.start()]} (column {found[2]})"


class _Reader:
    """Checks a parsed document against the schema, naming lines of text in its errors."""

    def __init__(self, label: str, text: str):
        self.label = label
        self.lines = text.splitlines()

    def config(self, doc: dict) -> Config:
        known = ", ".join(SECTIONS)
        for section, table in doc.items():
            if section not in SECTIONS and isinstance(table, dict):
                self.fail(section, None, f"unknown section [{section}] (known: {known})")
            if section not in SECTIONS:
                self.fail(section, None, f"unknown key {section!r} outside any section (sections: {known})")
            if not isinstance(table, dict):
                self.fail(section, None, f"[{section}] must be a table, got {toml_spelling(table)}")
        values = {}
        for (section, key), name in SINGLE_KEYS.items():
            table = self.table(doc, section, (key,))
            if key in table:
                values[name] = self.value(section, key, table[key], _kind(Config, name))
        for section in NESTED:
            cls = typing.get_type_hints(Config)[section]
            table = self.table(doc, section, tuple(item.name for item in fields(cls)))
            values[section] = cls(**{key: self.value(section, key, value, _kind(cls, key))
                                     for key, value in table.items()})
        return Config(**values)

    def table(self, doc: dict, section: str, known: tuple[str, ...]) -> dict:
        """The section's table (empty when absent), after checking its keys are known."""
        table = doc.get(section, {})
        for key in table:
            if key not in known:
                self.fail(section, key, f"unknown key {key!r} in [{section}] (known: {', '.join(known)})")
        return table

    def value(self, section: str, key: str, value: Any, kind: tuple[str, bool]) -> Any:
        """value checked against kind, (type, may be unset); numbers of a float setting become floats."""
        name, optional = kind
        where = f"[{section}] {key}"
        if optional and value is False:
            return None
        if name == "ids":
            if value == ALL_GPUS:
                return [ALL_GPUS]
            if not (isinstance(value, list) and all(_fits(item, "str") or _fits(item, "int") for item in value)):
                self.fail(section, key, f"{where} must be \"all\" or a list of GPU UUIDs or indexes, "
                                        f"got {toml_spelling(value)}")
            return [str(item) for item in value]
        if name == "strs":
            return self.strings(section, key, value)
        if not _fits(value, name):
            unset = " or false" if optional else ""
            self.fail(section, key, f"{where} must be {EXPECTED[name]}{unset}, got {toml_spelling(value)}")
        choices = CHOICES.get((section, key))
        if choices and value not in choices:
            self.fail(section, key, f"{where} must be one of {', '.join(choices)}, got {toml_spelling(value)}")
        if name in ("int", "number") and (value <= 0 if (section, key) in POSITIVE else value < 0):
            bound = "greater than 0" if (section, key) in POSITIVE else "0 or more"
            self.fail(section, key, f"{where} must be {bound}, got {toml_spelling(value)}")
        if (section, key) in AT_MOST_ONE and value > 1:
            self.fail(section, key, f"{where} must be at most 1, got {toml_spelling(value)}")
        return float(value) if name == "number" else value

    def strings(self, section: str, key: str, value: Any) -> tuple[str, ...]:
        """A list of strings, each one of the setting's choices where it has them (only such an item is quoted back
        in an error: [notify] urls hold secrets)."""
        where = f"[{section}] {key}"
        if not (isinstance(value, list) and all(isinstance(item, str) and item for item in value)):
            self.fail(section, key, f"{where} must be a list of non-empty strings")
        choices = CHOICES.get((section, key))
        for index, item in enumerate(value):
            if choices and item not in choices:
                self.fail(section, key, f"{where}[{index}] must be one of {', '.join(choices)}, "
                                        f"got {toml_spelling(item)}")
        return tuple(value)

    def fail(self, section: str, key: str | None, problem: str) -> NoReturn:
        line = self.line_of(section, key)
        raise UserError(f"{self.label}: {f'line {line}: ' if line else ''}{problem}")

    def line_of(self, section: str, key: str | None) -> int | None:
        """The line number of the section's header, or of its key; else of the first line naming them."""
        current = None
        name = re.escape(key if key is not None else section)
        assignment = re.compile(rf"^\s*[\"']?{name}[\"']?\s*[=.]")
        table = section if key is not None else None  # a key is in its section, a section may be a top-level key
        for number, line in enumerate(self.lines, start=1):
            header = HEADER.match(line)
            if header:
                current = header[1].strip("\"'")
                if key is None and current == section:
                    return number
            elif current == table and assignment.match(line):
                return number
        return next((n for n, line in enumerate(self.lines, start=1) if re.search(rf"\b{name}\b", line)), None)



def _kind(cls: type, name: str) -> tuple[str, bool]:
    """(kind, may be unset) of the field name of cls, from its type hint."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = [TYPE_KINDS[arg] for arg in args if arg is not type(None)]
    return kinds[0], len(kinds) < len(args)


def _fits(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool}[kind])
