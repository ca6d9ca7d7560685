"""The agent in a thread of its own, so that its thinking overlaps training (runner/loop.py asks ahead).

The loop builds each proposal's context (it alone reads git and the store) and hands it over; the agent
proposes one at a time, and what the loop learns of each outcome reaches it in the same thread, before
its next proposal, so an agent never sees two threads.
"""

import queue
import threading
import time
from collections.abc import Callable

from autoresearch.runner.agents.base import Agent, Outcome, Proposal, ProposalContext


class Proposer:
    """The agent, in a thread of its own: one proposal at a time, from a context the loop built; what the loop
    learns of each outcome reaches the agent in the same thread, before its next proposal."""

    def __init__(self, agent: Agent, on_exit: Callable[[], None]):
        self.agent, self.on_exit = agent, on_exit
        self.busy = False
        self._asks: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="proposer", daemon=True)
        self._thread.start()

    def ask(self, context: ProposalContext, wave: int | None) -> None:
        self.busy = True
        self._asks.put(("propose", (context, wave)))

    def observe(self, outcome: Outcome) -> None:
        self._asks.put(("observe", outcome))

    def answers(self) -> list[tuple[Proposal | BaseException, float, int | None, str | None]]:
        """(proposal or the error it raised, seconds it took, its wave, the parent commit it was proposed from)."""
        found = []
        while not self._answers.empty():
            found.append(self._answers.get_nowait())
            self.busy = False
        return found

    def close(self) -> None:
        self._asks.put(None)
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            while (ask := self._asks.get()) is not None:
                kind, item = ask
                if kind == "observe":
                    self.agent.observe(item)
                    continue
                context, wave = item
                began = time.monotonic()
                try:
                    answer: Proposal | BaseException = self.agent.propose(context)
                except BaseException as exc:  # the loop's thread decides what an error means
                    answer = exc
                self._answers.put((answer, time.monotonic() - began, wave, context.parent_sha))
        finally:
            self.on_exit()
