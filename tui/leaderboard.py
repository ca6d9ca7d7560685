"""The leaderboard: the run's kept commits, best first, with the gain of each over the baseline."""

from rich.text import Text

from autoresearch.runner.record.store import Experiment
from autoresearch.runner.record.views import LeaderboardRow, memory_mb
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


def leaderboard_rows(experiments: tuple[Experiment, ...]) -> list[LeaderboardRow]:
    """What `autoresearch leaderboard` lists, from experiments already read (report.leaderboard reads them all)."""
    kept = [e for e in experiments if e.status == "keep" and e.val_bpb is not None]
    if not kept:
        return []
    baseline = kept[0].val_bpb
    ranked = sorted(kept, key=lambda e: e.val_bpb)  # type: ignore[arg-type, return-value]
    return [LeaderboardRow(rank, e.seq, fmt.short_sha(e.commit_sha), e.val_bpb, baseline - e.val_bpb,  # type: ignore[operator, arg-type]
                           e.test_bpb, memory_mb(e), e.description)
            for rank, e in enumerate(ranked, start=1)]


def leaderboard_cells(row: LeaderboardRow) -> list[Text]:
    return [
        Text(str(row.rank), style="bold" if row.rank == 1 else ""),
        Text(str(row.seq)),
        Text(row.commit, style="dim"),
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
            self.set_rows(leaderboard_rows(experiments))
