"""What the browser tests measure on a page: boxes of charts, tick labels and markers."""

from __future__ import annotations

from typing import Any, Final

from ._cdp import Tab

Box = tuple[float, float, float, float]  # left, top, right, bottom in CSS px

# One evaluation gathers every chart's boxes (a round trip per element would be slow).
_MEASURE: Final = """(() => {
  const box = (e) => { const b = e.getBoundingClientRect();
                       return [b.left, b.top, b.right, b.bottom]; };
  return {
    width: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth,
    charts: [...document.querySelectorAll('svg')].map((svg) => {
      const plot = svg.querySelector('.plot-area');
      return {
        box: box(svg),
        plot: plot ? box(plot) : null,
        start: plot && plot.dataset.start ? Number(plot.dataset.start) : null,
        end: plot && plot.dataset.end ? Number(plot.dataset.end) : null,
        ticks: [...svg.querySelectorAll('text.tick')].map(
          (t) => ({text: t.textContent, box: box(t)})),
        titles: [...svg.querySelectorAll('text.axis-title')].map(box),
        marks: [...svg.querySelectorAll('g.mark')].map((g) => ({
          time: Number(g.dataset.time), box: box(g.querySelector('line')),
          label: g.querySelector('text') ? g.querySelector('text').textContent : null})),
      };
    }),
  };
})()"""


def measure(tab: Tab) -> dict[str, Any]:
    """The page's width and, for each ``<svg>``, the boxes the checks need."""
    result: dict[str, Any] = tab.evaluate(_MEASURE)
    return result


def overlap(a: Box, b: Box, slack: float = 0.5) -> bool:
    """Whether two boxes share more than ``slack`` px both ways."""
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def inside(inner: Box, outer: Box, slack: float = 0.5) -> bool:
    """Whether ``inner`` lies within ``outer`` (give or take ``slack`` px)."""
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def label_problems(chart: dict[str, Any]) -> list[str]:
    """Tick labels of ``chart`` that overlap another label, the plot area or an axis
    title, or stick out of the chart (clipped)."""
    out = []
    ticks = chart["ticks"]
    for i, tick in enumerate(ticks):
        box = tick["box"]
        if not inside(box, chart["box"]):
            out.append(f"{tick['text']!r} is clipped by the chart's edge")
        if chart["plot"] is not None and overlap(box, chart["plot"]):
            out.append(f"{tick['text']!r} overlaps the plot area")
        out += [
            f"{tick['text']!r} overlaps {other['text']!r}"
            for other in ticks[i + 1 :]
            if overlap(box, other["box"])
        ]
        out += [
            f"{tick['text']!r} overlaps the axis title" for t in chart["titles"] if overlap(box, t)
        ]
    return out
