"""Static rules against reflection: routes to builtins, the import machinery and frames, and honest code that passes."""

import json
from pathlib import Path

import pytest

from autoresearch.runner.check.findings import worst_action
from autoresearch.runner.check.policy import load_policy
from autoresearch.runner.check.static_rules import check_source

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = load_policy()
STRICT = load_policy(name="strict")
REFLECTION = "static.reflection"

HOSTILE = [
    # dunder attributes and names, however reached
    ("b = print.__self__\nb.exec('import os')", REFLECTION),
    ("def f():\n    pass\ng = f.__globals__['__builtins__']", REFLECTION),
    ("x = ().__class__.__base__", REFLECTION),
    ("x = type(print).__dict__", REFLECTION),
    ("r = (1).__reduce_ex__(2)", REFLECTION),
    ("class A:\n    pass\nhook = A.__init_subclass__", REFLECTION),
    ("class A:\n    def f(self):\n        return super().__getattribute__('x')", REFLECTION),
    ("s = print.__call__.__call__.__self__", REFLECTION),
    ("b = __builtins__", REFLECTION),
    ("os = __loader__.load_module('os')", REFLECTION),
    ("class A:\n    def f(self):\n        return __class__", REFLECTION),
    ("import prepare\nprepare.__class__ = object", REFLECTION),
    ("from prepare import __builtins__ as b\nb['exec']('1')", REFLECTION),
    ("match print:\n    case object(__self__=b):\n        b.exec('1')", REFLECTION),
    ("match g:\n    case object(gi_frame=f):\n        pass", REFLECTION),
    # attributes named by a string: built at run time, a dunder, or the function passed around
    ("def f():\n    pass\ng = getattr(f, '__glo' + 'bals__')", REFLECTION),
    ("e = getattr(print.__self__, 'ex' + 'ec')", REFLECTION),
    ("name = 'exec'\ne = getattr(print, name)", REFLECTION),
    ("def f():\n    pass\ng = getattr(f, '__globals__')", REFLECTION),
    ("def f():\n    pass\ng = object.__getattribute__(f, '__globals__')", REFLECTION),
    ("import operator\nget = operator.attrgetter('__globals__')", REFLECTION),
    ("import operator\nget = operator.attrgetter('weight')", REFLECTION),
    ("from operator import methodcaller\ncall = methodcaller(''.join(['ex', 'ec']))", REFLECTION),
    ("import functools\nparts = ['__glo' + 'bals__']\ng = functools.reduce(getattr, parts, print)", REFLECTION),
    ("get = getattr\nx = get(print, 'y')", REFLECTION),
    ("class A:\n    pass\nsetattr(A, 'na' + 'me', 1)", REFLECTION),
    ("args = [print, '__se' + 'lf__']\nb = getattr(*args)", REFLECTION),
    ("import functools\nclass Box:\n    pass\nnames = ['x']\nfunctools.update_wrapper(Box(), print, assigned=names)",
     REFLECTION),
    ("import argparse, functools\nbox = functools.wraps(print, ('__se' + 'lf__',), ())(argparse.Namespace())",
     REFLECTION),
    # a class whose __match_args__ names attributes: `case C(b)` reads them from any subject
    ("import abc\nclass C(abc.ABC):\n    __match_args__ = ('__se' + 'lf__',)\nC.register(type(print))", REFLECTION),
    ("def f(C, x):\n    match x:\n        case C(b):\n            return b", REFLECTION),
    ("import abc\nint = abc.ABC\nmatch print:\n    case int(b):\n        pass", REFLECTION),
    ("class Box:\n    __self__ = property(fset=print)", REFLECTION),
    ("d = {}\nb = d['__builtins__']", REFLECTION),
    ("import os as __builtins__", REFLECTION),
    ("import os\nclass A:\n    def f(self):\n        global __builtins__\n        __builtins__ = os", REFLECTION),
    ("try:\n    pass\nexcept Exception as __builtins__:\n    pass", REFLECTION),
    ("def __getattr__(name):\n    return name", REFLECTION),
    ("t = type('T', (), dict(__getattr__=print))", REFLECTION),
    ("text = '{0.__init__.__globals__}'.format(object())", REFLECTION),
    # namespaces as dictionaries, and the interpreter's own entry points
    ("g = globals()['__buil' + 'tins__']", REFLECTION),
    ("v = vars()", REFLECTION),
    ("import torch\nns = vars(torch)", REFLECTION),
    ("def f():\n    return locals()", REFLECTION),
    ("breakpoint()", REFLECTION),
    ("help('modules')", REFLECTION),
    ("import inspect\nmembers = inspect.getmembers(print)", REFLECTION),
    ("import sys\nb = sys.modules['builtins']", REFLECTION),
    ("import sys\nframes = sys._current_frames()", REFLECTION),
    ("import threading\nthreading.settrace(print)", REFLECTION),
    # frames, tracebacks, generators and coroutines
    ("import sys\ntry:\n    1 / 0\nexcept Exception:\n    frame = sys.exc_info()[2].tb_frame", REFLECTION),
    ("try:\n    1 / 0\nexcept Exception as exc:\n    tb = exc.__traceback__", REFLECTION),
    ("def gen():\n    yield\nframe = gen().gi_frame", REFLECTION),
    ("def gen():\n    yield\ncode = gen().gi_code", REFLECTION),
    ("async def co():\n    pass\nframe = co().cr_frame", REFLECTION),
    ("async def ag():\n    yield\nframe = ag().ag_frame", REFLECTION),
    ("def f(frame):\n    return frame.f_back.f_globals", REFLECTION),
    ("def f(tb):\n    return getattr(tb, 'tb_frame')", REFLECTION),
    # modules that other modules import, reached through them
    ("import torch\nmods = torch.sys.modules", REFLECTION),
    ("import torch\ntorch.builtins.exec('1')", "static.forbidden_import"),
    ("from torch import importlib", "static.forbidden_import"),
    ("import numpy as np\nnp.os.system('id')", "static.process_control"),
    ("import random\nrandom._os.system('id')", "static.process_control"),
    ("import tempfile\nmods = tempfile._sys.modules", REFLECTION),
    # star imports hide every name they bind
    ("from os import *\nsystem('id')", REFLECTION),
    ("from sys import *\nb = modules['builtins']", REFLECTION),
    ("from prepare import *\nos.system('id')", REFLECTION),
    # the import machinery and code built from parts
    ("import pkgutil\nsystem = pkgutil.resolve_name('os:system')", "static.forbidden_import"),
    ("import pydoc\nsystem = pydoc.locate('os.system')", "static.forbidden_import"),
    ("import code\ncode.InteractiveInterpreter().runsource('1')", "static.forbidden_import"),
    ("import types\ndef make(code):\n    return types.FunctionType(code, {})", "static.dynamic_code"),
    ("import typing\nhints = typing.get_type_hints(print)", "static.dynamic_code"),
    ("import string\ng = string.Formatter().get_field('0.' + 'x', [print], {})", REFLECTION),
    ("import site\nsite.addsitedir('/tmp/pth')", "static.forbidden_import"),
    ("import torch\ntorch.ops.load_library('/tmp/x.so')", "static.forbidden_import"),
    ("import numpy as np\nlib = np.ctypeslib.load_library('x', '/tmp')", "static.forbidden_import"),
    ("import timeit\ntimeit.timeit('1 + 1')", "static.dynamic_code"),
    ("import pickle\nf = pickle.loads(b'cos\\nsystem\\n.')", "static.dynamic_code"),
    ("import logging.config\nlogging.config.dictConfig({})", "static.forbidden_import"),
    ("from unittest import mock\nmock.patch('os.system')", "static.forbidden_import"),
    # string annotations are code to whoever evaluates them (functools.singledispatch, typing)
    ("import functools\n@functools.singledispatch\ndef f(x):\n    pass\n"
     "@f.register\ndef _(x: \"exec('import socket') or int\"):\n    pass", "static.dynamic_code"),
    ("def f(x: 'list[\"breakpoint()\"]'):\n    pass", REFLECTION),
    ("def f() -> '*breakpoint()':\n    pass", REFLECTION),
    ("import typing\nclass Literal(typing.Generic[typing.T]):\n    pass\ndef f(x: Literal['breakpoint()']):\n    pass",
     REFLECTION),
    ("import typing\ndef f(x: typing.Annotated['breakpoint()', 'meta']):\n    pass", REFLECTION),
]


@pytest.mark.parametrize(("source", "rule_id"), HOSTILE, ids=[f"{i:02d}" for i in range(len(HOSTILE))])
def test_reflection_route_is_blocked(source, rule_id):
    findings = check_source(source, DEFAULT)
    assert (rule_id, "block") in {(f.rule_id, f.action) for f in findings}, findings
    for finding in findings:
        json.dumps(finding.to_dict())
        assert finding.evidence.get("line") and finding.evidence.get("excerpt"), finding


def test_evidence_names_the_dunder_and_its_line():
    [finding] = check_source("import math\nx = math.floor\ny = print.__self__\n", DEFAULT)
    assert finding.rule_id == REFLECTION and finding.action == "block"
    assert finding.evidence == {"line": 3, "col": 4, "excerpt": "y = print.__self__", "name": "__self__"}


def test_a_string_built_attribute_name_shows_the_expression():
    [finding] = check_source("x = getattr(print, 'a' + 'b')\n", DEFAULT)
    assert finding.evidence["name"] == "getattr" and finding.evidence["argument"] == "'a' + 'b'"


HONEST = [
    "import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        self.lin = nn.Linear(2, 2)\n    def __call__(self, x):\n        return self.lin(x)\n"
    "    def __repr__(self):\n        return 'M'",
    "import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        nn.Module.__init__(self)",
    "def main():\n    pass\nif __name__ == '__main__':\n    main()",
    "import torch\nimport torch.nn.functional as F\ndtype = getattr(torch, 'bfloat16')\nact = getattr(F, 'gelu')\n"
    "w = getattr(torch.nn.Linear(2, 2), 'weight', None)\nok = hasattr(torch, 'compile')",
    "import torch\nmodule = torch.nn.Linear(2, 2)\nnames = [n for n in ('weight', 'bias') if hasattr(module, n)]",
    "import torch\nmodel = torch.nn.Linear(2, 2)\nprint(type(model).__name__, torch.__version__, main.__name__)\n"
    "def main():\n    pass",
    "from pathlib import Path\nhere = Path(__file__).parent",
    "from __future__ import annotations\nimport math\ndef f(x: float) -> float:\n    return math.sqrt(x)",
    "try:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    print(f'{type(exc).__name__}: {exc}')",
    "import torch\nimport numpy as np\ntorch.random.manual_seed(0)\nnp.random.seed(0)\n"
    "x = torch.chunk(torch.ones(4), 2)\nt = torch.trace(torch.eye(3))\nr = torch.select(torch.eye(3), 0, 1)\n"
    "m = torch.compile(torch.nn.Linear(2, 2))",
    "tb_writer = None\nf_out = 3\ncode = 'abc'\nclass A:\n    gi = 1\ndir = '/tmp/run'",
    "from dataclasses import dataclass, field\n@dataclass\nclass Config:\n    depth: int = 8\n"
    "    betas: tuple = field(default=(0.8, 0.95))\n    def __post_init__(self):\n"
    "        self.depth = max(1, self.depth)",
    "import operator\nkey = operator.itemgetter(0)\nadd = operator.add",
    "class Point:\n    __slots__ = ('x', 'y')\n    def __getitem__(self, i):\n        return (self.x, self.y)[i]",
    "import functools\ndef timed(fn):\n    @functools.wraps(fn)\n    def inner(*args, **kwargs):\n"
    "        return fn(*args, **kwargs)\n    return inner",
    "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int = 0\ndef f(v):\n    match v:\n"
    "        case P(x=0) | 0:\n            return 0\n"
    "        case (str() as s) | [(int() as s), *_]:\n            return s",
    "def gen():\n    yield 1\nfor x in gen():\n    print(x)",
    "import sys\nprint('x', file=sys.stderr)\nsys.exit(0)",
    "import torch\nclass Block:\n    pass\ndef f(x: 'torch.Tensor', n: 'int | None' = None) -> 'list[Block]':\n"
    "    y: 'dict[str, torch.Tensor]' = {}\n    return [Block()]",
    "from typing import Annotated, Literal\ndef f(mode: Literal['train', 'eval'], n: Annotated[int, 'eval']):\n"
    "    return mode",
]


@pytest.mark.parametrize("source", HONEST, ids=[f"{i:02d}" for i in range(len(HONEST))])
def test_honest_code_passes(source):
    assert check_source(source, DEFAULT) == []
    assert check_source(source, STRICT) == []


@pytest.mark.parametrize("path", ["task/train.py", "tests/security/uniform_export.py"])
def test_bundled_candidates_have_no_findings(path):
    source = (ROOT / path).read_text()
    assert check_source(source, DEFAULT) == []
    assert worst_action(check_source(source, STRICT)) is None


def test_strict_inherits_the_reflection_rule():
    assert STRICT.rules[REFLECTION] == DEFAULT.rules[REFLECTION]
    assert "__init__" in DEFAULT.rules[REFLECTION].params["allowed_dunders"]
