"""The experiment history: every experiment of the run, newest first, its status in colour and words.

On a run with slots, each row says the slot it ran on (the column is left out for runs that recorded none),
an extra seed says what it measured in front of its description (`noise`: a seed of the baseline; `confirm`:
a second seed of a close keep), and a near miss (an improvement on a parent that was no longer the best,
left for the agent to port) says so.
"""

from rich.text import Text

from autoresearch.runner.record.status import Status
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import memory_mb, near_miss, shown_name
from autoresearch.tui import format as fmt
from autoresearch.tui.lanes import role_text
from autoresearch.tui.rows import Column, RowTable

COLUMNS = (
    Column("#", 5, right=True),
    Column("slot", 12, hide_below=84),
    Column("status", 11),
    Column("val_bpb", 8, right=True),
    Column("test_bpb", 8, right=True, hide_below=100),
    Column("train s", 7, right=True, hide_below=76),
    Column("memory", 8, right=True, hide_below=110),
    Column("commit", 7, hide_below=70),
    Column("description", None),
)


def history_cells(e: Experiment) -> list[Text]:
    """One experiment's cells, in COLUMNS order."""
    return [
        Text(str(e.seq)),
        Text(shown_name(e.slot) if e.slot else fmt.MISSING, style="dim"),
        fmt.status_text(e.status),
        Text(fmt.bpb(e.val_bpb), style="bold" if e.status == Status.KEEP else ""),
        Text(fmt.bpb(e.test_bpb), style="dim"),
        Text(fmt.seconds(e.training_seconds)),
        Text(fmt.megabytes(memory_mb(e))),
        Text(fmt.short_sha(e.commit_sha), style="dim"),
        description_text(e),
    ]


def description_text(e: Experiment) -> Text:
    """The description, after `noise `/`confirm ` for an extra seed and `near miss ` for a near miss."""
    text = role_text(e.role)
    if near_miss(e):
        text.append("near miss ", style="bold yellow")
    return text.append(" ".join(e.description.split()))


class HistoryTable(RowTable):
    """The run's experiments, newest first; row keys are experiment ids."""

    def __init__(self, **kwargs) -> None:
        super().__init__(COLUMNS, history_cells, lambda e: e.id, placeholder="no experiment yet", **kwargs)
        self._experiments: tuple[Experiment, ...] = ()

    def show(self, experiments: tuple[Experiment, ...]) -> None:
        """experiments oldest first, as the store lists them."""
        if experiments is not self._experiments:
            self._experiments = experiments
            self.hidden = frozenset() if any(e.slot for e in experiments) else frozenset({"slot"})
            self.set_rows(experiments[::-1])
