"""The nodes panel: each node of the run with its GPUs, utilisation and state; a dead node in red.

A Ray run's nodes are the runner's `nodes` rows. A local run has none: the panel shows this host from the
run's slots, its utilisation from the latest GPU (or, without one, CPU) samples. A run that recorded no
slots (before runs kept them) ran on one local slot: the panel says so. Names and addresses are data
(views.shown_name escaped them) drawn as `Text`.
"""

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widget import Widget

from autoresearch.runner.record import store, views
from autoresearch.tui import format as fmt
from autoresearch.tui.gpu import STALE_S, bar

STATE_STYLES = {"ready": ("●", "bold green"), "alive": ("●", "bold green"), "starting": ("◌", "yellow"),
                "lost": ("✗", "bold white on red"), "dead": ("✗", "bold white on red"),
                "refused": ("✗", "bold red"), "gone": ("○", "dim"), "left": ("○", "dim"), views.IDLE: ("○", "dim")}
NAME_WIDTH = 14
BAR_WIDTH = 10
RECENT_SAMPLES = 512  # the newest samples read for the local host's utilisation now


def local_util(samples: Sequence[store.GpuSample], now: float) -> float | None:
    """This host's utilisation now, from the latest fresh sample of each experiment (and device): the mean of
    its GPUs, or the sum of its CPU slots' processes (percent of one core, as psutil counts). None when no
    sample is fresh (between experiments)."""
    latest: dict[tuple[int | None, str], store.GpuSample] = {}
    for sample in reversed(samples[-RECENT_SAMPLES:]):  # slots write in turns: the newest rows, not one run of them
        if now - sample.recorded_at <= STALE_S:
            latest.setdefault((sample.experiment_id, sample.device), sample)
    values = [s.util_percent for s in latest.values() if s.util_percent is not None]
    if not values:
        return None
    cpu = all(s.kind == "psutil" for s in latest.values())
    return sum(values) if cpu else sum(values) / len(values)


def short_device(device: str | None) -> str | None:
    """`H100 80GB HBM3` for `NVIDIA H100 80GB HBM3`: the vendor says nothing in a panel this narrow."""
    return device.removeprefix("NVIDIA ") if device else device


def node_line(node: views.NodeView, now: float, width: int, name_width: int = NAME_WIDTH) -> Text:
    """`● node-a ready ━━━━━━  87%  2× H100`, or a lost node with how long ago it was seen, and why."""
    mark, style = STATE_STYLES.get(node.state, ("?", "yellow"))
    label = node.name if len(node.name) <= name_width else node.name[: name_width - 1] + "…"
    text = Text.assemble((mark + " ", style), (f"{label:<{name_width}} ", "bold"),
                         (f"{node.state.upper() if node.state in views.NODE_DOWN else node.state:<5}", style))
    if node.state in views.NODE_UP and node.util_percent is not None:
        cpu = not node.gpus
        scale = 100.0 * max(node.slots, 1) if cpu else 100.0  # CPU samples count whole cores, per slot
        text.append(" ").append_text(bar(node.util_percent / scale, BAR_WIDTH)).append(f" {node.util_percent:4.0f}%")
    elif node.seen_at is not None and node.state not in views.NODE_UP:
        seen = f"  last seen {fmt.duration(now - node.seen_at)} ago"
        text.append(seen, style="red" if node.state in views.NODE_DOWN else "dim")
    if node.gpus:
        text.append(f"  {node.gpus}× {short_device(node.device) or 'GPU'}", style="dim")
    else:
        text.append(f"  {node.slots} slot{'s' if node.slots != 1 else ''} · {node.device or 'cpu'}", style="dim")
    if node.address and width >= 70:
        text.append(f"  {node.address}", style="dim")
    if node.note and node.state not in views.NODE_UP:
        text.append(f"  {' '.join(node.note.split())}", style="red" if node.state in views.NODE_DOWN else "dim")
    text.truncate(width, overflow="ellipsis")
    return text


def panel_text(run: store.Run | None, rows: Sequence[store.Node], samples: Sequence[store.GpuSample], now: float,
               width: int) -> Text:
    if run is None:
        return Text("")
    alive = views.runner_alive(run, now)
    nodes = views.fleet_nodes(run, rows, alive, local_util(samples, now))
    if not nodes:
        host = views.shown_name(run.host) if run.host else "this host"
        return Text(f"{host}: one local slot (the run recorded no slots)", style="dim")
    name_width = min(max(len(node.name) for node in nodes), NAME_WIDTH)
    return Text("\n", no_wrap=True, overflow="crop").join(node_line(node, now, width, name_width) for node in nodes)


class NodesPanel(Widget):
    """One line per node of the run."""

    DEFAULT_CSS = "NodesPanel { height: auto; padding: 0 1; }"

    def __init__(self, clock: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self._state: tuple[store.Run | None, tuple[store.Node, ...], Sequence[store.GpuSample]] = (None, (), ())

    def on_mount(self) -> None:
        self.set_interval(1.0, self.refresh)  # ages and the staleness of samples move with the clock

    def show(self, run: store.Run | None, nodes: tuple[store.Node, ...], samples: Sequence[store.GpuSample]) -> None:
        old_run, old_nodes, old_samples = self._state
        if run != old_run or nodes is not old_nodes or samples is not old_samples:
            self._state = (run, nodes, samples)
            self.refresh(layout=True)

    def render(self) -> Text:
        return panel_text(*self._state, self.clock(), self.content_region.width)
