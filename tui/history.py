"""The experiment history: every experiment of the run, newest first, its status in colour and words."""

from rich.text import Text

from autoresearch.runner.record.status import Status
from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import memory_mb
from autoresearch.tui import format as fmt
from autoresearch.tui.rows import Column, RowTable

COLUMNS = (
    Column("#", 5, right=True),
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
        fmt.status_text(e.status),
        Text(fmt.bpb(e.val_bpb), style="bold" if e.status == Status.KEEP else ""),
        Text(fmt.bpb(e.test_bpb), style="dim"),
        Text(fmt.seconds(e.training_seconds)),
        Text(fmt.megabytes(memory_mb(e))),
        Text(fmt.short_sha(e.commit_sha), style="dim"),
        Text(" ".join(e.description.split())),
    ]


class HistoryTable(RowTable):
    """The run's experiments, newest first; row keys are experiment ids."""

    def __init__(self, **kwargs) -> None:
        super().__init__(COLUMNS, history_cells, lambda e: e.id, placeholder="no experiment yet", **kwargs)
        self._experiments: tuple[Experiment, ...] = ()

    def show(self, experiments: tuple[Experiment, ...]) -> None:
        """experiments oldest first, as the store lists them."""
        if experiments is not self._experiments:
            self._experiments = experiments
            self.set_rows(experiments[::-1])
