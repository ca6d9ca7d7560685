"""The GPU panel: per device, utilisation and memory now, and their history, from the store's samples.

The runner's monitor samples the assigned GPU through NVML while an experiment trains; without a GPU
driver it samples the container's processes with psutil instead (device "cpu"), which this panel labels
as CPU and RAM, never as a GPU. Samples are taken only during experiments, so a sample older than a few
seconds means the machine is between experiments (or the runner is gone): the panel says so.
The history runs over the last HISTORY_S seconds before the latest sample. On a run with several slots the
samples are grouped by the slot of the experiment they were taken for (two CPU slots both sample "cpu",
and two Ray nodes each have a "gpu0"), each block titled with its slot.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby

from rich.text import Text
from textual.widget import Widget

from autoresearch.runner.record.store import GpuSample
from autoresearch.tui import format as fmt
from autoresearch.tui.plot import Canvas, column_spans

HISTORY_S = 600.0
STALE_S = 5.0
LABEL_WIDTH = 5
BAR_STYLES = ("bold green", "bold yellow", "bold red")  # below 50%, below 90%, above


def bar(fraction: float, width: int) -> Text:
    """A horizontal gauge of width cells, coloured by how full it is."""
    fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
    done = round(fraction * width)
    style = BAR_STYLES[0 if fraction < 0.5 else 1 if fraction < 0.9 else 2]
    return Text.assemble(("━" * done, style), ("━" * (width - done), "grey23"))


def device_title(sample: GpuSample, now: float, slot: str | None = None) -> Text:
    """`gpu0 · 71°C · 312 W` or `CPU · no GPU driver (psutil)`, then how fresh the sample is; the slot's name in
    front when the block is a slot's (`cpu1 · CPU · …`, `node-b/gpu0 · 71°C`)."""
    named = bool(slot) and slot != sample.device  # the slot's name says more than the device's
    text = Text(f"{slot}", style="bold cyan") if named else Text()
    if sample.kind == "psutil":
        text.append(" · " if named else "").append_text(Text.assemble(("CPU", "bold"), " · no GPU driver (psutil)"))
    else:
        if not named:
            text = Text(sample.device, style="bold")
        elif not str(slot).endswith(f"/{sample.device}"):  # node-a/gpu0 already names gpu0
            text.append(" · ").append(sample.device, style="bold")
        for value, unit in ((sample.temp_c, "°C"), (sample.power_w, " W")):
            if value is not None:
                text.append(f" · {value:.0f}{unit}")
    age = now - sample.recorded_at
    if age > STALE_S:
        text.append(f" · idle, last sample {fmt.duration(age)} ago", style="dim")
    return text


def gauges(sample: GpuSample, cpu_scale: float, width: int) -> list[Text]:
    """The utilisation and memory lines of one sample."""
    cpu = sample.kind == "psutil"
    util, used, total = sample.util_percent or 0.0, sample.mem_used_mb or 0.0, sample.mem_total_mb or 0.0
    util_value = f" {util:3.0f}%"
    memory = f" {used / 1024:.1f}/{total / 1024:.1f} GB"
    bar_width = max(width - LABEL_WIDTH - max(len(util_value), len(memory)), 1)
    label = "cpu" if cpu else "util"
    lines = [Text(f"{label:<{LABEL_WIDTH}}") + bar(util / (cpu_scale if cpu else 100.0), bar_width) + Text(util_value),
             Text(f"{'ram' if cpu else 'mem':<{LABEL_WIDTH}}") + bar(used / total if total else 0.0, bar_width)
             + Text(memory)]
    if cpu and sample.proc_mem_mb is not None:
        lines.append(Text(f"{'':<{LABEL_WIDTH}}experiment {fmt.megabytes(sample.proc_mem_mb)}", style="dim"))
    return lines


def history(samples: Sequence[GpuSample], value: Callable[[GpuSample], float | None], y_max: float, width: int,
            height: int, style: str) -> list[Text]:
    """A braille line of value over the last HISTORY_S seconds of samples, 0 to y_max."""
    canvas = Canvas(width, height, (0.0, y_max))
    if samples:
        end = samples[-1].recorded_at
        points = [(s.recorded_at, v) for s in samples
                  if (v := value(s)) is not None and s.recorded_at >= end - HISTORY_S]
        spans = column_spans([p[0] for p in points], [p[1] for p in points], (end - HISTORY_S, end), canvas.columns)
        canvas.line(spans, style)
    return canvas.rows()


def device_lines(samples: Sequence[GpuSample], now: float, width: int, height: int,
                 slot: str | None = None) -> list[Text]:
    """One device's block: title, gauges, then the utilisation and memory history in the rows left."""
    latest = samples[-1]
    cpu = latest.kind == "psutil"
    busiest = max((s.util_percent or 0.0 for s in samples), default=0.0)
    cpu_scale = max(math.ceil(busiest / 100.0), 1) * 100.0  # whole cores: the busiest the processes were
    title = device_title(latest, now, slot)
    if slot:  # a slot's name first: cut the title rather than wrap it over the gauges
        title.truncate(width, overflow="ellipsis")
    lines = [title, *gauges(latest, cpu_scale, width)]
    room = height - len(lines)
    if room < 2:
        return lines[:height]
    util_rows, mem_rows = room - room // 2, room // 2
    plot_width = width - LABEL_WIDTH
    util = history(samples, lambda s: s.util_percent, cpu_scale if cpu else 100.0, plot_width, util_rows, "cyan")
    mem = history(samples, lambda s: s.mem_used_mb, latest.mem_total_mb or 1.0, plot_width, mem_rows, "magenta")
    lines += [Text(f"{'' if i else ('cpu' if cpu else 'util'):<{LABEL_WIDTH}}", style="dim") + row
              for i, row in enumerate(util)]
    lines += [Text(f"{'' if i else ('ram' if cpu else 'mem'):<{LABEL_WIDTH}}", style="dim") + row
              for i, row in enumerate(mem)]
    return lines


def panel_text(samples: Sequence[GpuSample], now: float, width: int, height: int,
               slots: Mapping[int, str] | None = None) -> Text:
    """Every sampled device's block (every slot's, when slots maps experiment ids to slot names), sharing the
    height."""
    if not samples:
        return Text("no samples yet: the runner samples the GPU (or, without one, the CPU) while an "
                    "experiment trains", style="dim")
    slots = slots or {}

    def key(sample: GpuSample) -> tuple[str, str]:
        slot = slots.get(sample.experiment_id) if sample.experiment_id is not None else None
        return (slot, "") if slot is not None else ("", sample.device)

    groups = [(slot, list(group)) for (slot, _), group in groupby(sorted(samples, key=lambda s: (*key(s), s.id)),
                                                                  key=key)]
    share = max(height // len(groups), 1)
    lines = [line for slot, group in groups for line in device_lines(group, now, width, share, slot or None)]
    return Text("\n", no_wrap=True, overflow="crop").join(lines[:height])


class GpuPanel(Widget):
    """Utilisation and memory per device, now and over the last ten minutes."""

    DEFAULT_CSS = "GpuPanel { border: round $secondary; border-title-color: $text; padding: 0 1; }"

    def __init__(self, clock: Callable[[], float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self._samples: tuple[GpuSample, ...] = ()
        self._slots: Mapping[int, str] = {}
        self._stale = False

    def on_mount(self) -> None:
        self.border_title = "GPU"
        self.set_interval(1.0, self._check_stale)

    def show(self, samples: tuple[GpuSample, ...], slots: Mapping[int, str] | None = None) -> None:
        """slots: the slot of each experiment id, on a run with several (their samples are grouped by slot)."""
        slots = slots or {}
        if samples is not self._samples or slots != self._slots:
            self._samples, self._slots = samples, slots
            self.border_title = "CPU · RAM" if samples and samples[-1].kind == "psutil" else "GPU"
            self.refresh()

    def _check_stale(self) -> None:
        """Redraw when the latest sample ages past STALE_S, or while it is stale (its age is shown)."""
        stale = bool(self._samples) and self.clock() - self._samples[-1].recorded_at > STALE_S
        if stale or stale != self._stale:
            self._stale = stale
            self.refresh()

    def render(self) -> Text:
        return panel_text(self._samples, self.clock(), self.size.width, self.size.height, self._slots)
