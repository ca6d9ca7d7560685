"""How the report writes its figures, the same in HTML and Markdown; a missing one reads "not recorded"."""

import time

from autoresearch.runner.report.facts import NOISE_SIGMAS, Keep, NoiseFigure

NOT_RECORDED = "not recorded"


def bpb(value: float | None) -> str:
    """A val_bpb or test_bpb to six places."""
    return NOT_RECORDED if value is None else f"{value:.6f}"


def gain(value: float | None, over: float | None = None) -> str:
    """A gain in bpb (positive: better), with its share of `over` when given."""
    if value is None:
        return NOT_RECORDED
    share = f" ({value / over:.2%})" if over else ""
    return f"{value:+.6f}{share}"


def duration(seconds: float | None) -> str:
    """`42 s`, `12 min` or `7 h 05 min`."""
    if seconds is None:
        return NOT_RECORDED
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def usd(value: float | None) -> str:
    return NOT_RECORDED if value is None else f"${value:,.2f}"


def clock(timestamp: float | None) -> str:
    """A unix time as `2026-12-03 21:04 UTC`."""
    return NOT_RECORDED if timestamp is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def rate(value: float | None) -> str:
    return NOT_RECORDED if value is None else f"{value:.1f}"


def hour_span(first: int, hours: int) -> str:
    """Hours of a run counted from 1: `3`, or `4–6` for a span of several."""
    return f"{first + 1}" if hours == 1 else f"{first + 1}–{first + hours}"


def noise_verdict(noise: NoiseFigure, keeps: tuple[Keep, ...]) -> str:
    """Which kept changes (the baseline aside) gained less than NOISE_SIGMAS standard deviations of the noise."""
    changes = len(keeps) - 1
    bound = f"{NOISE_SIGMAS:g} standard deviations ({NOISE_SIGMAS * noise.std_bpb:.6f})"
    if changes <= 0:
        return f"No kept change yet to weigh against {bound}."
    within = [k for k in keeps if k.within_noise]
    if not within:
        return f"{'Every' if changes > 1 else 'The'} kept change gained more than {bound}."
    listed = ", ".join(f"#{k.seq} ({gain(k.gain)})" for k in within)
    return f"{len(within)} of {changes} kept changes gained less than {bound}, within the noise: {listed}."
