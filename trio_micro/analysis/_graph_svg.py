"""The service graph as an inline SVG: one section of the HTML report.

Services are boxes in columns by their depth from the callers nobody calls (the
:data:`~._graph.CLIENT` first); each edge is an arrow labelled with its call count, its
p99 latency and its errors, if any. No JavaScript, nothing fetched.
"""

from __future__ import annotations

from html import escape
from typing import Final

from ._graph import ServiceGraph

__all__ = ["render_service_graph"]

_BOX_W: Final = 150
_BOX_H: Final = 34
_COL_W: Final = 290
_ROW_H: Final = 84
_PAD: Final = 20


def _depths(graph: ServiceGraph) -> dict[str, int]:
    """Longest distance from a service nobody calls; cycles stop after len(services)."""
    services = graph.services()
    depth = dict.fromkeys(services, 0)
    for _ in range(len(services)):
        changed = False
        for e in graph.edges:
            if e.caller != e.callee and depth[e.callee] < depth[e.caller] + 1 <= len(services):
                depth[e.callee] = depth[e.caller] + 1
                changed = True
        if not changed:
            break
    return depth


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def render_service_graph(graph: ServiceGraph) -> str:
    """Return an ``<svg>`` element drawing ``graph`` (a ``<p>`` saying so when empty)."""
    if not graph.edges:
        return "<p class='muted'>no calls</p>"
    depth = _depths(graph)
    columns: dict[int, list[str]] = {}
    for service in sorted(depth, key=lambda s: (depth[s], s)):
        columns.setdefault(depth[service], []).append(service)
    at: dict[str, tuple[float, float]] = {}
    for col, services in columns.items():
        for row, service in enumerate(services):
            at[service] = (_PAD + col * _COL_W, _PAD + row * _ROW_H)
    width = _PAD * 2 + max(columns) * _COL_W + _BOX_W
    boxes_bottom = _PAD + (max(len(s) for s in columns.values()) - 1) * _ROW_H + _BOX_H
    edges: list[str] = []
    lane = 0  # edges that do not go to the next column go round below the boxes, one lane each
    for e in graph.edges:
        (x1, y1), (x2, y2) = at[e.caller], at[e.callee]
        label = f"{e.calls:,} calls · p99 {_fmt_ms(e.p99_ms)}"
        if e.errors:
            label += f" · {e.errors:,} errors"
        color = "#c23b3b" if e.errors else "#555"
        if e.caller == e.callee:  # a service calling itself: a loop under its box
            cx, cy = x1 + _BOX_W / 2, y1 + _BOX_H
            path = f"M{cx - 20},{cy} C{cx - 40},{cy + 40} {cx + 40},{cy + 40} {cx + 20},{cy}"
            lx, ly = cx, cy + 44
        elif depth[e.callee] == depth[e.caller] + 1:  # the next column: a straight arrow
            sx, sy, tx, ty = x1 + _BOX_W, y1 + _BOX_H / 2, x2, y2 + _BOX_H / 2
            path = f"M{sx},{sy} L{tx},{ty}"
            lx, ly = (sx + tx) / 2, (sy + ty) / 2 - 6
        else:  # further, or back: round below every box, in a lane of its own
            lane += 1
            sx, tx = x1 + _BOX_W * 0.6, x2 + _BOX_W * 0.4
            sy, ty = y1 + _BOX_H, y2 + _BOX_H
            bottom = boxes_bottom + 24 * lane
            # A cubic's middle is 3/4 of the way to its control points.
            control = bottom + (bottom - max(sy, ty)) / 3
            path = f"M{sx},{sy} C{sx},{control} {tx},{control} {tx},{ty}"
            lx, ly = (sx + tx) / 2, bottom + 13
        edges.append(
            f"<path d='{path}' fill='none' stroke='{color}' stroke-width='1.5' "
            "marker-end='url(#arrow)'/>"
            f"<text x='{lx:.1f}' y='{ly:.1f}' text-anchor='middle'>{escape(label)}</text>"
        )
    height = boxes_bottom + 24 * lane + _PAD + 50
    parts = [
        f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        "xmlns='http://www.w3.org/2000/svg' role='img' aria-label='service graph'>",
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#555'/></marker></defs>",
        *edges,
    ]
    for service, (x, y) in at.items():
        parts.append(
            f"<rect x='{x}' y='{y}' width='{_BOX_W}' height='{_BOX_H}' rx='6' "
            "fill='#eef3fa' stroke='#2f6fb3'/>"
            f"<text x='{x + _BOX_W / 2}' y='{y + _BOX_H / 2 + 4}' text-anchor='middle' "
            f"style='font-weight:600'>{escape(service)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
