"""The report as Markdown, the HTML page's twin: the chart is a PNG file beside it, linked by name.

A linked file, not a data: URI, because the places Markdown is read (GitHub, GitLab, most editors) refuse
data: images. Every recorded string is text, never markup: md() backslash-escapes the characters that
make links, images, emphasis, code, tables and raw HTML, and code blocks are fenced longer than any run
of backticks inside them.
"""

import re

from autoresearch.runner.report import fmt
from autoresearch.runner.report.facts import BETWEEN, Keep, Report
from autoresearch.runner.report.queries import HourUse

MARKUP = re.compile(r"([\\`*_{}\[\]()<>#+!|~$&:])")


def md(text: str) -> str:
    """text shown as itself in Markdown (links, images, HTML, emphasis and table cells escaped)."""
    return MARKUP.sub(r"\\\1", " ".join(text.split()))


def fenced(text: str, info: str = "") -> str:
    """text in a code block whose fence no backtick run in text can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def render_markdown(report: Report, chart_name: str) -> str:
    """The Markdown of report, linking the chart at chart_name (a file beside it)."""
    h = report.headline
    title = f"# Run {md(h.tag)}"
    if h.baseline and h.best:
        title += f": val_bpb {h.baseline.val_bpb:.6f} → {h.best.val_bpb:.6f}"
    ended = f"ended {fmt.clock(h.ended_at)}" if h.ended_at else f"last seen {fmt.clock(h.started_at + h.wall_s)}"
    total = (h.baseline.val_bpb - h.best.val_bpb) if h.baseline and h.best else None
    kind = h.device_kind or "device"
    rows = [
        ("baseline val_bpb", f"{fmt.bpb(h.baseline and h.baseline.val_bpb)} "
                             f"(test_bpb {fmt.bpb(h.baseline and h.baseline.test_bpb)})"),
        ("best val_bpb", f"{fmt.bpb(h.best and h.best.val_bpb)} (test_bpb {fmt.bpb(h.best and h.best.test_bpb)})"
                         + (f", #{h.best.seq}" if h.best else "")),
        ("gain over the baseline", fmt.gain(total, h.baseline.val_bpb if h.baseline else None)),
        ("experiments", f"{h.experiments:,}" + (f" (and {h.seeds:,} noise or confirm seeds)" if h.seeds else "")),
        ("kept", f"{h.keeps:,}" + (f" (the baseline and {h.keeps - 1:,} improvements)" if h.keeps else "")),
        ("experiments per hour", fmt.rate(h.per_hour)),
        (f"{kind}-hours", (f"{h.device_hours:.2f} (training containers' wall time)" if h.device_hours is not None
                           else fmt.NOT_RECORDED)),
        ("agent dollars", fmt.usd(h.spent_usd)),
        ("wall time", fmt.duration(h.wall_s)),
    ]
    lines = [title, "",
             " · ".join([f"state {h.state}", f"agent {md(h.agent)}", f"device {md(h.device or fmt.NOT_RECORDED)}",
                         f"started {fmt.clock(h.started_at)}", ended]), "",
             "| figure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
             "## Progress", "", f"![progress of run {md(h.tag)}]({chart_name})", "",
             f"## Kept changes ({len(report.keeps)})", ""]
    for k in report.keeps:
        lines += _keep(k)
    if not report.keeps:
        lines += ["No experiment was kept.", ""]
    lines += ["## What failed", ""]
    if report.failures:
        lines += ["| status | count | most common reasons |", "| --- | ---: | --- |"]
        lines += [f"| {g.status} | {g.count:,} | " + "; ".join(f"{md(r)} (×{n})" for r, n in g.reasons) + " |"
                  for g in report.failures]
    else:
        lines.append("Nothing was discarded and nothing failed.")
    lines += ["", f"### Rule breaks ({report.rule_breaks_total:,})", ""]
    for b in report.rule_breaks:
        lines.append(f"- **#{b.seq} {b.status}**: {md(b.description)}"
                     + (f" ({md(b.exit_reason)})" if b.exit_reason else ""))
        for f in b.findings:
            lines += [f"  - {md(f.rule_id)} ({f.severity}, {f.action}): {md(f.message)}", "",
                      *("    " + line for line in fenced(f.evidence, "json").splitlines()), ""]
    if report.rule_breaks_total > len(report.rule_breaks):
        lines.append(f"{report.rule_breaks_total - len(report.rule_breaks)} more: `autoresearch audit` lists them.")
    if not report.rule_breaks_total:
        lines.append("No violation and nothing blocked.")
    lines += ["", "## Noise", "", *_noise(report), "",
              f"## {h.device_kind or 'Device'} utilisation over the run", "",
              *_hours(report.hours), "", "## Where the time went", "", *_time(report), "",
              f"Generated {fmt.clock(report.generated_at)} by `autoresearch report` from the store and git of this "
              "workspace. A figure the record lacks reads “not recorded”.", ""]
    return "\n".join(lines)


def _keep(k: Keep) -> list[str]:
    badge = " — *within the noise*" if k.within_noise else ""
    gain = "the baseline" if k.gain is None else f"gain {fmt.gain(k.gain)} · total gain {fmt.gain(k.total_gain)}"
    lines = [f"### #{k.seq} {md(k.description)}{badge}", "",
             f"val_bpb **{fmt.bpb(k.val_bpb)}** · {gain} · test_bpb {fmt.bpb(k.test_bpb)} · "
             f"commit {md(k.commit or fmt.NOT_RECORDED)}", "",
             f"Agent's reasoning: {md(k.reasoning) if k.reasoning else '*not recorded*'}", ""]
    if k.diff is None:
        lines += [f"Diff against its parent: {fmt.NOT_RECORDED}.", ""]
    elif not k.diff:
        lines += ["train.py as its parent had it (no change).", ""]
    else:
        lines += ["<details><summary>diff against its parent</summary>", "", fenced(k.diff, "diff"), "",
                  "</details>", ""]
    return lines


def _noise(report: Report) -> list[str]:
    noise = report.noise
    if noise is None:
        return [f"Noise: {fmt.NOT_RECORDED}. `autoresearch noise N` measures it (N seeds of the best train.py)."]
    where = "measured by this run" if noise.own else "the workspace's latest `autoresearch noise`"
    commit = f" of commit {noise.commit}" if noise.commit else ""
    verdict = fmt.noise_verdict(noise, report.keeps)
    return [f"Standard deviation **{noise.std_bpb:.6f}** bpb (mean {noise.mean_bpb:.6f}) over {noise.runs} runs"
            f"{commit}, {where}.", "", verdict]


def _hours(hours: tuple[HourUse, ...]) -> list[str]:
    if not hours:
        return [f"Utilisation: {fmt.NOT_RECORDED} (no device samples for this run)."]
    lines = ["| hour | device | mean use | samples | devices |", "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {fmt.hour_span(u.hour, u.hours)} | {'GPU' if u.kind == 'nvml' else 'CPU (100% is one core)'} | "
              f"{'' if u.util_percent is None else f'{u.util_percent:.0f}%'} | {u.samples:,} | {u.devices} |"
              for u in hours]
    return lines


def _time(report: Report) -> list[str]:
    use = report.time
    if use is None:
        return [f"Timings: {fmt.NOT_RECORDED}."]
    capacity = use.wall_s * use.slots
    lines = ["| part (summed over experiments) | time | share |", "| --- | ---: | ---: |"]
    lines += [f"| {label}{' (what is left of the wall time)' if label == BETWEEN else ''} | {fmt.duration(seconds)} | "
              f"{seconds / capacity if capacity else 0.0:.1%} |" for label, seconds in use.parts]
    return lines
