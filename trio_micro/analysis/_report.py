"""One self-contained HTML report with inline SVG plots (no JavaScript, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

from ._graph import ServiceGraph
from ._graph_svg import render_service_graph
from ._model import LogSummary
from ._sketch import RELATIVE_ERROR, LatencySketch
from ._trace import Trace

__all__ = ["render_html_report"]

_W: Final = 760  # plot width in px
_H: Final = 220
_PAD_L: Final = 64
_PAD_R: Final = 16
_PAD_T: Final = 14
_PAD_B: Final = 36
_COLORS: Final = ("#2f6fb3", "#e0873a", "#c23b3b", "#4d9e5c", "#8a5cb8", "#6b6b6b")
_CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{padding:3px 9px;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
.muted{color:#777}.err{color:#c23b3b}svg{display:block;margin:6px 0}
svg text{font:11px system-ui,sans-serif;fill:#444}
.kpi{display:inline-block;margin:0 26px 8px 0}.kpi b{display:block;font-size:20px}
"""


def render_html_report(
    summary: LogSummary,
    *,
    title: str = "trio-micro logs",
    trace: Trace | None = None,
    graph: ServiceGraph | None = None,
) -> str:
    """Return a complete HTML page that shows ``summary`` (``trace`` and ``graph``, if given).

    Plots: latency histogram, latency percentiles and throughput over time, errors over
    time, calls and p99 per replica, and the trace waterfall. Tables: methods, slowest
    calls, recent errors, malformed input. Everything is inline (SVG and CSS).
    """
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _kpis(summary),
    ]
    if graph is not None:  # its own section, drawn by ._graph_svg
        parts += ["<h2>Service graph</h2>", render_service_graph(graph)]
    if trace is not None:
        parts += ["<h2>Trace ", escape(trace.trace_id), "</h2>", _waterfall(trace)]
    if summary.calls:
        latency = summary.latency()
        parts += [
            "<h2>Latency distribution</h2>",
            _histogram(latency),
            "<h2>Latency percentiles over time</h2>",
            _percentile_chart(summary),
            "<h2>Throughput over time</h2>",
            _throughput_chart(summary),
            "<h2>Errors over time</h2>",
            _error_chart(summary),
            "<h2>Methods</h2>",
            _methods_table(summary),
            "<h2>Replicas</h2>",
            _replica_bars(summary),
            *(["<h2>Events counted</h2>", _events_table(summary)] if summary.event_counts else []),
            "<h2>Slowest calls</h2>",
            _slowest_table(summary),
            "<h2>Errors</h2>",
            _errors_table(summary),
        ]
    parts += ["<h2>Input</h2>", _input_table(summary), "</body></html>"]
    return "".join(parts)


def _fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.3g} ms"


def _fmt_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def _kpis(summary: LogSummary) -> str:
    first, last = summary.first, summary.last
    span = f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC" if first and last else ""
    items = [("calls", f"{summary.calls:,}"), ("errors", f"{summary.errors:,}")]
    if summary.calls:
        latency = summary.latency()
        items += [
            ("p50", _fmt_ms(latency.quantile(0.5))),
            ("p99", _fmt_ms(latency.quantile(0.99))),
            ("max", _fmt_ms(latency.max)),
        ]
    items.append(("malformed lines", f"{summary.input.malformed_total:,}"))
    cells = "".join(f"<span class='kpi'>{k}<b>{escape(v)}</b></span>" for k, v in items)
    note = f"latencies within {RELATIVE_ERROR:.0%} (relative)"
    return f"<p>{cells}</p><p class='muted'>{escape(span)}; {note}</p>"


def _svg_open(height: int = _H) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{height}' "
        f"viewBox='0 0 {_W} {height}' role='img'>"
    )


def _axes(y_max: float, y_label: str, x_ticks: Sequence[tuple[float, str]]) -> str:
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    out = [
        f"<line x1='{_PAD_L}' y1='{_PAD_T + plot_h}' x2='{_W - _PAD_R}' "
        f"y2='{_PAD_T + plot_h}' stroke='#999'/>",
        f"<line x1='{_PAD_L}' y1='{_PAD_T}' x2='{_PAD_L}' y2='{_PAD_T + plot_h}' stroke='#999'/>",
        f"<text x='12' y='{_PAD_T + plot_h / 2}' transform='rotate(-90 12 {_PAD_T + plot_h / 2})'"
        f" text-anchor='middle'>{escape(y_label)}</text>",
    ]
    for i in range(5):
        value = y_max * i / 4
        y = _PAD_T + plot_h - plot_h * i / 4
        out.append(
            f"<line x1='{_PAD_L}' y1='{y:.1f}' x2='{_W - _PAD_R}' y2='{y:.1f}' stroke='#eee'/>"
            f"<text x='{_PAD_L - 5}' y='{y + 4:.1f}' text-anchor='end'>{value:.3g}</text>"
        )
    for frac, label in x_ticks:
        x = _PAD_L + plot_w * frac
        out.append(
            f"<text x='{x:.1f}' y='{_H - _PAD_B + 16}' text-anchor='middle'>{escape(label)}</text>"
        )
    return "".join(out)


def _time_ticks(start: float, end: float) -> list[tuple[float, str]]:
    if end <= start:
        return [(0.0, _fmt_time(start))]
    return [(i / 4, _fmt_time(start + (end - start) * i / 4)) for i in range(5)]


def _histogram(latency: LatencySketch) -> str:
    # Re-bin the sketch's fine buckets into 10 per decade for reading.
    bins: dict[int, int] = {}
    for low, high, n in latency.buckets():
        mid = math.sqrt(low * high) if low > 0 else high
        key = math.floor(math.log10(mid) * 10)
        bins[key] = bins.get(key, 0) + n
    keys = list(range(min(bins), max(bins) + 1))
    peak = max(bins.values())
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    bar_w = plot_w / len(keys)
    out = [_svg_open()]
    ticks = [
        ((k - keys[0]) / len(keys), _fmt_ms(10 ** (k / 10)))
        for k in keys
        if k % 10 == 0 or len(keys) <= 12
    ]
    out.append(_axes(peak, "calls", ticks))
    for i, key in enumerate(keys):
        n = bins.get(key, 0)
        h = plot_h * n / peak
        x = _PAD_L + i * bar_w
        out.append(
            f"<rect x='{x:.1f}' y='{_PAD_T + plot_h - h:.1f}' width='{max(bar_w - 1, 1):.1f}'"
            f" height='{h:.1f}' fill='{_COLORS[0]}'><title>{_fmt_ms(10 ** (key / 10))} - "
            f"{_fmt_ms(10 ** ((key + 1) / 10))}: {n:,} calls</title></rect>"
        )
    out.append("</svg><p class='muted'>log scale; 10 bins per decade</p>")
    return "".join(out)


def _polyline(points: Sequence[tuple[float, float]], color: str, label: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (
        f"<polyline points='{coords}' fill='none' stroke='{color}' stroke-width='1.8'>"
        f"<title>{escape(label)}</title></polyline>"
    )


def _legend(items: Sequence[tuple[str, str]]) -> str:
    out = []
    for i, (label, color) in enumerate(items):
        x = _PAD_L + 10 + i * 90
        out.append(
            f"<rect x='{x}' y='{_PAD_T}' width='12' height='4' fill='{color}'/>"
            f"<text x='{x + 16}' y='{_PAD_T + 6}'>{escape(label)}</text>"
        )
    return "".join(out)


def _time_x(summary: LogSummary) -> tuple[float, float]:
    start = summary.timeline[0].start
    end = summary.timeline[-1].start + summary.bucket_width
    return start, end


def _percentile_chart(summary: LogSummary) -> str:
    start, end = _time_x(summary)
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    quantiles = (0.5, 0.9, 0.99)
    values: dict[float, list[tuple[float, float]]] = {q: [] for q in quantiles}
    for b in summary.timeline:
        mid = b.start + b.width / 2
        for q in quantiles:
            values[q].append((mid, b.latency.quantile(q)))
    y_max = max(v for pts in values.values() for _, v in pts) or 1.0
    lines = {
        q: [
            (_PAD_L + plot_w * (t - start) / (end - start), _PAD_T + plot_h * (1 - v / y_max))
            for t, v in pts
        ]
        for q, pts in values.items()
    }
    out = [_svg_open(), _axes(y_max, "ms", _time_ticks(start, end))]
    names = [("p50", _COLORS[0]), ("p90", _COLORS[1]), ("p99", _COLORS[2])]
    for pts, (name, color) in zip(lines.values(), names, strict=True):
        out.append(_polyline(pts, color, name))
        if len(pts) == 1:
            x, y = pts[0]
            out.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'/>")
    out += [_legend(names), "</svg>"]
    out.append(f"<p class='muted'>buckets of {summary.bucket_width:g} s</p>")
    return "".join(out)


def _bars_over_time(summary: LogSummary, values: Sequence[float], label: str, color: str) -> str:
    start, end = _time_x(summary)
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    y_max = max(values) or 1.0
    bar_w = max(plot_w * summary.bucket_width / (end - start) - 1, 1)
    out = [_svg_open(), _axes(y_max, label, _time_ticks(start, end))]
    for b, v in zip(summary.timeline, values, strict=True):
        x = _PAD_L + plot_w * (b.start - start) / (end - start)
        h = plot_h * v / y_max
        out.append(
            f"<rect x='{x:.1f}' y='{_PAD_T + plot_h - h:.1f}' width='{bar_w:.1f}' "
            f"height='{h:.1f}' fill='{color}'><title>{_fmt_time(b.start)}: {v:.4g}</title></rect>"
        )
    out.append("</svg>")
    return "".join(out)


def _throughput_chart(summary: LogSummary) -> str:
    width = summary.bucket_width
    return _bars_over_time(
        summary, [b.calls / width for b in summary.timeline], "calls/s", _COLORS[3]
    )


def _error_chart(summary: LogSummary) -> str:
    if not summary.errors:
        return "<p class='muted'>no errors</p>"
    return _bars_over_time(summary, [b.errors for b in summary.timeline], "errors", _COLORS[2])


def _replica_bars(summary: LogSummary) -> str:
    rows = [(m, p) for m in summary.methods() for p in m.replicas]
    row_h = 18
    height = _PAD_T + row_h * len(rows) + 10
    label_w = 300
    plot_w = _W - label_w - 140
    peak = max(p.calls for _, p in rows)
    services = sorted({m.service for m, _ in rows})
    out = [_svg_open(height)]
    for i, (m, p) in enumerate(rows):
        y = _PAD_T + i * row_h
        w = plot_w * p.calls / peak
        color = _COLORS[services.index(m.service) % len(_COLORS)]
        label = f"{m.service}/{m.method} @ {p.server or '-'}"
        out.append(
            f"<text x='{label_w - 6}' y='{y + 12}' text-anchor='end'>{escape(label)}</text>"
            f"<rect x='{label_w}' y='{y + 2}' width='{w:.1f}' height='{row_h - 5}' "
            f"fill='{color}'/><text x='{label_w + w + 6:.1f}' y='{y + 12}'>{p.calls:,} "
            f"({p.share:.0%}), p99 {_fmt_ms(p.p99_ms)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _waterfall(trace: Trace) -> str:
    spans = list(trace.walk())
    if not spans:
        return "<p class='muted'>no spans</p>"
    row_h = 20
    label_w = 300
    plot_w = _W - label_w - 20
    height = _PAD_T + row_h * len(spans) + 24
    total = trace.duration_ms or 1.0
    out = [_svg_open(height)]
    for i, (depth, span) in enumerate(spans):
        y = _PAD_T + i * row_h
        x = label_w + plot_w * span.start_offset_ms / total
        w = max(plot_w * span.duration_ms / total, 1)
        color = _COLORS[2] if span.code != "OK" else _COLORS[depth % 2]
        label = f"{'  ' * depth}{span.service}/{span.method}"
        out.append(
            f"<text x='{6 + 12 * depth}' y='{y + 13}'>{escape(label)}</text>"
            f"<rect x='{x:.1f}' y='{y + 3}' width='{w:.1f}' height='{row_h - 6}' fill='{color}'>"
            f"<title>{escape(span.code)} {_fmt_ms(span.duration_ms)} at +"
            f"{span.start_offset_ms:.3f} ms</title></rect>"
        )
    out.append(
        f"<text x='{label_w}' y='{height - 6}'>0</text>"
        f"<text x='{_W - 20}' y='{height - 6}' text-anchor='end'>{_fmt_ms(total)}</text></svg>"
    )
    return "".join(out)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    head = "".join(
        f"<th class='l'>{escape(h)}</th>" if i < left else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{escape(str(c))}</td>" if i < left else f"<td>{escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _methods_table(summary: LogSummary) -> str:
    rows = [
        (
            f"{m.service}/{m.method}",
            f"{m.calls:,}",
            f"{m.errors:,}",
            f"{m.error_rate:.2%}",
            _fmt_ms(m.p50_ms),
            _fmt_ms(m.p90_ms),
            _fmt_ms(m.p99_ms),
            _fmt_ms(m.max_ms),
            "-" if m.throughput is None else f"{m.throughput:.1f}",
            *(
                ", ".join(f"{value} {share:.1%}" for value, share in m.field_shares(name)) or "-"
                for name in summary.group_by
            ),
        )
        for m in summary.methods()
    ]
    headers = ("method", "calls", "errors", "err%", "p50", "p90", "p99", "max", "calls/s")
    return _table(headers + summary.group_by, rows)


def _slowest_table(summary: LogSummary) -> str:
    rows = [
        (
            f"{c.service}/{c.method}",
            _fmt_ms(c.duration_ms),
            c.code,
            c.server or "-",
            c.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
            c.trace_id,
        )
        for c in summary.slowest
    ]
    return _table(("method", "duration", "code", "replica", "time (UTC)", "trace"), rows)


def _errors_table(summary: LogSummary) -> str:
    counts = _table(("service", "method", "code", "calls"), summary.error_counts(), left=3)
    rows = [
        (
            e.timestamp.strftime("%H:%M:%S.%f"),
            f"{e.service}/{e.method}",
            e.code,
            e.server or "-",
            e.message,
        )
        for e in summary.recent_errors
    ]
    headers = ("time", "method", "code", "replica", "message")
    return counts + "<p>Most recent</p>" + _table(headers, rows, 5)


def _events_table(summary: LogSummary) -> str:
    rows = [
        (event, server or "-", f"{n:,}")
        for event, servers in summary.event_counts.items()
        for server, n in servers.items()
    ]
    return _table(("event", "replica", "records"), rows, 2)


def _input_table(summary: LogSummary) -> str:
    stats = summary.input
    rows: list[tuple[object, ...]] = [
        ("call records", f"{stats.records:,}", ""),
        ("filtered out", f"{stats.filtered_out:,}", ""),
        ("other events", f"{stats.other_events:,}", ""),
    ]
    rows += [
        (f"malformed: {kind}", f"{n:,}", stats.malformed_examples.get(kind, ""))
        for kind, n in stats.malformed.items()
    ]
    return _table(("lines", "count", "example"), rows)
