"""The lag chart of the network page: each node's events behind over time, drawn as inline
SVG (no script, nothing to fetch), with its legend and summary as text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from markupsafe import escape

from services.shared.status_views import Series

#: Colours of the chart's lines, one per node (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


@dataclass(frozen=True)
class Chart:
    """An SVG line chart of events behind over time, as markup-safe text and a summary."""

    svg: str
    summary: str
    #: Each line's label, colour and latest value: the legend, written beside the chart.
    lines: Sequence[tuple[str, str, int]] = field(default_factory=tuple)


def lag_chart(series: Iterable[Series], *, width: int = 720, height: int = 220) -> Chart:
    """Draw each series' events behind over the time the samples span.

    Empty when no series has two samples. The axis labels are text in the SVG, each
    line carries a ``<title>`` with its node and value, and the legend
    (``Chart.lines``) is written beside it as text, so the chart reads without colour.
    """
    drawn = [s for s in series if s.samples]
    if not drawn or sum(len(s.samples) for s in drawn) < 2:
        return Chart("", "no heartbeats yet")
    start = min(s.samples[0].at for s in drawn)
    end = max(s.samples[-1].at for s in drawn)
    span = max((end - start).total_seconds(), 1.0)
    top = max(max(p.events_behind for p in s.samples) for s in drawn)
    top = max(top, 1)
    left, right, upper, lower = 56, 12, 12, 28
    plot_w, plot_h = width - left - right, height - upper - lower

    def x(at: datetime) -> float:
        return left + (at - start).total_seconds() / span * plot_w

    def y(value: int) -> float:
        return upper + plot_h - value / top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="lag-title">',
        f'<title id="lag-title">Events behind per node, over the last {_span_text(span)}</title>',
        f'<line x1="{left}" y1="{upper + plot_h}" x2="{left + plot_w}" y2="{upper + plot_h}" '
        'stroke="#888"/>',
        f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}" stroke="#888"/>',
        f'<text x="{left - 6}" y="{upper + 4}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{left - 6}" y="{upper + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">-{_span_text(span)}</text>',
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="11">'
        f"{end:%H:%M:%S} UTC</text>",
    ]
    lines: list[tuple[str, str, int]] = []
    for index, one in enumerate(drawn):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{x(p.at):.1f},{y(p.events_behind):.1f}" for p in one.samples)
        label = escape(one.label)
        last = one.samples[-1].events_behind
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{label}: {last} events behind</title></polyline>"
        )
        lines.append((one.label, colour, last))
    parts.append("</svg>")
    summary = ", ".join(f"{s.label}: {s.samples[-1].events_behind} behind" for s in drawn)
    return Chart("".join(parts), summary, lines)


def _span_text(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
