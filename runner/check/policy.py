"""Policies: the limits an experiment runs under and the rules that judge it, read from TOML.

A policy file has `[limits]` and one `[rules.<group>.<name>]` table per rule (rule id
`<group>.<name>`, group `static` or `dynamic`; `[rules."static.size"]` works too), each with
`severity`, `action`, `enabled` and the rule's own parameters. Two policies are bundled with the
package (`default`, `strict`); any other file may start from one of them with `extends = "default"`
and list only what it changes.

Everything is checked on load: an unknown key or rule, a missing one, a value of the wrong type (a
bool is never an integer) or an unknown severity or action is a UserError naming the file and the key,
so a typo never silently weakens a rule. A resolved policy is always complete, and `policy_to_toml`
writes it back out (no `extends`) as the snapshot a run records.
"""

import difflib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn

import tomli_w

from autoresearch.runner.check.findings import ACTIONS, SEVERITIES, Finding
from autoresearch.runner.errors import UserError

PACKAGE = "autoresearch.policies"
TOP_LEVEL_KEYS = ("name", "description", "extends", "limits", "rules")
RULE_KEYS = ("severity", "action", "enabled")
GROUPS = ("static", "dynamic")
SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmgt]?$", re.IGNORECASE)  # docker's memory/tmpfs sizes


@dataclass(frozen=True)
class Limits:
    """Resource limits and thresholds of one experiment (the units are in the names)."""

    time_budget_s: float
    deadline_allowance_cpu_s: float
    deadline_allowance_cuda_s: float
    train_py_max_bytes: int
    memory: str
    pids_limit: int
    cpus: float
    tmpfs_size: str
    handover_max_mb: int
    log_max_bytes: int
    gpu_memory_cap_mb: int
    metric_tolerance_bpb: float


@dataclass(frozen=True)
class RuleConfig:
    """One rule as a policy configures it."""

    rule_id: str
    severity: str
    action: str
    enabled: bool
    params: dict[str, Any]

    def finding(self, message: str, evidence: dict) -> Finding:
        """A finding of this rule, with its configured severity and action."""
        return Finding(self.rule_id, self.severity, self.action, message, evidence)


@dataclass(frozen=True)
class Policy:
    """A complete, validated policy."""

    name: str
    path: Path | None
    limits: Limits
    rules: dict[str, RuleConfig]
    description: str = ""


# The parameters of each rule, by kind: "number" (int or float), "int", "bool", "strings" (a list of
# strings), "regexes" (a list of regular expressions).
RULE_PARAMS: dict[str, dict[str, str]] = {
    "static.binary": {},
    "static.empty": {},
    "static.size": {},
    "static.syntax": {},
    "static.forbidden_import": {"modules": "strings"},
    "static.suspicious_import": {"modules": "strings"},
    "static.dynamic_code": {"names": "strings"},
    "static.reflection": {"allowed_dunders": "strings", "identifiers": "strings", "names": "strings",
                          "attribute_functions": "strings"},
    "static.prepare_tamper": {"protected": "strings", "calls": "strings", "env": "strings"},
    "static.prepare_shadow": {},
    "static.data_paths": {"substrings": "strings", "patterns": "regexes", "splits": "strings",
                          "calls": "strings"},
    "static.data_write": {"paths": "strings", "names": "strings", "writers": "strings", "methods": "strings"},
    "static.env_secrets": {"patterns": "strings"},
    "static.env_read": {"allow": "strings"},
    "static.process_control": {"names": "strings"},
    "static.fake_metric": {"keys": "strings"},
    "dynamic.metric_mismatch": {},
    "dynamic.metric_implausible": {"ratio": "number"},
    "dynamic.overhead": {"factor": "number", "slack_s": "number", "first_run_floor_cpu_s": "number",
                         "first_run_floor_gpu_s": "number", "first_run_fraction": "number",
                         "first_run_cap_s": "number"},
    "dynamic.training_span": {"factor": "number", "slack_s": "number"},
    "dynamic.compute": {"rate_factor": "number", "slack_s": "number"},
    "dynamic.reported_time": {"factor": "number", "slack_s": "number"},
    "dynamic.vram_cap": {"kill_reasons": "strings"},
    "dynamic.tamper": {},
    "dynamic.log_markers": {"markers": "strings"},
    "dynamic.log_flood": {},
}
LIMIT_KINDS = {f.name: {int: "int", float: "number", str: "size"}[f.type] for f in fields(Limits)}
EXPECTED = {
    "number": "a number >= 0",
    "int": "an integer >= 0",
    "bool": "true or false",
    "str": "a string",
    "size": 'a string like "16g"',
    "strings": "a list of strings",
    "regexes": "a list of regular expressions",
}


def bundled_policies() -> list[str]:
    """The names of the policies shipped with the package."""
    return sorted(p.name.removesuffix(".toml") for p in files(PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_policy(path: Path | None = None, name: str = "default") -> Policy:
    """The policy in the file at path, or else the bundled policy called name; validated and complete."""
    if path is None:
        label, source, doc = _read_bundled(name)
    else:
        label, source, name = str(path), Path(path), Path(path).stem
        doc = _parse(_read_text(path, label), label)
    doc = _resolve_extends(doc, label)
    _check_keys(label, None, doc, TOP_LEVEL_KEYS, required=("limits", "rules"))
    return Policy(
        name=_value(label, "name", doc.get("name", name), "str"),
        path=source,
        limits=_limits(label, doc["limits"]),
        rules=_rules(label, doc["rules"]),
        description=_value(label, "description", doc.get("description", ""), "str"),
    )


def policy_to_toml(policy: Policy) -> str:
    """The resolved policy as a TOML document that load_policy reads back to the same policy."""
    rules: dict[str, dict] = {}
    for rule in policy.rules.values():
        group, _, name = rule.rule_id.partition(".")
        table = {"severity": rule.severity, "action": rule.action, "enabled": rule.enabled, **rule.params}
        rules.setdefault(group, {})[name] = table
    doc = {"name": policy.name, "description": policy.description, "limits": asdict(policy.limits),
           "rules": rules}
    return f"# Policy {policy.name!r}, resolved from {policy.path}.\n" + tomli_w.dumps(doc)


def _read_bundled(name: str) -> tuple[str, Path, dict]:
    """(label, path, document) of a bundled policy."""
    if name not in bundled_policies():
        raise UserError(_no_such_policy(name))
    resource = files(PACKAGE) / f"{name}.toml"
    label = f"policies/{name}.toml"
    return label, Path(str(resource)), _parse(resource.read_text(encoding="utf-8"), label)


def _no_such_policy(name: str) -> str:
    return f"no bundled policy named {name!r} (bundled: {', '.join(bundled_policies())})"


def _read_text(path: Path, label: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label}: cannot read the policy file ({exc})") from None


def _parse(text: str, label: str) -> dict:
    try:
        return _nest_rules(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{label}: not valid TOML: {exc}") from None


def _nest_rules(doc: dict) -> dict:
    """doc with `[rules."static.size"]` tables moved to `[rules.static.size]`: both spellings work."""
    rules = doc.get("rules")
    if not isinstance(rules, dict):
        return doc
    nested: dict = {}
    for key, value in rules.items():
        group, dot, name = key.partition(".")
        nested = _merge(nested, {group: {name: value}} if dot else {key: value})
    return {**doc, "rules": nested}


def _resolve_extends(doc: dict, label: str) -> dict:
    """doc laid over the bundled policy it extends (its limits and rules only), or doc itself."""
    if "extends" not in doc:
        return doc
    base_name = _value(label, "extends", doc["extends"], "str")
    if base_name not in bundled_policies():
        _fail(label, "extends", _no_such_policy(base_name))
    base_label, _, base = _read_bundled(base_name)
    base = _resolve_extends(base, base_label)
    inherited = {key: base[key] for key in ("limits", "rules") if key in base}
    return _merge(inherited, {key: value for key, value in doc.items() if key != "extends"})


def _merge(base: dict, over: dict) -> dict:
    """over laid on base: tables merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _limits(label: str, table: Any) -> Limits:
    table = _table(label, "[limits]", table)
    _check_keys(label, "[limits]", table, tuple(LIMIT_KINDS), required=tuple(LIMIT_KINDS))
    values = {key: _value(label, f"[limits] {key}", table[key], kind) for key, kind in LIMIT_KINDS.items()}
    return Limits(**values)


def _rules(label: str, table: Any) -> dict[str, RuleConfig]:
    table = _table(label, "[rules]", table)
    _check_keys(label, "[rules]", table, GROUPS, required=())
    flat = {f"{group}.{name}": entry for group in GROUPS
            for name, entry in _table(label, f"[rules.{group}]", table.get(group, {})).items()}
    for rule_id in flat:
        if rule_id not in RULE_PARAMS:
            _fail(label, f"[rules.{rule_id}]", f"unknown rule{_suggest(rule_id, RULE_PARAMS)}")
    for rule_id in RULE_PARAMS:
        if rule_id not in flat:
            _fail(label, f"[rules.{rule_id}]", "missing (every rule must be configured, enabled or not)")
    return {rule_id: _rule(label, rule_id, flat[rule_id]) for rule_id in RULE_PARAMS}


def _rule(label: str, rule_id: str, entry: Any) -> RuleConfig:
    where = f"[rules.{rule_id}]"
    entry = _table(label, where, entry)
    kinds = RULE_PARAMS[rule_id]
    _check_keys(label, where, entry, RULE_KEYS + tuple(kinds), required=RULE_KEYS + tuple(kinds))
    severity = _choice(label, f"{where} severity", entry["severity"], SEVERITIES)
    allowed = ACTIONS if rule_id.startswith("static.") else ("discard", "flag")  # too late to block
    action = _choice(label, f"{where} action", entry["action"], allowed)
    enabled = _value(label, f"{where} enabled", entry["enabled"], "bool")
    params = {key: _value(label, f"{where} {key}", entry[key], kind) for key, kind in kinds.items()}
    return RuleConfig(rule_id, severity, action, enabled, params)


def _table(label: str, where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        _fail(label, where, f"expected a table, got {toml_spelling(value)}")
    return value


def _check_keys(label: str, where: str | None, table: dict, known: tuple[str, ...],
                required: tuple[str, ...]) -> None:
    """Fail on the first unknown key of table, then on the first missing one."""
    prefix = f"{where} " if where else ""
    for key in table:
        if key not in known:
            _fail(label, f"{prefix}{key}", f"unknown key{_suggest(key, known)}")
    for key in required:
        if key not in table:
            _fail(label, f"{prefix}{key}", "missing")


def _choice(label: str, where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        _fail(label, where, f"expected one of {', '.join(choices)}, got {toml_spelling(value)}")
    return value


def _value(label: str, where: str, value: Any, kind: str) -> Any:
    """value checked against kind (numbers become floats where kind is "number")."""
    if not _fits(value, kind):
        _fail(label, where, f"expected {EXPECTED[kind]}, got {toml_spelling(value)}")
    return float(value) if kind == "number" else value


def _fits(value: Any, kind: str) -> bool:
    if kind in ("number", "int"):
        types = (int, float) if kind == "number" else int
        return isinstance(value, types) and not isinstance(value, bool) and value >= 0
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "size":
        return isinstance(value, str) and bool(SIZE.match(value))
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        return False
    return kind == "strings" or all(_compiles(item) for item in value)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def toml_spelling(value: Any) -> str:
    """value as TOML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value, default=str)


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _fail(label: str, where: str, problem: str) -> NoReturn:
    raise UserError(f"{label}: {where}: {problem}")
