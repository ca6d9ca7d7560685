"""The sweep agent: an offline baseline that changes one numeric hyperparameter of train.py per experiment.

No key, no network, deterministic given its seed and what it observes.

Which constants: the module-level numeric constants (see hyperparams.py), except those whose name contains
one of FROZEN_WORDS: the time budget and evaluation shapes belong to prepare.py, the seed only moves the
noise, and H100_BF16_FLOPS / HOLDOUT_TOKENS only feed what train.py reports (MFU, the advisory estimate).

Conditionals (`DEPTH = 8 if H100 else 4`): the agent cannot know which profile the run trains with, so a
move changes every literal branch the same way, and is not made unless every branch can take it. A
description shows the branches in order: "DEPTH 8/4 -> 9/5".

Moves: a float is scaled by 1.4 or 2 up, 0.7 or 0.5 down (3 significant digits; names with RATIO or
FRACTION stay <= 1); an int that is a power of two >= SCALE_MIN (widths, batch sizes) is doubled or halved,
a smaller one (layer counts, accumulation steps) steps by one and stays >= 1. MODEL_DIM and HEAD_DIM must
keep train.py's shape rules: whole heads (MODEL_DIM % HEAD_DIM == 0) and an even HEAD_DIM for the rotary
halves.

Learning: each (constant, direction) has a weight, 1 at first. A kept experiment multiplies it by KEEP_BOOST
(on the default train.py that makes it the likeliest next move, about 1 in 3), any other outcome by FAIL_DAMP
(down to MIN_WEIGHT). A train.py already proposed or seen as a parent, or whose description is already in the
history (this survives a restart), is never proposed again; when nothing new is left, propose() raises
AgentError.
"""

import hashlib
import random
from dataclasses import dataclass

from autoresearch.runner.agents.base import AgentError, Outcome, Proposal, ProposalContext
from autoresearch.runner.agents.hyperparams import Constant, Number, Site, find_constants, literal, rewrite
from autoresearch.runner.agents.tools import syntax_error

FROZEN_WORDS = ("BUDGET", "TIME", "SEED", "FLOPS", "HOLDOUT", "VOCAB", "SEQ_LEN", "EVAL")
BOUNDED_WORDS = ("RATIO", "FRACTION")  # fractions of something: at most 1
FLOAT_FACTORS = {1: (1.4, 2.0), -1: (0.7, 0.5)}
SCALE_MIN = 16
KEEP_BOOST = 8.0
FAIL_DAMP = 0.3
MIN_WEIGHT = 0.01  # no direction is ever ruled out for good


@dataclass(frozen=True)
class Move:
    """Change one constant up (+1) or down (-1); factor is the scale of a float move."""

    name: str
    direction: int
    factor: float | None = None


class SweepAgent:
    """Proposes one-constant changes of train.py; see the module docstring."""

    name = "sweep"
    model = ""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._weights: dict[tuple[str, int], float] = {}
        self._seen: set[str] = set()  # digests of every train.py proposed or given as a parent
        self._made: dict[str, tuple[str, int]] = {}  # digest of a proposal -> its (constant, direction)

    def propose(self, context: ProposalContext) -> Proposal:
        """A weighted random move of one constant that yields a train.py not tried before."""
        self._seen.add(_digest(context.train_py))
        done = {row.description for row in context.history}
        constants = find_constants(context.train_py)
        moves = [m for c in constants.values() if not _frozen(c.name) for m in _moves(c)]
        while moves:
            weights = [self._weights.get((m.name, m.direction), 1.0) / _variants(m) for m in moves]
            move = self._rng.choices(moves, weights)[0]
            moves.remove(move)
            proposal = _apply(context.train_py, constants, move)
            if proposal is None or proposal.description in done or _digest(proposal.train_py) in self._seen:
                continue
            self._seen.add(_digest(proposal.train_py))
            self._made[_digest(proposal.train_py)] = (move.name, move.direction)
            return proposal
        raise AgentError("sweep: every one-constant change of this train.py has been tried")

    def preflight(self) -> None:
        """Nothing to check: the sweep needs no service."""

    def observe(self, outcome: Outcome) -> None:
        """Reweight the direction of the move behind outcome's proposal."""
        key = self._made.get(_digest(outcome.proposal.train_py))
        if key is not None:
            weight = self._weights.get(key, 1.0) * (KEEP_BOOST if outcome.kept else FAIL_DAMP)
            self._weights[key] = max(weight, MIN_WEIGHT)


def _moves(constant: Constant) -> list[Move]:
    """The moves of a constant: float moves, int moves, or none when its branches mix ints and floats."""
    kinds = {type(site.value) for site in constant.sites}
    if kinds == {float}:
        return [Move(constant.name, d, f) for d, factors in FLOAT_FACTORS.items() for f in factors]
    if kinds == {int}:
        return [Move(constant.name, 1), Move(constant.name, -1)]
    return []


def _variants(move: Move) -> int:
    """How many moves share move's (constant, direction): they split its weight."""
    return len(FLOAT_FACTORS[move.direction]) if move.factor is not None else 1


def _apply(source: str, constants: dict[str, Constant], move: Move) -> Proposal | None:
    """The proposal that makes move, or None when a branch cannot take it or the shapes would not fit."""
    constant = constants[move.name]
    new = {site: _moved(site.value, move) for site in constant.sites}
    if any(value is None for value in new.values()) or not _shapes_fit(constants, new):
        return None
    texts = {site: literal(value) for site, value in new.items()}
    train_py = rewrite(source, texts)
    if syntax_error(train_py):
        return None
    before = "/".join(site.text for site in constant.sites)
    after = "/".join(texts[site] for site in constant.sites)
    return Proposal(train_py, f"{move.name} {before} -> {after}")


def _moved(value: Number, move: Move) -> Number | None:
    """value after move, or None when the move cannot change it validly."""
    if move.factor is not None:  # a float
        moved = value * move.factor
        if any(word in move.name for word in BOUNDED_WORDS):
            moved = min(moved, 1.0)
        moved = float(literal(moved))
        return moved if moved != value else None
    if value >= SCALE_MIN and value & (value - 1) == 0:
        moved_int = value * 2 if move.direction > 0 else value // 2
    else:
        moved_int = value + move.direction
    return moved_int if moved_int >= 1 else None


def _shapes_fit(constants: dict[str, Constant], new: dict[Site, Number | None]) -> bool:
    """Whether every branch keeps whole heads and an even HEAD_DIM."""
    for branch in ("when_true", "when_false"):
        values = {}
        for name, constant in constants.items():
            site = getattr(constant, branch)
            if site is not None:
                values[name] = new.get(site, site.value)
        dim, head = values.get("MODEL_DIM"), values.get("HEAD_DIM")
        if dim is not None and head is not None and (head % 2 or dim % head):
            return False
    return True


def _frozen(name: str) -> bool:
    return any(word in name for word in FROZEN_WORDS)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()
