"""Static rules: what a candidate train.py may not contain, read from its source before it runs.

The checks work on the AST. Names are resolved through imports and simple aliases (`import os as o`,
`from os import system`, `run = os.system`, `getattr(os, "system")`), so rules match dotted names such as
`os.system` however the source spells them. prepare.py's own imports are reachable through it
(`prepare.os.system`), so a name reached as `prepare.<x>` is matched as `<x>` too, and so is a standard
module reached through any other one (`torch.os.system` is `os.system`, `torch.builtins` is `builtins`).

Reflection is closed generically rather than trick by trick: a dunder name (`__x__`) off a short allow
list is blocked wherever it is spelled (attribute, name, import, keyword, match pattern, a word of a
string literal), and so are frame and traceback attributes, getattr-like calls whose attribute names are
not literals (or getattr passed on as a value), class patterns matched by position (`__match_args__`
names attributes), star imports (they hide names) and the functions that hand out namespaces or frames
(`vars`, `globals`, `sys.modules`, `inspect.getmembers`). A string annotation is checked as the code it is.

Static analysis of Python is never complete: the sandbox is the boundary that holds. These rules stop
the obvious attempts before they cost an experiment and leave evidence (line, column, the source line)
of what was tried.
"""

import ast
import builtins
import codecs
import io
import re
import sys
import tokenize
from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase

from autoresearch.runner.check.findings import Finding
from autoresearch.runner.check.policy import Policy

TASK_MODULE = "prepare"
ROOT_NAMES = frozenset(dir(builtins)) | {"__file__", "__builtins__"}  # names that need no import
STDLIB = frozenset(sys.stdlib_module_names)
WORD = re.compile(r"\w+")  # the identifiers a string literal may spell
REFLECTION = "static.reflection"
ATTRIBUTE_ARGS = {  # where a getattr-like function takes attribute names: positions and keywords
    "functools.wraps": ((1, 2), ("assigned", "updated")),
    "functools.update_wrapper": ((2, 3), ("assigned", "updated")),
}
GETATTR_ARGS = ((1,), ())  # getattr, setattr, delattr and any function not above: the second argument
ENVIRON = frozenset({"os.environ", "os.environb"})
ENV_READERS = frozenset({"os.getenv", "os.getenvb"})
ENV_WRITERS = frozenset({"os.putenv", "os.unsetenv"})
MUTATORS = frozenset({"__setitem__", "__delitem__", "__setattr__", "__delattr__", "update", "pop", "popitem",
                      "clear", "setdefault", "append", "extend", "insert", "remove", "sort", "reverse", "add",
                      "discard"})
OPEN_LIKE = {"open": (1, "r"), "io.open": (1, "r"), "codecs.open": (1, "r"), "numpy.memmap": (2, "r+")}
NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
PLACEHOLDER = re.compile(r"%[-+ #0-9.]*[a-zA-Z%]|\{[^{}]*\}")  # %-format and str.format fields
MAX_EXCERPT = 200


def check_source(source: str | bytes, policy: Policy, filename: str = "train.py") -> list[Finding]:
    """The findings of the policy's static rules on source (the text of a candidate train.py)."""
    raw = source if isinstance(source, bytes) else source.encode("utf-8", "surrogatepass")
    text = raw.decode("utf-8-sig", "replace")
    early = _check_file(raw, text, policy)
    if early:
        return early
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as exc:
        return _report(policy, "static.syntax", f"not valid Python: {exc.msg} (line {exc.lineno})",
                       {"line": exc.lineno, "col": exc.offset, "excerpt": _cut((exc.text or "").strip())})
    except (ValueError, RecursionError, MemoryError) as exc:
        return _report(policy, "static.syntax", f"cannot be parsed ({type(exc).__name__})", {})
    try:
        checker = _Checker(tree, text, policy)
        checker.run()
    except RecursionError:
        return _report(policy, "static.syntax", "too deeply nested to check", {})
    return _dedupe(checker.findings)


def _check_file(raw: bytes, text: str, policy: Policy) -> list[Finding]:
    """Findings about the file as a whole (binary, size, empty); when any, nothing else is checked."""
    findings = []
    encoding = _declared_encoding(raw)
    if b"\x00" in raw or not _is_utf8(raw):
        findings += _report(policy, "static.binary", "not a UTF-8 text file (NUL bytes or invalid UTF-8)",
                            {"offset": _first_bad_byte(raw)})
    elif encoding not in ("utf-8", "utf-8-sig"):  # Python would read it otherwise than these rules do
        findings += _report(policy, "static.binary", f"declares the source encoding {encoding}, not UTF-8",
                            {"encoding": encoding})
    limit = policy.limits.train_py_max_bytes
    if len(raw) > limit:
        findings += _report(policy, "static.size", f"{len(raw)} bytes, more than the limit of {limit}",
                            {"value": len(raw), "limit": limit})
    if not text.strip():
        findings += _report(policy, "static.empty", "the file is empty", {"value": len(raw)})
    return findings


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared_encoding(raw: bytes) -> str:
    """The source encoding Python would use for raw (a coding cookie or a BOM), normalised."""
    try:
        return codecs.lookup(tokenize.detect_encoding(io.BytesIO(raw).readline)[0]).name
    except (SyntaxError, LookupError) as exc:
        return f"unknown ({exc})"


def _first_bad_byte(raw: bytes) -> int:
    """Offset of the first NUL or invalid UTF-8 byte."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    else:
        bad = len(raw)
    nul = raw.find(b"\x00")
    return min(bad, nul) if nul >= 0 else bad


def _report(policy: Policy, rule_id: str, message: str, evidence: dict) -> list[Finding]:
    rule = policy.rules[rule_id]
    return [rule.finding(message, evidence)] if rule.enabled else []


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per rule and source position (a dotted chain matches at each of its prefixes)."""
    seen, unique = set(), []
    for finding in findings:
        key = (finding.rule_id, finding.evidence.get("line"), finding.evidence.get("col"))
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def _cut(text: str) -> str:
    return text if len(text) <= MAX_EXCERPT else text[:MAX_EXCERPT] + "..."


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _matches(names: Iterable[str], patterns: Iterable[str]) -> str | None:
    """The first of names that matches one of the shell-style patterns."""
    patterns = list(patterns)
    return next((name for name in names if any(fnmatchcase(name, p) for p in patterns)), None)


def _module_match(names: Iterable[str], modules: Iterable[str]) -> str | None:
    """The first module of modules that one of names is, or is inside of."""
    modules = list(modules)
    for name in names:
        for module in modules:
            if name == module or name.startswith(module + "."):
                return module
    return None


def _under(name: str | None, prefixes: Iterable[str]) -> bool:
    """Whether the dotted name is one of prefixes or reaches inside one (attribute or item)."""
    return name is not None and any(name == p or name.startswith((p + ".", p + "[")) for p in prefixes)


class _Names:
    """What names stand for: imports and simple aliases resolved to dotted names."""

    def __init__(self, tree: ast.Module):
        self.imports: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.imports.update(_import_bindings(node))
        self.aliases = dict(self.imports)
        assigns = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)]
        for _ in range(3):  # aliases of aliases, in any order of the source
            for node in assigns:
                self._alias(node)

    def _alias(self, node: ast.Assign) -> None:
        target = self.qualname(node.value)
        if target is None:
            return
        for name in node.targets:
            if isinstance(name, ast.Name) and name.id not in self.imports:
                self.aliases[name.id] = target

    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name node stands for ("os.system", "prepare.SOURCES[...]"), or None if unknown."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return node.id if node.id in ROOT_NAMES else None  # a local `def exec` is still exec here
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):
            base = self.qualname(node.value)
            return f"{base}[...]" if base else None
        if isinstance(node, ast.Call):
            return self._call_qualname(node)
        return None

    def _call_qualname(self, node: ast.Call) -> str | None:
        """getattr(x, "name") is x.name, vars(x) is x.__dict__, globals() and vars() the module's globals."""
        func = self.qualname(node.func)
        if func == "getattr" and len(node.args) >= 2 and _const_str(node.args[1]) is not None:
            base = self.qualname(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        if func in ("globals", "vars") and not node.args:
            return "globals()"
        if func == "vars" and len(node.args) == 1:
            base = self.qualname(node.args[0])
            return f"{base}.__dict__" if base else None
        return None

    def candidates(self, node: ast.AST) -> list[str]:
        """The names a rule matches node against: its dotted name, and the same without `prepare.`."""
        name = self.qualname(node)
        return _variants(name) if name else []


def _variants(name: str) -> list[str]:
    """name, without `prepare.`, and from each standard module it reaches through another one on (`random._os`)."""
    parts = name.split(".")
    variants = [name, ".".join(parts[1:])] if parts[0] == TASK_MODULE and len(parts) > 1 else [name]
    for i in range(1, len(parts)):
        module = parts[i] if parts[i] in STDLIB else parts[i].lstrip("_")
        if module in STDLIB:
            variants.append(".".join([module, *parts[i + 1:]]))
    return list(dict.fromkeys(variants))


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _import_bindings(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """Local name -> dotted name for each name an import statement binds."""
    if isinstance(node, ast.Import):
        return {a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                for a in node.names}
    module = "." * node.level + (node.module or "")
    return {a.asname or a.name: f"{module}.{a.name}" for a in node.names if a.name != "*"}


def _imported_names(node: ast.Import | ast.ImportFrom) -> Iterator[tuple[ast.alias, list[str]]]:
    """(alias, the dotted names it imports) for each name of an import statement."""
    for alias in node.names:
        if isinstance(node, ast.Import):
            yield alias, _variants(alias.name)
        elif node.level == 0 and node.module:
            names = [node.module] if alias.name == "*" else [node.module, f"{node.module}.{alias.name}"]
            yield alias, [variant for name in names for variant in _variants(name)]


class _Checker(ast.NodeVisitor):
    """Walks one module once and applies every enabled rule."""

    def __init__(self, tree: ast.Module, text: str, policy: Policy):
        self.tree, self.lines, self.policy = tree, re.split(r"\r\n?|\n", text), policy  # Python's line breaks
        self.names = _Names(tree)
        self.parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        self.findings: list[Finding] = []

    def run(self) -> None:
        self.visit(self.tree)
        self._check_string_annotations()
        self._check_shadowing()

    # -- reporting ------------------------------------------------------------------------------------

    def param(self, rule_id: str, key: str):
        return self.policy.rules[rule_id].params[key]

    def report(self, rule_id: str, node: ast.AST, message: str, **evidence) -> None:
        rule = self.policy.rules[rule_id]
        if not rule.enabled:
            return
        line = getattr(node, "lineno", None)
        excerpt = self.lines[line - 1].strip() if line and line <= len(self.lines) else ""
        where = {"line": line, "col": getattr(node, "col_offset", None), "excerpt": _cut(excerpt)}
        self.findings.append(rule.finding(message, {**where, **evidence}))

    # -- imports --------------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        self._check_imports(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._check_imports(node)
        if any(a.name == "*" for a in node.names):
            module = "." * node.level + (node.module or "")
            self.report(REFLECTION, node, f"star import from {module}: the names it binds are hidden from the rules",
                        name=module)
            if node.module == TASK_MODULE:
                self.report("static.prepare_shadow", node, "star import from prepare: any name may shadow it")

    def _check_imports(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            for name in [*alias.name.split("."), alias.asname or ""]:
                self._check_identifier(node, name, f"imports {name}")
        for alias, names in _imported_names(node):
            self._check_modules(alias, names, "imports")
            self._check_names(alias, names)

    def _check_modules(self, node: ast.AST, names: list[str], verb: str) -> None:
        """Report an import (or attribute chain) of a forbidden, else of a suspicious, module."""
        rules = (("static.forbidden_import", "forbidden"), ("static.suspicious_import", "suspicious"))
        for rule_id, label in rules:
            module = _module_match(names, self.param(rule_id, "modules"))
            if module:
                spelled = f" (as {names[0]})" if names[0] != module else ""
                self.report(rule_id, node, f"{verb} {label} module {module}{spelled}", name=names[0])
                return

    # -- names ----------------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        self._check_identifier(node, node.id, f"uses {node.id}")
        if isinstance(node.ctx, ast.Load):
            self._check_reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check_identifier(node, node.attr, f"uses .{node.attr}")
        if isinstance(node.ctx, ast.Load):
            self._check_reference(node)
            self._check_chain(node)
        else:
            self._check_store(node, node.value, "assigns to an attribute of")
        self.generic_visit(node)

    def _check_reference(self, node: ast.Name | ast.Attribute | ast.Call) -> None:
        """Rules on what a name refers to, called or not (`run = os.system` is caught too)."""
        names = self.names.candidates(node)
        if not names:
            return
        self._check_names(node, names)
        self._check_attribute_function(node, names)
        if ENVIRON & set(names):
            self._check_environ(node)

    def _check_names(self, node: ast.AST, names: list[str]) -> None:
        checks = (("static.process_control", "names", "controls processes with"),
                  ("static.dynamic_code", "names", "runs dynamic code with"),
                  ("static.reflection", "names", "inspects the interpreter with"),
                  ("static.data_paths", "calls", "uses"))
        for rule_id, key, verb in checks:
            name = _matches(names, self.param(rule_id, key))
            if name:
                self.report(rule_id, node, f"{verb} {name}", name=name)

    def _check_chain(self, node: ast.Attribute) -> None:
        """A forbidden module reached through an allowed one, e.g. torch.multiprocessing or prepare.urllib."""
        root = node
        while isinstance(root, ast.Attribute | ast.Subscript):
            root = root.value
        if not self._is_listed_module(self.names.candidates(root)):  # else its import was reported
            self._check_modules(node, self.names.candidates(node), "reaches")

    def _is_listed_module(self, names: list[str]) -> bool:
        rules = ("static.forbidden_import", "static.suspicious_import")
        return any(_module_match(names, self.param(rule_id, "modules")) for rule_id in rules)

    # -- reflection -----------------------------------------------------------------------------------

    def _check_identifier(self, node: ast.AST, name: str, message: str) -> None:
        """A dunder off the allow list, or a listed identifier (frames, tracebacks, generators), however spelled."""
        if name in self.param(REFLECTION, "identifiers") or (
                _is_dunder(name) and name not in self.param(REFLECTION, "allowed_dunders")):
            self.report(REFLECTION, node, message, name=name)

    def _check_attribute_function(self, node: ast.AST, names: list[str]) -> None:
        """getattr-like functions: only called directly, with literal attribute names (checked as strings)."""
        function = _matches(names, self.param(REFLECTION, "attribute_functions"))
        if function is None:
            return
        call = self.parents.get(node)
        if not (isinstance(call, ast.Call) and call.func is node):
            self.report(REFLECTION, node, f"passes {function} on as a value", name=function)
            return
        unknown = next((arg for arg in _attribute_args(call, function) if not _literal_names(arg)), None)
        if unknown is not None:
            self.report(REFLECTION, call, f"calls {function} with attribute names that are not literals",
                        name=function, argument=_cut(ast.unparse(unknown)))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if not isinstance(self.parents.get(node), ast.ClassDef):  # methods: __init__, __call__, __repr__
            self._check_identifier(node, node.name, f"defines {node.name}")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._check_identifier(node, node.name or "", f"binds {node.name}")
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        self._check_identifier(node, node.arg or "", f"passes {node.arg}=")
        self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for name in node.kwd_attrs:
            self._check_identifier(node, name, f"matches on .{name}")
        if node.patterns:
            spelled = _cut(ast.unparse(node.cls))
            self.report(REFLECTION, node, f"matches {spelled}(...) by position, reading the attributes its "
                        "__match_args__ names (match by keyword)", name=spelled)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs | ast.MatchStar) -> None:
        self._check_identifier(node, node.name or "", f"binds {node.name}")
        self.generic_visit(node)

    visit_MatchStar = visit_MatchAs

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self._check_identifier(node, node.rest or "", f"binds {node.rest}")
        self.generic_visit(node)

    def _check_string_annotations(self) -> None:
        """A string annotation is code to whoever evaluates it (typing, functools.singledispatch): check it as code."""
        pending = [annotation for node in ast.walk(self.tree) for annotation in _annotations(node)]
        while pending:
            for literal in [node for node in ast.walk(pending.pop()) if _const_str(node) is not None]:
                parsed = _parse_annotation(literal)
                if parsed is not None and not _is_dotted_name(parsed):  # a name only looks a name up
                    self.parents.update({child: parent for parent in ast.walk(parsed)
                                         for child in ast.iter_child_nodes(parent)})
                    self.visit(parsed)
                    pending.append(parsed)  # a string inside a string annotation is evaluated in turn

    def _check_words(self, node: ast.AST, text: str) -> None:
        """A string literal is a name once getattr, a dict or str.format reads it: its words are checked."""
        for word in dict.fromkeys(WORD.findall(text)):
            self._check_identifier(node, word, f"names {word} in a string")

    # -- stores into protected objects ------------------------------------------------------------------

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_store(node, node.value, "assigns to an item of")
        self.generic_visit(node)

    def _check_store(self, node: ast.AST, target: ast.AST, verb: str) -> None:
        name = self.names.qualname(target)
        if _under(name, self.param("static.prepare_tamper", "protected")):
            self.report("static.prepare_tamper", node, f"{verb} {name}", name=name)

    def _check_mutation(self, node: ast.Call, func_names: list[str]) -> None:
        """Mutating methods on protected objects, and setattr-like calls whose first argument is one."""
        rule = "static.prepare_tamper"
        protected = self.param(rule, "protected")
        if isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            name = self.names.qualname(node.func.value)
            if _under(name, protected):
                self.report(rule, node, f"changes {name} with .{node.func.attr}()", name=name)
        call = _matches(func_names, self.param(rule, "calls"))
        if call and node.args:
            name = self.names.qualname(node.args[0])
            if _under(name, protected):
                self.report(rule, node, f"changes {name} with {call}()", name=name)

    # -- calls ----------------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        if self.names.qualname(node):  # getattr(os, "system") is os.system
            self._check_reference(node)
        names = self.names.candidates(node.func)
        self._check_mutation(node, names)
        self._check_write(node, names)
        self._check_env_call(node, names)
        self._check_split_args(node, names)
        if names == ["print"] and len(node.args) > 1:
            self._check_fake_metric(node, " ".join(_render_part(arg) for arg in node.args))
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            template = _const_str(node.func.value)
            if template is not None and all(map(_is_number, [*node.args, *(k.value for k in node.keywords)])):
                self._check_fake_metric(node, PLACEHOLDER.sub("0", template))
        self.generic_visit(node)

    def _check_write(self, node: ast.Call, names: list[str]) -> None:
        """Writing, moving or deleting prepare.py or the data: open-like calls, functions or methods."""
        rule = "static.data_write"
        opener = next((name for name in names if name in OPEN_LIKE), None)
        if opener:
            if node.args and self._protected_path(node.args[0]) and _writes(node, *OPEN_LIKE[opener]):
                self.report(rule, node, f"opens {self._path_text(node.args[0])} for writing", name=opener)
            return
        writer = _matches(names, self.param(rule, "writers"))
        args = [*node.args, *(k.value for k in node.keywords)]
        if writer and any(self._protected_path(arg) for arg in args):
            self.report(rule, node, f"calls {writer} on a protected path", name=writer)
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr in self.param(rule, "methods")):
            return
        if self._protected_path(func.value) and (func.attr != "open" or _writes(node, 0, "r")):
            self.report(rule, node, f"calls .{func.attr}() on {self._path_text(func.value)}", name=func.attr)

    def _protected_path(self, expr: ast.AST) -> bool:
        """Whether expr mentions prepare.py or the data, by a literal or by a name."""
        rule = "static.data_write"
        paths, names = self.param(rule, "paths"), self.param(rule, "names")
        for node in ast.walk(expr):
            text = _const_str(node)
            if text is not None and _matches([text], paths):
                return True
            if isinstance(node, ast.Name | ast.Attribute) and _matches(self.names.candidates(node), names):
                return True
        return False

    def _path_text(self, expr: ast.AST) -> str:
        return _cut(ast.unparse(expr))

    def _check_split_args(self, node: ast.Call, names: list[str]) -> None:
        """A literal split name ("val") handed to a prepare function."""
        if not any(name.startswith(TASK_MODULE + ".") for name in names):
            return
        splits = self.param("static.data_paths", "splits")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for part in ast.walk(arg):
                if _const_str(part) in splits:
                    self.report("static.data_paths", part, f"asks {names[0]} for the {part.value!r} split",
                                name=names[0], literal=part.value)

    # -- environment ----------------------------------------------------------------------------------

    def _check_env_call(self, node: ast.Call, names: list[str]) -> None:
        key = node.args[0] if node.args else None
        if ENV_READERS & set(names):
            self._env_read(node, key)
        if ENV_WRITERS & set(names):
            self._env_write(node, key)

    def _check_environ(self, node: ast.AST) -> None:
        """How os.environ is used, by its parent: one key read or written, or the whole of it."""
        parent = self.parents.get(node)
        if isinstance(parent, ast.Subscript) and parent.value is node:
            if isinstance(parent.ctx, ast.Load):
                self._env_read(parent, parent.slice)
            else:
                self._env_write(parent, parent.slice)
        elif isinstance(parent, ast.Attribute) and parent.value is node:
            self._env_method(parent)
        elif isinstance(parent, ast.Compare) and node in parent.comparators:
            self._env_read(parent, parent.left)
        elif not (isinstance(parent, ast.Assign) and all(isinstance(t, ast.Name) for t in parent.targets)):
            self.report("static.env_read", node, "reads the whole environment", name="os.environ")

    def _env_method(self, attribute: ast.Attribute) -> None:
        call = self.parents.get(attribute)
        args = call.args if isinstance(call, ast.Call) and call.func is attribute else []
        key = args[0] if args else None
        method = attribute.attr
        if method in ("get", "pop", "setdefault"):
            self._env_read(attribute, key)
        if method in ("pop", "setdefault", "__setitem__", "__delitem__"):
            self._env_write(attribute, key)
        elif method == "update":
            for key in _update_keys(call):
                self._env_write(attribute, key)
        elif method in ("clear", "popitem"):
            self._env_write(attribute, None)
        elif method != "get":
            self.report("static.env_read", attribute, f"reads the whole environment (.{method})",
                        name="os.environ")

    def _env_read(self, node: ast.AST, key: ast.AST | None) -> None:
        name = _const_str(key)
        if name is None:
            self.report("static.env_read", node, "reads an environment variable named at run time")
        elif _matches([name], self.param("static.env_read", "allow")):
            return
        elif _matches([name.upper()], (p.upper() for p in self.param("static.env_secrets", "patterns"))):
            self.report("static.env_secrets", node, f"reads {name}, which looks like a secret", name=name)
        else:
            self.report("static.env_read", node, f"reads {name}, not on the allow list", name=name)

    def _env_write(self, node: ast.AST, key: ast.AST | None) -> None:
        name = _const_str(key)
        if name is None:
            self.report("static.prepare_tamper", node, "changes an environment variable named at run time")
        elif _matches([name], self.param("static.prepare_tamper", "env")):
            self.report("static.prepare_tamper", node, f"changes {name}, which prepare.py reads", name=name)

    # -- literals -------------------------------------------------------------------------------------

    def visit_Expr(self, node: ast.Expr) -> None:
        if _const_str(node.value) is None:  # a bare string is a docstring or a comment: it does nothing
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and not isinstance(self.parents.get(node), ast.JoinedStr):
            self._check_literal(node, node.value)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._check_literal(node, _render_part(node))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        template = _const_str(node.left)
        if isinstance(node.op, ast.Mod) and template is not None:
            values = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            if all(map(_is_number, values)):
                self._check_fake_metric(node, PLACEHOLDER.sub("0", template))
        self.generic_visit(node)

    def _check_literal(self, node: ast.AST, text: str) -> None:
        self._check_fake_metric(node, text)
        self._check_words(node, text)
        rule = "static.data_paths"
        hit = next((s for s in self.param(rule, "substrings") if s in text), None)
        hit = hit or next((p for p in self.param(rule, "patterns") if re.search(p, text)), None)
        if hit:
            self.report(rule, node, f"string {_cut(text)!r} points at held-out data or the host", matched=hit)

    def _check_fake_metric(self, node: ast.AST, text: str) -> None:
        keys = "|".join(re.escape(key) for key in self.param("static.fake_metric", "keys"))
        match = re.search(rf"^\s*({keys})\s*:\s*{NUMBER}\s*$", text, re.MULTILINE)
        if match:
            line = match.group(0).strip()
            self.report("static.fake_metric", node, f"prints a literal {match.group(1)}: {line!r}", key=match.group(1))

    # -- shadowing ------------------------------------------------------------------------------------

    def _check_shadowing(self) -> None:
        """Module-level rebinding of `prepare` or of a name imported from it."""
        watched = {name: target for name, target in self.names.imports.items()
                   if target == TASK_MODULE or target.startswith(TASK_MODULE + ".")}
        if not watched:
            return
        finder = _ModuleBindings()
        finder.visit(self.tree)
        for name, node in finder.found:
            if name in watched and not _rebinds_same(node, name, watched[name]):
                self.report("static.prepare_shadow", node, f"rebinds {name}, imported from prepare",
                            name=name)


def _attribute_args(call: ast.Call, function: str) -> list[ast.expr]:
    """The arguments of a getattr-like call that name attributes; a starred one may be any of them."""
    positions, keywords = ATTRIBUTE_ARGS.get(function, GETATTR_ARGS)
    args = [arg for i, arg in enumerate(call.args) if i in positions or isinstance(arg, ast.Starred)]
    return args + [k.value for k in call.keywords if k.arg in keywords or k.arg is None]


def _literal_names(node: ast.expr) -> bool:
    """Whether node is a string literal, or a tuple or list of them."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List) else [node]
    return all(_const_str(item) is not None for item in items)


def _is_dotted_name(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _annotations(node: ast.AST) -> list[ast.expr]:
    """The annotations node carries: of an argument, an annotated assignment or a function's return."""
    if isinstance(node, ast.arg | ast.AnnAssign):
        return [node.annotation] if node.annotation else []
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.returns] if node.returns else []
    return []


def _parse_annotation(literal: ast.Constant) -> ast.expr | None:
    """The expression a string annotation spells (as typing compiles it), placed at the literal; None if none."""
    text = literal.value.strip()
    for source in (text, f"({text},)"):  # typing compiles `*Ts` as `(*Ts,)[0]`
        try:
            parsed = ast.parse(source, mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(parsed):
            ast.copy_location(node, literal)
        return parsed
    return None


def _rebinds_same(node: ast.AST, name: str, target: str) -> bool:
    """Whether node is an import that binds name to the same thing again (the original import)."""
    return isinstance(node, ast.Import | ast.ImportFrom) and _import_bindings(node).get(name) == target


def _update_keys(call: ast.AST | None) -> list[ast.AST | None]:
    """The keys an os.environ.update(...) call sets; None for a key that cannot be known."""
    if not isinstance(call, ast.Call):
        return [None]
    keys: list[ast.AST | None] = []
    for arg in call.args:
        keys += arg.keys if isinstance(arg, ast.Dict) else [None]
    keys += [ast.Constant(k.arg) if k.arg else None for k in call.keywords]
    return keys


def _writes(call: ast.Call, index: int, default: str) -> bool:
    """Whether an open-like call's mode (positional index or mode=) can write; an unknown mode can."""
    mode_node = call.args[index] if len(call.args) > index else None
    mode_node = next((k.value for k in call.keywords if k.arg == "mode"), mode_node)
    mode = default if mode_node is None else _const_str(mode_node)
    return mode is None or any(c in mode for c in "wax+")


def _render_part(node: ast.AST) -> str:
    """A string expression as it prints, with numeric literals as they are and anything else as {}."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if _is_number(node):
        return "0"
    if isinstance(node, ast.JoinedStr):
        return "".join(_render_part(v.value if isinstance(v, ast.FormattedValue) else v) for v in node.values)
    return "{}"


class _ModuleBindings(ast.NodeVisitor):
    """Every binding of a module-level name: at module level, or declared `global` in a function."""

    def __init__(self):
        self.found: list[tuple[str, ast.AST]] = []
        self.scopes: list[set[str] | None] = [None]  # None: module scope; else the names declared global

    def bind(self, name: str, node: ast.AST) -> None:
        scope = self.scopes[-1]
        if scope is None or name in scope:
            self.found.append((name, node))

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.bind(node.id, node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for name in _import_bindings(node):
            self.bind(name, node)

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bind(node.name, node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.bind(node.name, node)
        for child in node.decorator_list:
            self.visit(child)
        declared = {name for inner in ast.walk(node) if isinstance(inner, ast.Global) for name in inner.names}
        self._scoped(node.body, declared)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped([node.body], set())

    def _comprehension(self, node: ast.AST) -> None:
        self._scoped(list(ast.iter_child_nodes(node)), set())

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def _scoped(self, nodes: list[ast.AST], declared: set[str]) -> None:
        self.scopes.append(declared)
        for child in nodes:
            self.visit(child)
        self.scopes.pop()
