"""The leaderboard: the run's kept commits, best first, with the gain of each over the baseline."""

from rich.text import Text

from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import LeaderboardRow, leaderboard_rows
from autoresearch.tui import format as fmt
from autoresearch.tui.rows import Column, RowTable

COLUMNS = (
    Column("rank", 4, right=True),
    Column("#", 5, right=True, hide_below=90),
    Column("commit", 7),
    Column("val_bpb", 8, right=True),
    Column("gain", 9, right=True),
    Column("test_bpb", 8, right=True),
    Column("memory", 8, right=True, hide_below=70),
    Column("description", None),
)


def leaderboard_cells(row: LeaderboardRow) -> list[Text]:
    return [
        Text(str(row.rank), style="bold" if row.rank == 1 else ""),
        Text(str(row.seq)),
        Text(row.commit or fmt.MISSING, style="dim"),
        Text(fmt.bpb(row.val_bpb), style="bold green" if row.rank == 1 else "green"),
        Text(fmt.gain(row.gain), style="green" if row.gain > 0 else "dim"),
        Text(fmt.bpb(row.test_bpb)),
        Text(fmt.megabytes(row.peak_vram_mb)),
        Text(" ".join(row.description.split())),
    ]


class LeaderboardTable(RowTable):
    """Kept commits, best first; row keys are experiment seqs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(COLUMNS, leaderboard_cells, lambda row: row.seq, placeholder="no kept experiment yet",
                         **kwargs)
        self._experiments: tuple[Experiment, ...] = ()

    def show(self, experiments: tuple[Experiment, ...]) -> None:
        if experiments is not self._experiments:
            self._experiments = experiments
            self.set_rows(leaderboard_rows(experiments))  # what `autoresearch leaderboard` lists
