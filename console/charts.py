"""Small server-rendered SVG charts: a series of (time, value) points as a line chart.

Pure functions returning SVG text: no script, no ``style`` attribute (the console's CSP
forbids both), only SVG presentation attributes. Every piece of text is escaped here, so the
result may be put into a page as markup. The chart is an image with a <title> and a <desc>
(named by ``aria-labelledby``) saying what it shows, so a screen reader gets the numbers too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

WIDTH = 560
HEIGHT = 180
# Room for the axis labels around the plot area.
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 16, 32
_STROKE = "#0b5cad"
_AXIS = "#4d5560"
_GRID = "#c9d1d9"


@dataclass(frozen=True)
class Scale:
    """A linear map from a domain [low, high] onto a range [start, end] of pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        if self.high == self.low:
            # One value only (or one point): in the middle of the range.
            return (self.start + self.end) / 2
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)


def value_scale(values: Sequence[float], start: float, end: float) -> Scale:
    """The y scale of ``values``: from zero (or the least value, when negative) to the
    greatest; all zeros still give a usable axis [0, 1]."""
    low = min(0.0, *values) if values else 0.0
    high = max(0.0, *values) if values else 1.0
    if high == low:
        high = low + 1.0
    return Scale(low, high, start, end)


def time_scale(times: Sequence[datetime], start: float, end: float) -> Scale:
    """The x scale of ``times``: the first to the last (a single time sits in the middle)."""
    stamps = [t.timestamp() for t in times]
    return Scale(min(stamps), max(stamps), start, end)


def _number(value: float) -> str:
    """A coordinate, short: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _time_label(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def line_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    chart_id: str,
    title: str,
    description: str,
    unit: str = "",
    format_value: Callable[[float], str] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An SVG line chart of ``points`` (sorted by time here), titled and described; it is
    drawn on a ``width`` by ``height`` grid and scales to the width of its container.

    ``chart_id`` makes the ids of its <title> and <desc> unique in the page; ``unit`` follows
    every value in the labels (``12 ms``). No points gives a chart saying there is no data.
    """
    shown = format_value or (lambda v: f"{v:,.0f}")

    def label(value: float) -> str:
        return f"{shown(value)} {unit}".strip()

    ordered = sorted(points, key=lambda p: p[0])
    ident = escape(chart_id, quote=True)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
        f' width="100%" viewBox="0 0 {width} {height}"'
        f' aria-labelledby="{ident}-title {ident}-desc" id="{ident}">',
        f'<title id="{ident}-title">{escape(title)}</title>',
    ]
    if not ordered:
        parts.append(f'<desc id="{ident}-desc">{escape(description)} No data yet.</desc>')
        parts.append(
            f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle"'
            f' fill="{_AXIS}" font-size="14">No data yet</text>'
        )
        parts.append("</svg>")
        return "".join(parts)

    values = [v for _, v in ordered]
    left, right, top, bottom = _LEFT, width - _RIGHT, _TOP, height - _BOTTOM
    x = time_scale([t for t, _ in ordered], left, right)
    y = value_scale(values, bottom, top)
    first, last = ordered[0][0], ordered[-1][0]
    summary = (
        f"{escape(description)} {len(ordered)} point{'s' if len(ordered) != 1 else ''}"
        f" from {escape(_time_label(first))} to {escape(_time_label(last))};"
        f" least {escape(label(min(values)))}, greatest {escape(label(max(values)))},"
        f" latest {escape(label(values[-1]))}."
    )
    parts.append(f'<desc id="{ident}-desc">{summary}</desc>')
    # Axes, the top gridline, and their labels.
    parts.append(
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_AXIS}"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{_AXIS}"/>'
        f'<line x1="{left}" y1="{top}" x2="{right}" y2="{top}" stroke="{_GRID}"'
        ' stroke-dasharray="4 4"/>'
    )
    parts.append(
        f'<text x="{left - 6}" y="{_number(top + 4)}" text-anchor="end" font-size="11"'
        f' fill="{_AXIS}">{escape(label(y.high))}</text>'
        f'<text x="{left - 6}" y="{_number(bottom + 4)}" text-anchor="end" font-size="11"'
        f' fill="{_AXIS}">{escape(label(y.low))}</text>'
        f'<text x="{left}" y="{height - 8}" text-anchor="start" font-size="11"'
        f' fill="{_AXIS}">{escape(_time_label(first))}</text>'
    )
    if last != first:
        parts.append(
            f'<text x="{right}" y="{height - 8}" text-anchor="end" font-size="11"'
            f' fill="{_AXIS}">{escape(_time_label(last))}</text>'
        )
    coordinates = [(x(t.timestamp()), y(v)) for t, v in ordered]
    if len(coordinates) > 1:
        path = " ".join(f"{_number(px)},{_number(py)}" for px, py in coordinates)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{_STROKE}" stroke-width="2"/>')
    for (when, value), (px, py) in zip(ordered, coordinates, strict=True):
        parts.append(
            f'<circle cx="{_number(px)}" cy="{_number(py)}" r="3.5" fill="{_STROKE}">'
            f"<title>{escape(_time_label(when))}: {escape(label(value))}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
