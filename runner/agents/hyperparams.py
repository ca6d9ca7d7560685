"""Module-level numeric constants of a train.py, found with `ast`, and rewritten in place by position.

A constant is an assignment of an UPPER_CASE name to a positive int or float literal (`LR = 0.02`), or to a
conditional of literals (`DEPTH = 8 if H100 else 4`, where either branch may be a literal). Rewriting swaps
only the characters of the literals, so every other byte of the file, comments included, stays the same.
"""

import ast
import re
from dataclasses import dataclass

Number = int | float
_LINE = re.compile(r".*?(?:\r\n|\r|\n)|.+", re.S)  # the line breaks that Python's tokenizer counts


@dataclass(frozen=True)
class Site:
    """Where a numeric literal is: 1-based line, UTF-8 byte columns as `ast` gives them, its value and text."""

    lineno: int
    col: int
    end_col: int
    value: Number
    text: str


@dataclass(frozen=True)
class Constant:
    """A tunable constant: its literal sites, and its value when the condition holds / does not.

    A plain constant has one site, valid under both; a conditional has a site per literal branch, and None
    for a branch that is not a literal.
    """

    name: str
    sites: tuple[Site, ...]
    when_true: Site | None
    when_false: Site | None


def find_constants(source: str) -> dict[str, Constant]:
    """The numeric constants of source by name, in file order; a name assigned twice keeps its last value."""
    lines = [line.encode() for line in _LINE.findall(source)]
    constants: dict[str, Constant] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not name.isupper():
            continue
        if isinstance(node.value, ast.IfExp):
            when_true, when_false = _site(node.value.body, lines), _site(node.value.orelse, lines)
        else:
            when_true = when_false = _site(node.value, lines)
        sites = tuple(dict.fromkeys(s for s in (when_true, when_false) if s is not None))
        constants.pop(name, None)
        if sites:
            constants[name] = Constant(name, sites, when_true, when_false)
    return constants


def rewrite(source: str, edits: dict[Site, str]) -> str:
    """source with the literal at each site replaced by its new text; all other bytes unchanged."""
    lines = _LINE.findall(source)
    for site in sorted(edits, key=lambda s: (s.lineno, s.col), reverse=True):
        raw = lines[site.lineno - 1].encode()
        lines[site.lineno - 1] = (raw[: site.col] + edits[site].encode() + raw[site.end_col :]).decode()
    return "".join(lines)


def literal(value: Number) -> str:
    """Python source for value: ints exactly, floats to 3 significant digits and still a float literal."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.3g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _site(node: ast.expr, lines: list[bytes]) -> Site | None:
    """The site of node when it is a positive number literal on one line."""
    is_number = isinstance(node, ast.Constant) and type(node.value) in (int, float)
    if not is_number or node.value <= 0 or node.end_lineno != node.lineno or node.end_col_offset is None:
        return None
    text = lines[node.lineno - 1][node.col_offset : node.end_col_offset].decode()
    return Site(node.lineno, node.col_offset, node.end_col_offset, node.value, text)
