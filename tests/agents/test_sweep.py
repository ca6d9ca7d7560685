"""The sweep agent on the real task/train.py, and the literal rewriting it relies on."""

import ast
import re

import pytest

from autoresearch.runner.agents import AgentError, AgentSettings, HistoryRow, Outcome, ProposalContext, make_agent
from autoresearch.runner.agents.hyperparams import find_constants, rewrite
from autoresearch.runner.agents.sweep import FROZEN_WORDS, SweepAgent
from autoresearch.runner.task_files import default_task_dir

TRAIN_PY = (default_task_dir() / "train.py").read_text()
DESCRIPTION = re.compile(r"^([A-Z0-9_]+) ([\d./e+-]+) -> ([\d./e+-]+)$")


def context_for(train_py: str, history: list[HistoryRow] | None = None) -> ProposalContext:
    return ProposalContext("program", "prepare", train_py, history or [], None, None)


def masked(source: str) -> str:
    """source with every numeric constant's literals replaced by '#'."""
    return rewrite(source, {site: "#" for c in find_constants(source).values() for site in c.sites})


def values(source: str) -> dict[str, tuple]:
    return {name: tuple(s.value for s in c.sites) for name, c in find_constants(source).items()}


def move_of(description: str) -> tuple[str, bool]:
    """(constant, went up) from a sweep description."""
    name, before, after = DESCRIPTION.match(description).groups()
    return name, float(after.split("/")[0]) > float(before.split("/")[0])


def test_the_real_train_py_has_the_constants_the_sweep_expects():
    found = values(TRAIN_PY)
    assert found["DEPTH"] == (8, 4) and found["MATRIX_LR"] == (0.04, 0.03) and found["WINDOW_FRACTION"] == (0.5,)
    assert "SEED" not in found and "ADAM_BETAS" not in found  # not numeric literals


def test_every_proposal_changes_one_tunable_constant_and_nothing_else_until_none_is_left():
    agent = SweepAgent(seed=1)
    seen = set()
    with pytest.raises(AgentError, match="has been tried"):
        for _ in range(100):
            proposal = agent.propose(context_for(TRAIN_PY))
            seen.add(proposal.train_py)
            ast.parse(proposal.train_py)
            assert masked(proposal.train_py) == masked(TRAIN_PY)
            before, after = values(TRAIN_PY), values(proposal.train_py)
            [changed] = [name for name in before if before[name] != after[name]]
            assert not any(word in changed for word in FROZEN_WORDS)
            assert all(new != old for new, old in zip(after[changed], before[changed], strict=True))
            assert all(v >= 1 for v in after["DEPTH"] + after["GRAD_ACCUM"]) and after["WARMDOWN_RATIO"][0] <= 1
            assert all(d % h == 0 and h % 2 == 0 for d, h in zip(after["MODEL_DIM"], after["HEAD_DIM"], strict=True))
            assert DESCRIPTION.match(proposal.description).group(1) == changed
            assert proposal.train_py != TRAIN_PY
    assert 20 < len(seen) < 100  # all different, and a finite set of moves


def test_descriptions_name_the_constant_and_both_branches():
    descriptions = {SweepAgent(seed).propose(context_for(TRAIN_PY)).description for seed in range(40)}
    assert "DEPTH 8/4 -> 9/5" in descriptions or "DEPTH 8/4 -> 7/3" in descriptions
    assert any(d.startswith("MATRIX_LR 0.04/0.03 -> ") for d in descriptions)
    assert "GRAD_ACCUM 2/1 -> 1/0" not in descriptions  # the cpu branch cannot go below 1


def test_the_same_seed_makes_the_same_proposals():
    def run(seed: int) -> list[str]:
        agent, parent, out = SweepAgent(seed), TRAIN_PY, []
        for i in range(6):
            proposal = agent.propose(context_for(parent))
            kept = i % 2 == 0
            agent.observe(Outcome(proposal, "keep" if kept else "discard", 1.0, kept))
            parent = proposal.train_py if kept else parent
            out.append(proposal.description)
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_a_kept_direction_is_taken_again_more_often_than_a_discarded_one():
    repeats = {True: 0, False: 0}
    for seed in range(60):
        for kept in (True, False):
            agent = SweepAgent(seed)
            first = agent.propose(context_for(TRAIN_PY))
            agent.observe(Outcome(first, "keep" if kept else "discard", 1.0, kept))
            second = agent.propose(context_for(first.train_py if kept else TRAIN_PY))
            repeats[kept] += move_of(second.description) == move_of(first.description)
    assert repeats[True] >= 12 and repeats[True] > 4 * repeats[False]


def test_a_change_already_in_the_history_is_not_proposed_again():
    first = SweepAgent(seed=3).propose(context_for(TRAIN_PY))
    history = [HistoryRow(2, "-", None, "discard", first.description)]
    again = SweepAgent(seed=3).propose(context_for(TRAIN_PY, history))
    assert again.description != first.description


def test_rewriting_keeps_every_other_byte_with_unicode_and_crlf():
    source = 'NAME = "é€"; LR = 0.1  # ß\r\nX = 3 if H100 else 2\r\nY = f(2)\rZ = 0.5\n'
    constants = find_constants(source)
    assert set(constants) == {"LR", "X", "Z"}
    edits = {site: "9" for c in constants.values() for site in c.sites}
    assert rewrite(source, edits) == 'NAME = "é€"; LR = 9  # ß\r\nX = 9 if H100 else 9\r\nY = f(2)\rZ = 9\n'


def test_the_factory_makes_a_sweep_agent_with_the_seed():
    agent = make_agent("sweep", settings=AgentSettings(), log_turn=lambda **_: 0, seed=4)
    assert (agent.name, agent.model) == ("sweep", "")
    assert agent.propose(context_for(TRAIN_PY)) == SweepAgent(seed=4).propose(context_for(TRAIN_PY))
