"""The report as one self-contained HTML page: inline CSS, the chart as a data: URI, no script, no network.

A Content-Security-Policy forbids everything but inline styles and data: images, so even text that escaped
its escaping could neither run nor fetch. Every recorded string goes through html.escape.
"""

import base64
import time
from html import escape

from autoresearch.runner.report import fmt
from autoresearch.runner.report.facts import (
    BETWEEN,
    FailureGroup,
    Headline,
    Keep,
    NoiseFigure,
    Report,
    RuleBreak,
    TimeUse,
)
from autoresearch.runner.report.queries import HourUse

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1d2330;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 12px;padding-bottom:4px;border-bottom:1px solid
#dde1e8}h3{font-size:15px;margin:18px 0 6px}
.sub,.note,footer{color:#5b6475}.note{font-size:13px}
code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px;margin-top:12px}
.cards.scores{grid-template-columns:repeat(auto-fill,minmax(280px,1fr));margin-top:18px}
.cards.scores .v{font-size:28px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 14px}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6475}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .s{font-size:12.5px;color:#5b6475}
.chart{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:8px}
.chart img{display:block;width:100%;height:auto}
.keep{background:#fff;border:1px solid #dde1e8;border-left:4px solid #1a9641;border-radius:6px;padding:10px 14px;
margin:10px 0}
.keep .head{font-weight:600}.keep .figs{font-size:13.5px;font-variant-numeric:tabular-nums}
.keep .why{font-size:13.5px;color:#3b4456;margin-top:2px}
.badge{display:inline-block;font-size:11.5px;font-weight:600;padding:0 7px;border-radius:9px;margin-left:6px;
background:#fde9c8;color:#8a4b00}
details{margin-top:6px}summary{cursor:pointer;color:#2856a3;font-size:13.5px}
pre{background:#f3f4f7;border:1px solid #e1e4ea;border-radius:6px;padding:8px 10px;overflow-x:auto;
white-space:pre-wrap;word-break:break-word;margin:6px 0}
.add{color:#116329;background:#e6f6ea}.del{color:#a4161a;background:#fdecec}.hunk{color:#6f42c1}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8;font-size:13.5px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td ul{margin:0;padding-left:18px}
.bar{height:10px;background:#e8ebf0;border-radius:5px;min-width:120px}
.bar span{display:block;height:10px;border-radius:5px;background:#3a78c2}
.bar span.t{background:#1a9641}
.break{background:#fff;border:1px solid #dde1e8;border-left:4px solid #7b3294;border-radius:6px;padding:8px 14px;
margin:8px 0}
footer{margin-top:40px;font-size:12.5px}
"""


def render_html(report: Report, png: bytes) -> str:
    """The page of report, with png (the progress chart) inline."""
    h = report.headline
    body = [
        _header(h),
        _cards(h),
        "<h2>Progress</h2>",
        f'<div class="chart"><img alt="progress of run {escape(h.tag)}: val_bpb of every experiment" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></div>',
        f"<h2>Kept changes ({len(report.keeps)})</h2>",
        *([_keep(k) for k in report.keeps] or ["<p>No experiment was kept.</p>"]),
        "<h2>What failed</h2>",
        _failures(report.failures, h.experiments),
        _rule_breaks(report.rule_breaks, report.rule_breaks_total),
        "<h2>Noise</h2>",
        _noise(report.noise, report.keeps),
        f"<h2>{h.device_kind or 'Device'} utilisation over the run</h2>",
        _hours(report.hours, h.started_at),
        "<h2>Where the time went</h2>",
        _time(report.time),
        f"<footer>Generated {escape(fmt.clock(report.generated_at))} by <code>autoresearch report</code> from the "
        "store and git of this workspace. A figure the record lacks reads “not recorded”.</footer>",
    ]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>autoresearch report: run {escape(h.tag)}</title><style>{CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def _header(h: Headline) -> str:
    title = f"Run {escape(h.tag)}"
    if h.baseline and h.best:
        title += f": val_bpb {h.baseline.val_bpb:.6f} → {h.best.val_bpb:.6f}"
    ended = f"ended {fmt.clock(h.ended_at)}" if h.ended_at else f"last seen {fmt.clock(h.started_at + h.wall_s)}"
    facts = [f"state {h.state}", f"agent {h.agent}", f"device {h.device or fmt.NOT_RECORDED}",
             f"started {fmt.clock(h.started_at)}", ended]
    return f"<header><h1>{title}</h1><p class=\"sub\">{escape(' · '.join(facts))}</p></header>"


def _cards(h: Headline) -> str:
    total = (h.baseline.val_bpb - h.best.val_bpb) if h.baseline and h.best else None
    kind = h.device_kind or "device"
    cards = [
        ("baseline val_bpb", fmt.bpb(h.baseline and h.baseline.val_bpb),
         f"test_bpb {fmt.bpb(h.baseline and h.baseline.test_bpb)}"),
        ("best val_bpb", fmt.bpb(h.best and h.best.val_bpb),
         f"test_bpb {fmt.bpb(h.best and h.best.test_bpb)}" + (f" · #{h.best.seq}" if h.best else "")),
        ("gain", fmt.gain(total), "over the baseline" + (f" ({total / h.baseline.val_bpb:.2%})"
                                                          if total is not None and h.baseline else "")),
        ("experiments", f"{h.experiments:,}", f"and {h.seeds:,} noise or confirm seeds" if h.seeds else "candidates"),
        ("kept", f"{h.keeps:,}", f"the baseline and {h.keeps - 1:,} improvements" if h.keeps else "none"),
        ("experiments per hour", fmt.rate(h.per_hour), "over the wall time"),
        (f"{kind}-hours", fmt.NOT_RECORDED if h.device_hours is None else f"{h.device_hours:.2f}",
         "training containers' wall time" if h.device_kind else "device not recorded"),
        ("agent dollars", fmt.usd(h.spent_usd), "the agent's model calls"),
        ("wall time", fmt.duration(h.wall_s), "start to end" if h.ended_at else "start to its last sign of life"),
    ]
    return _card_row("scores", cards[:3]) + _card_row("figures", cards[3:])


def _card_row(group: str, cards: list[tuple[str, str, str]]) -> str:
    """(name, value, note) cards, all text as data."""
    return f'<section class="cards {group}">' + "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="s">{escape(s)}</div></div>' for k, v, s in cards) + "</section>"


def _keep(k: Keep) -> str:
    head = f"#{k.seq} {escape(k.description)}"
    badge = ' <span class="badge">within the noise</span>' if k.within_noise else ""
    gains = ["the baseline"] if k.gain is None else [f"gain {fmt.gain(k.gain)}",
                                                      f"total gain {fmt.gain(k.total_gain)}"]
    figures = [f"val_bpb <b>{fmt.bpb(k.val_bpb)}</b>", *gains, f"test_bpb {fmt.bpb(k.test_bpb)}",
               f"commit <code>{escape(k.commit or fmt.NOT_RECORDED)}</code>"]
    why = escape(k.reasoning) if k.reasoning else f"<i>{fmt.NOT_RECORDED}</i>"
    return (f'<article class="keep"><div class="head">{head}{badge}</div>'
            f'<div class="figs">{" · ".join(figures)}</div>'
            f'<div class="why">agent’s reasoning: {why}</div>{_diff(k.diff)}</article>')


def _diff(diff: str | None) -> str:
    if diff is None:
        return f'<p class="note">diff against its parent: {fmt.NOT_RECORDED}</p>'
    if not diff:
        return '<p class="note">train.py as its parent had it (no change)</p>'
    lines = []
    for line in diff.splitlines():
        kind = ("add" if line.startswith("+") and not line.startswith("+++") else
                "del" if line.startswith("-") and not line.startswith("---") else
                "hunk" if line.startswith("@@") else "")
        lines.append(f'<span class="{kind}">{escape(line)}</span>' if kind else escape(line))
    return f'<details><summary>diff against its parent</summary><pre>{chr(10).join(lines)}</pre></details>'


def _failures(groups: tuple[FailureGroup, ...], experiments: int) -> str:
    if not groups:
        return "<p>Nothing was discarded and nothing failed.</p>"
    rows = []
    for g in groups:
        reasons = "".join(f"<li>{escape(reason)} <span class=\"note\">×{count}</span></li>"
                          for reason, count in g.reasons)
        share = f"{g.count / experiments:.0%}" if experiments else ""
        rows.append(f'<tr><td>{escape(g.status)}</td><td class="n">{g.count:,}</td><td class="n">{share}</td>'
                    f"<td><ul>{reasons}</ul></td></tr>")
    return ('<table><tr><th>status</th><th>count</th><th>share</th><th>most common reasons</th></tr>'
            + "".join(rows) + "</table>")


def _rule_breaks(breaks: tuple[RuleBreak, ...], total: int) -> str:
    if not total:
        return "<h3>Rule breaks</h3><p>No violation and nothing blocked.</p>"
    parts = [f"<h3>Rule breaks ({total:,}): violations and blocked proposals, with their evidence</h3>"]
    for b in breaks:
        findings = "".join(
            f"<li><code>{escape(f.rule_id)}</code> ({escape(f.severity)}, {escape(f.action)}): {escape(f.message)}"
            f"<pre>{escape(f.evidence)}</pre></li>" for f in b.findings) or f"<li>findings: {fmt.NOT_RECORDED}</li>"
        reason = f'<div class="note">{escape(b.exit_reason)}</div>' if b.exit_reason else ""
        parts.append(f'<div class="break"><b>#{b.seq} {escape(b.status)}</b>: {escape(b.description)}{reason}'
                     f"<ul>{findings}</ul></div>")
    if total > len(breaks):
        parts.append(f'<p class="note">{total - len(breaks)} more: <code>autoresearch audit</code> lists them '
                     "all.</p>")
    return "".join(parts)


def _noise(noise: NoiseFigure | None, keeps: tuple[Keep, ...]) -> str:
    if noise is None:
        return (f"<p>Noise: {fmt.NOT_RECORDED}. <code>autoresearch noise N</code> measures it (N seeds of the "
                "best train.py).</p>")
    where = "measured by this run" if noise.own else "the workspace's latest <code>autoresearch noise</code>"
    commit = f" of commit <code>{escape(noise.commit)}</code>" if noise.commit else ""
    verdict = f"<p>{escape(fmt.noise_verdict(noise, keeps))}</p>"
    return (f"<p>Standard deviation <b>{noise.std_bpb:.6f}</b> bpb (mean {noise.mean_bpb:.6f}) over "
            f"{noise.runs} runs{commit}, {where}.</p>{verdict}")


def _hours(hours: tuple[HourUse, ...], started_at: float) -> str:
    if not hours:
        return f"<p>Utilisation: {fmt.NOT_RECORDED} (no device samples for this run).</p>"
    scale = max([100.0, *(u.util_percent or 0.0 for u in hours)])
    rows = []
    for u in hours:
        what = "GPU" if u.kind == "nvml" else "CPU (100% is one core)"
        util = "" if u.util_percent is None else f"{u.util_percent:.0f}%"
        width = 0.0 if u.util_percent is None else 100 * u.util_percent / scale
        clock = time.strftime("%a %H:%M", time.gmtime(started_at + 3600 * u.hour))
        rows.append(f'<tr><td class="n">{fmt.hour_span(u.hour, u.hours)}</td><td>{clock} UTC</td>'
                    f'<td>{escape(what)}</td><td class="n">{util}</td><td><div class="bar">'
                    f'<span style="width:{width:.1f}%"></span></div></td><td class="n">{u.samples:,}</td>'
                    f'<td class="n">{u.devices}</td></tr>')
    return ('<table><tr><th>hour</th><th>from</th><th>device</th><th>mean use</th><th></th><th>samples</th>'
            "<th>devices</th></tr>" + "".join(rows) + "</table>")


def _time(use: TimeUse | None) -> str:
    if use is None:
        return f"<p>Timings: {fmt.NOT_RECORDED}.</p>"
    capacity = use.wall_s * use.slots
    training = dict(use.parts).get("training", 0.0)
    slots = f" × {use.slots} slots" if use.slots > 1 else ""
    lead = (f"<p>Wall time {fmt.duration(use.wall_s)}{slots}: training took "
            f"{training / capacity:.0%} of it.</p>" if capacity else "")
    rows = []
    for label, seconds in use.parts:
        share = seconds / capacity if capacity else 0.0
        bar = "t" if label == "training" else ""
        note = " (what is left of the wall time)" if label == BETWEEN else ""
        rows.append(f"<tr><td>{escape(label)}{note}</td><td class=\"n\">{fmt.duration(seconds)}</td>"
                    f'<td class="n">{share:.1%}</td><td><div class="bar"><span class="{bar}" '
                    f'style="width:{min(share, 1.0) * 100:.1f}%"></span></div></td></tr>')
    return (lead + "<table><tr><th>part (summed over experiments)</th><th>time</th><th>share</th><th></th></tr>"
            + "".join(rows) + "</table>")
