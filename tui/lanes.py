"""The lanes: one row per slot of the run (a GPU, a set of CPU cores, a GPU of a Ray node) and what it runs.

Each lane shows the slot, its node and device, the experiment it runs (#seq, status, role, description),
that experiment's live loss as a sparkline of its newest points with the last value and step, its
training time against the budget and the utilisation of its latest sample. An idle slot says idle; a
slot whose node is dead says so in red. Slot and node names come from the store as data (views.shown_name
escapes them: a Ray node names itself), and every cell is a `Text`, so no markup in them is acted on.
"""

import math
from collections.abc import Callable, Sequence

from rich.text import Text

from autoresearch.runner.record import views
from autoresearch.runner.record.status import Role, Status
from autoresearch.runner.record.store import GpuSample, Node
from autoresearch.tui import format as fmt
from autoresearch.tui.gpu import STALE_S
from autoresearch.tui.rows import Column, RowTable
from autoresearch.tui.snapshot import Lane

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 14
IDLE_STYLE = "dim"
DEAD_STYLE = "bold red"
ROLE_STYLES = {Role.NOISE: "cyan", Role.CONFIRM: "magenta"}

COLUMNS = (
    Column("slot", 12),
    Column("node", 10, hide_below=90),
    Column("device", 14, hide_below=124),
    Column("#", 5, right=True),
    Column("status", 11),
    Column("loss", SPARK_WIDTH, hide_below=76),
    Column("last", 7, right=True),
    Column("step", 6, right=True, hide_below=110),
    Column("train s", 9, right=True),
    Column("util", 5, right=True, hide_below=90),
    Column("description", None),
)


def sparkline(values: Sequence[float], width: int) -> str:
    """The last `width` values as block characters, lowest to highest of what is shown."""
    finite = [v for v in values if math.isfinite(v)][-width:]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    if hi <= lo:
        return SPARKS[0] * len(finite)
    top = len(SPARKS) - 1
    return "".join(SPARKS[round((v - lo) / (hi - lo) * top)] for v in finite)


def role_text(role: str | None) -> Text:
    """`noise ` or `confirm ` in its colour before a description; nothing for a candidate."""
    return Text(f"{role} ", style=ROLE_STYLES.get(role, "yellow")) if role else Text()


def latest_util(samples: Sequence[GpuSample], experiment_ids: set[int]) -> dict[int, GpuSample]:
    """The newest sample of each of experiment_ids (the newest samples are the busy slots', so this stops early)."""
    found: dict[int, GpuSample] = {}
    for sample in reversed(samples):
        if sample.experiment_id in experiment_ids and sample.experiment_id not in found:
            found[sample.experiment_id] = sample
            if len(found) == len(experiment_ids):
                break
    return found


class LaneTable(RowTable):
    """One row per slot; row keys are slot names; Enter opens the experiment a slot runs."""

    def __init__(self, clock: Callable[[], float], **kwargs) -> None:
        super().__init__(COLUMNS, self.lane_cells, lambda lane: lane.slot.slot, placeholder="no slot yet", **kwargs)
        self.clock = clock
        self._lanes: tuple[Lane, ...] = ()
        self._samples: Sequence[GpuSample] = ()
        self._utils: dict[int, GpuSample] = {}
        self._dead: frozenset[str] = frozenset()
        self.budget_s: float | None = None

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def show(self, lanes: tuple[Lane, ...], samples: Sequence[GpuSample], nodes: Sequence[Node],
             budget_s: float | None) -> None:
        dead = frozenset(views.shown_name(n.name) for n in nodes if n.state in views.NODE_DOWN)
        if lanes is self._lanes and samples is self._samples and (dead, budget_s) == (self._dead, self.budget_s):
            return
        self._samples, self._dead, self.budget_s = samples, dead, budget_s
        ids = {lane.experiment.id for lane in lanes if lane.experiment is not None}
        self._utils = latest_util(samples, ids)
        if lanes is not self._lanes:
            self._lanes = lanes
            self.set_rows(lanes)
        self.refresh()

    def _tick(self) -> None:
        """Redraw once a second while a slot is busy: the time of a lane that has no progress yet runs on."""
        if any(lane.experiment is not None for lane in self._lanes):
            self.refresh()

    @property
    def selected(self) -> Lane | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def lane_cells(self, lane: Lane) -> list[Text]:
        slot = lane.slot
        dead = slot.node in self._dead
        node = Text(slot.node + (" ✗" if dead else ""), style=DEAD_STYLE if dead else "")
        head = [Text(slot.slot, style="bold"), node, Text(slot.device or slot.where or fmt.MISSING, style="dim")]
        experiment = lane.experiment
        if experiment is None:
            state = Text("✗ node lost", style=DEAD_STYLE) if dead else Text("idle", style=IDLE_STYLE)
            return [*head, Text(""), state, *[Text("")] * 5, Text("waiting for a proposal" if not dead else "",
                                                                  style=IDLE_STYLE)]
        losses = [p.loss for p in lane.points if p.loss is not None]
        last = lane.points[-1] if lane.points else None
        sample = self._utils.get(experiment.id)
        util = (f"{sample.util_percent:.0f}%" if sample is not None and sample.util_percent is not None
                and self.clock() - sample.recorded_at <= STALE_S else fmt.MISSING)
        description = role_text(experiment.role) + Text(" ".join(experiment.description.split()))
        return [
            *head,
            Text(str(experiment.seq)),
            fmt.status_text(experiment.status),
            Text(sparkline(losses, SPARK_WIDTH), style="cyan"),
            Text(f"{losses[-1]:.4f}" if losses else fmt.MISSING),
            Text(str(last.step) if last is not None else fmt.MISSING, style="dim"),
            self._time(lane),
            Text(util),
            description,
        ]

    def _time(self, lane: Lane) -> Text:
        """`34/60` training seconds of the budget, or, before its first progress line, `up 12s` (setting up)."""
        experiment = lane.experiment
        assert experiment is not None
        elapsed = next((p.elapsed for p in reversed(lane.points) if p.elapsed is not None), None)
        if elapsed is None and experiment.training_seconds is not None:
            elapsed = experiment.training_seconds
        if elapsed is None:
            if experiment.status == Status.PENDING:
                return Text("queued", style=IDLE_STYLE)
            return Text(f"up {fmt.duration(self.clock() - experiment.started_at)}", style=IDLE_STYLE)
        if not self.budget_s:
            return Text(f"{elapsed:.0f}")
        style = "bold green" if elapsed >= self.budget_s else ""
        return Text(f"{elapsed:.0f}/{self.budget_s:g}", style=style)
