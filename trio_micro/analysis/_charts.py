"""SVG chart primitives for the HTML report: axes with human tick labels, event markers.

Every chart is an ``<svg>`` whose plot area is a ``<rect class='plot-area'>``; on time
charts that rect carries ``data-start`` and ``data-end`` (epoch seconds at its left and
right edges) and each event marker is a ``<g class='mark' data-time=...>``, so that a
browser test can check where things are drawn. Tick labels have ``class='tick'``.
Labels are kept apart by construction: ticks closer than :data:`MIN_TICK_GAP` px are
dropped, and event labels are stacked in rows above the plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Final

from ._model import EventMark

__all__: list[str] = []  # all internal to the package: the report imports what it uses

WIDTH: Final = 760  # the viewBox width of every chart, px
_PLOT_H: Final = 170
_PAD_L: Final = 70  # room for "1,500 ms" at 11 px
_PAD_R: Final = 40  # half a time label, so the last one is not clipped
_PAD_B: Final = 30
_PAD_T: Final = 10
_MARK_ROW: Final = 13  # px per row of event labels
_MAX_MARK_ROWS: Final = 3
_MERGE_PX: Final = 12  # marks with one label this close share a line
_CHAR_W: Final = 6.2  # px per character of an 11 px label (system-ui, generous)
MIN_TICK_GAP: Final = 14  # px between the boxes of two x tick labels
COLORS: Final = ("#2f6fb3", "#e0873a", "#c23b3b", "#4d9e5c", "#8a5cb8", "#6b6b6b")
_MARK_COLOR: Final = "#8a5cb8"


def fmt_count(value: float) -> str:
    """``950``, ``3,950``, ``13k``, ``2.5M``: a count or rate for a person to read."""
    if math.isnan(value):
        return "-"
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2g}"


def fmt_ms(value: float) -> str:
    """``0.25 ms``, ``12 ms``, ``1.50 s``: a duration in milliseconds for a person to read."""
    if math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.3g} ms"


def fmt_ms_tick(value: float) -> str:
    """A round duration in ms as an axis label: ``0``, ``250 ms``, ``1.5 s``."""
    if value == 0:
        return "0"
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def fmt_time(seconds: float, digits: int = 0) -> str:
    """``HH:MM:SS`` (UTC) of ``seconds`` since the epoch, with ``digits`` decimals."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    text = stamp.strftime("%H:%M:%S")
    if digits:
        text += f"{stamp.microsecond / 1e6:.{digits}f}"[1:]
    return text


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round values from 0 to at least ``top`` (1, 2 or 5 times a power of ten apart)."""
    if not top > 0 or math.isinf(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [step * i for i in range(n + 1)]


_TIME_STEPS: Final = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 28 * 86400, 365 * 86400,
)  # fmt: skip


def time_ticks(start: float, end: float, count: int = 6) -> list[tuple[float, str]]:
    """Round moments between ``start`` and ``end`` with their labels, about ``count``."""
    if not end > start:
        return [(start, fmt_time(start))]
    step = next((s for s in _TIME_STEPS if (end - start) / s <= count), _TIME_STEPS[-1])
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    first = math.ceil(start / step - 1e-9) * step
    out: list[tuple[float, str]] = []
    t = first
    while t <= end + 1e-9:
        if step >= 86400:  # days apart: the date
            out.append((t, datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")))
        else:
            out.append((t, fmt_time(t, digits)))
        t = first + step * len(out)
    return out


def legend(items: Sequence[tuple[str, str]], marks: bool = False) -> str:
    """An HTML legend of ``(label, color)`` lines (and of event markers, if ``marks``)."""
    out = [
        f"<span><i style='background:{color}'></i>{escape(label)}</span>" for label, color in items
    ]
    if marks:
        out.append("<span><i class='m'></i>event (hover for details)</span>")
    return f"<div class='legend'>{''.join(out)}</div>"


@dataclass(frozen=True, slots=True)
class Frame:
    """The geometry of one chart: plot area, x range (data units) and y range.

    Build with :meth:`for_time` (x in epoch seconds, with event labels on top) or
    :meth:`plain`; :meth:`x` and :meth:`y` map data to px.
    """

    x0: float
    x1: float
    y_top: float
    top: float  # px from the top of the svg to the plot area
    marks: tuple[EventMark, ...] = ()

    @classmethod
    def plain(cls, x0: float, x1: float, y_top: float) -> Frame:
        """A frame without event markers."""
        return cls(x0, x1, y_top, _PAD_T)

    @classmethod
    def for_time(cls, start: float, end: float, y_top: float, marks: Sequence[EventMark]) -> Frame:
        """A time frame from ``start`` to ``end`` that shows the ``marks`` in that range."""
        shown = tuple(m for m in marks if start <= m.time <= end)
        frame = cls(start, end, y_top, _PAD_T, shown)
        rows = max((row for row, _ in frame._mark_labels()), default=-1) + 1
        return cls(start, end, y_top, _PAD_T + _MARK_ROW * rows, shown)

    @property
    def plot_w(self) -> float:
        return WIDTH - _PAD_L - _PAD_R

    @property
    def height(self) -> float:
        return self.top + _PLOT_H + _PAD_B

    def x(self, value: float) -> float:
        """The px x of ``value``."""
        span = self.x1 - self.x0
        return _PAD_L + (self.plot_w * (value - self.x0) / span if span > 0 else 0.0)

    def y(self, value: float) -> float:
        """The px y of ``value``."""
        return self.top + _PLOT_H * (1 - value / self.y_top if self.y_top > 0 else 1)

    def open(self, time_range: bool) -> str:
        """The ``<svg>`` start tag and the plot area's rect."""
        data = f" data-start='{self.x0!r}' data-end='{self.x1!r}'" if time_range else ""
        return (
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' "
            f"height='{self.height:.0f}' viewBox='0 0 {WIDTH} {self.height:.0f}' role='img'>"
            f"<rect class='plot-area' x='{_PAD_L}' y='{self.top}' width='{self.plot_w}' "
            f"height='{_PLOT_H}' fill='none'{data}/>"
        )

    def axes(
        self,
        y_label: str,
        y_ticks: Sequence[float],
        y_fmt: Callable[[float], str],
        x_ticks: Sequence[tuple[float, str]],
    ) -> str:
        """Axis lines, grid, tick labels and the y axis title."""
        bottom = self.top + _PLOT_H
        mid = self.top + _PLOT_H / 2
        out = [
            f"<line x1='{_PAD_L}' y1='{bottom}' x2='{WIDTH - _PAD_R}' y2='{bottom}' "
            f"stroke='#999'/><line x1='{_PAD_L}' y1='{self.top}' x2='{_PAD_L}' y2='{bottom}' "
            f"stroke='#999'/><text class='axis-title' x='12' y='{mid:.1f}' "
            f"transform='rotate(-90 12 {mid:.1f})' text-anchor='middle'>{escape(y_label)}</text>"
        ]
        for value in y_ticks:
            y = self.y(value)
            out.append(
                f"<line x1='{_PAD_L}' y1='{y:.1f}' x2='{WIDTH - _PAD_R}' y2='{y:.1f}' "
                f"stroke='#eee'/><text class='tick' x='{_PAD_L - 6}' y='{y + 4:.1f}' "
                f"text-anchor='end'>{escape(y_fmt(value))}</text>"
            )
        right = -math.inf
        for value, label in x_ticks:
            x = self.x(value)
            half = len(label) * _CHAR_W / 2
            if x - half < right + MIN_TICK_GAP:
                continue  # too close to the previous label
            right = x + half
            out.append(
                f"<line x1='{x:.1f}' y1='{bottom}' x2='{x:.1f}' y2='{bottom + 4}' "
                f"stroke='#999'/><text class='tick' x='{x:.1f}' y='{bottom + 17}' "
                f"text-anchor='middle'>{escape(label)}</text>"
            )
        return "".join(out)

    def _mark_labels(self) -> list[tuple[int, list[EventMark]]]:
        """The marks grouped by label and px (one group per line), each with its row.

        A group's label goes in the first row where it does not touch the label before it;
        a group that fits in no row of :data:`_MAX_MARK_ROWS` gets row -1 (hover only).
        """
        groups: list[list[EventMark]] = []
        for mark in self.marks:  # oldest first
            near = next(
                (
                    g
                    for g in groups
                    if g[0].label == mark.label
                    and abs(self.x(g[-1].time) - self.x(mark.time)) < _MERGE_PX
                ),
                None,
            )
            if near is None:
                groups.append([mark])
            else:
                near.append(mark)
        ends = [-math.inf] * _MAX_MARK_ROWS
        out = []
        for group in groups:
            left, right = _label_span(self.x(group[0].time), _mark_text(group))
            row = next((r for r in range(_MAX_MARK_ROWS) if ends[r] < left), -1)
            if row >= 0:
                ends[row] = right + 6
            out.append((row, group))
        return out

    def markers(self) -> str:
        """The event markers: a dashed line per group, its label above the plot."""
        out = []
        bottom = self.top + _PLOT_H
        for row, group in self._mark_labels():
            x = self.x(group[0].time)
            details = "\n".join(
                f"{fmt_time(m.time, 3)} {m.event}"
                + (f" service={m.service}" if m.service else "")
                + (f" server={m.server}" if m.server else "")
                for m in group
            )
            text = _mark_text(group)
            left, _ = _label_span(x, text)
            label = (
                f"<text class='mark-label' x='{left:.1f}' y='{self.top - 4 - _MARK_ROW * row}'>"
                f"{escape(text)}</text>"
                if row >= 0
                else ""
            )
            out.append(
                f"<g class='mark' data-time='{group[0].time!r}'><title>{escape(details)}</title>"
                f"<line x1='{x:.1f}' y1='{self.top - 2}' x2='{x:.1f}' y2='{bottom}' "
                f"stroke='{_MARK_COLOR}' stroke-width='1.5' stroke-dasharray='4 3'/>{label}</g>"
            )
        return "".join(out)


def _label_span(x: float, text: str) -> tuple[float, float]:
    """Where the label of a marker at ``x`` goes: right of the line, or left near the edge."""
    width = len(text) * _CHAR_W
    if x + 2 + width <= WIDTH:
        return x + 2, x + 2 + width
    return x - 2 - width, x - 2


def _mark_text(group: Sequence[EventMark]) -> str:
    return group[0].label + (f" \u00d7{len(group)}" if len(group) > 1 else "")
