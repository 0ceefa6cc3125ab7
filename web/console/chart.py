"""Sends per minute as an SVG drawn on the server: no script, no library, no CDN.

A step area (one <path>, a level per run of equal minutes), a y scale rounded to 1-2-5
steps, and hour ticks every three hours. Everything written into the SVG is a
number or a label made here, so there is nothing to escape; the colours come from the
console's stylesheet (classes), which keeps the page within its CSP (no inline style).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 30
TICK_EVERY = 180  # minutes between labelled ticks


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^k at least `value` (and at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def sends_svg(per_minute: list[int], start: datetime) -> Markup:
    n = max(len(per_minute), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_h
    peak = max(per_minute, default=0)
    top = nice_ceiling(peak)
    dx = plot_w / n
    total = sum(per_minute)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">']
    peak_at = ""
    if peak:
        i = per_minute.index(peak)
        peak_at = f", peak {peak}/min at {(start + timedelta(minutes=i)):%H:%M} UTC"
    parts.append(f'<title id="chart-title">Sends per minute, last {n // 60} h (UTC): '
                 f'{total} sent{peak_at}</title>')
    for frac in (0.0, 0.5, 1.0):
        y = base - frac * plot_h
        label = _fmt(top * frac)
        parts.append(f'<line class="chart-grid" x1="{LEFT}" y1="{y:.1f}" '
                     f'x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        parts.append(f'<text class="chart-label" x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{label}</text>')
    if total:
        # a step area: one level per run of equal minutes (a quiet night is one segment)
        d = [f"M{LEFT} {base}"]
        i = 0
        while i < n:
            j = i
            while j + 1 < n and per_minute[j + 1] == per_minute[i]:
                j += 1
            y = base - per_minute[i] / top * plot_h
            d.append(f"V{y:.2f}H{LEFT + (j + 1) * dx:.2f}")
            i = j + 1
        d.append(f"V{base}Z")
        parts.append(f'<path class="chart-area" d="{"".join(d)}"/>')
    else:
        parts.append(f'<text class="chart-empty" x="{LEFT + plot_w / 2:.0f}" '
                     f'y="{TOP + plot_h / 2:.0f}" text-anchor="middle">'
                     'no sends in this window / 此时段无发送</text>')
    first_tick = (-start.minute) % 60  # ticks on whole hours
    for minute in range(first_tick, n + 1, 60):
        at = start + timedelta(minutes=minute)
        if at.hour % (TICK_EVERY // 60):
            continue
        x = LEFT + minute * dx
        parts.append(f'<line class="chart-tick" x1="{x:.1f}" y1="{base}" x2="{x:.1f}" '
                     f'y2="{base + 5}"/>')
        parts.append(f'<text class="chart-label" x="{x:.1f}" y="{base + 20}" '
                     f'text-anchor="middle">{at:%H:%M}</text>')
    parts.append(f'<line class="chart-axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" '
                 f'y2="{base}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and our own labels only


def _fmt(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


__all__ = ["nice_ceiling", "sends_svg"]
