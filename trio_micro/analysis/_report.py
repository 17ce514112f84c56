"""One self-contained HTML report with inline SVG plots (no JavaScript, nothing fetched).

The page is a list of sections (:data:`SECTIONS`): each is a function of the
:class:`Page` that returns its heading and HTML, or ``None`` when it has no place on this
page; a section with nothing to show says so in one line. Charts are drawn by
:mod:`._charts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from ._charts import (
    COLORS,
    Frame,
    fmt_count,
    fmt_ms,
    fmt_ms_tick,
    fmt_time,
    legend,
    nice_ticks,
    time_ticks,
)
from ._graph import ServiceGraph
from ._graph_svg import render_service_graph
from ._model import LogSummary
from ._sketch import RELATIVE_ERROR, LatencySketch
from ._trace import Trace

__all__ = ["render_html_report"]  # SECTIONS and Page are for the modules of the package

_W: Final = 760  # width of the bar charts without axes, px
_CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{padding:3px 9px;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
.muted{color:#777}.err{color:#c23b3b}svg{display:block;margin:6px 0;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#444}svg text.mark-label{fill:#8a5cb8}
.kpi{display:inline-block;margin:0 26px 8px 0}.kpi b{display:block;font-size:20px}
.legend{font-size:12px;color:#444}.legend span{margin-right:16px;white-space:nowrap}
.legend i{display:inline-block;width:14px;height:4px;margin:0 5px 3px 0;vertical-align:middle}
.legend i.m{width:0;height:12px;border-left:2px dashed #8a5cb8;margin-bottom:0}
"""


@dataclass(frozen=True, slots=True)
class Page:
    """What the sections of a report are drawn from."""

    summary: LogSummary
    trace: Trace | None = None
    graph: ServiceGraph | None = None


#: A section: the heading and HTML of its part of the page, or ``None`` to leave it out.
Section = Callable[[Page], tuple[str, str] | None]


def render_html_report(
    summary: LogSummary,
    *,
    title: str = "trio-micro logs",
    trace: Trace | None = None,
    graph: ServiceGraph | None = None,
) -> str:
    """Return a complete HTML page that shows ``summary`` (``trace`` and ``graph``, if given).

    The page holds the :data:`SECTIONS` in order: the service graph, the trace waterfall,
    the latency histogram, latency percentiles, throughput and errors over time (with the events of
    :attr:`LogSummary.marks` marked), methods, calls per replica, events counted, slowest
    calls, errors and the input. Everything is inline (SVG and CSS); no script.
    """
    page = Page(summary, trace, graph)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _kpis(summary),
    ]
    for section in SECTIONS:
        shown = section(page)
        if shown is not None:
            heading, body = shown
            parts += ["<h2>", escape(heading), "</h2>", body]
    parts.append("</body></html>")
    return "".join(parts)


def _none(what: str) -> str:
    return f"<p class='muted'>{escape(what)}</p>"


def _kpis(summary: LogSummary) -> str:
    first, last = summary.first, summary.last
    span = f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC" if first and last else ""
    items = [("calls", f"{summary.calls:,}"), ("errors", f"{summary.errors:,}")]
    if summary.calls:
        latency = summary.latency()
        items += [
            ("p50", fmt_ms(latency.quantile(0.5))),
            ("p99", fmt_ms(latency.quantile(0.99))),
            ("max", fmt_ms(latency.max)),
        ]
    items.append(("malformed lines", f"{summary.input.malformed_total:,}"))
    cells = "".join(f"<span class='kpi'>{k}<b>{escape(v)}</b></span>" for k, v in items)
    note = f"latencies within {RELATIVE_ERROR:.0%} (relative)"
    return f"<p>{cells}</p><p class='muted'>{escape(span) + '; ' if span else ''}{note}</p>"


# ---------------------------------------------------------------------- sections


def _trace_section(page: Page) -> tuple[str, str] | None:
    if page.trace is None:
        return None
    return f"Trace {page.trace.trace_id}", _waterfall(page.trace)


def _no_calls(page: Page) -> tuple[str, str] | None:
    if page.summary.calls:
        return None
    return "Calls", _none("No call records in the input: no charts to draw.")


def _histogram_section(page: Page) -> tuple[str, str] | None:
    if not page.summary.calls:
        return None
    return "Latency distribution", _histogram(page.summary.latency())


def _percentile_section(page: Page) -> tuple[str, str] | None:
    if not page.summary.calls:
        return None
    return "Latency percentiles over time", _percentile_chart(page.summary)


def _throughput_section(page: Page) -> tuple[str, str] | None:
    summary = page.summary
    if not summary.calls:
        return None
    width = summary.bucket_width
    rates = [b.calls / width for b in summary.timeline]
    titles = [f"{fmt_count(b.calls / width)} calls/s ({b.calls:,} calls)" for b in summary.timeline]
    chart = _bars_over_time(summary, rates, titles, "calls/s", COLORS[3])
    return "Throughput over time", chart


def _errors_over_time_section(page: Page) -> tuple[str, str] | None:
    summary = page.summary
    if not summary.calls:
        return None
    if not summary.errors:
        return "Errors over time", _none("No failed calls.")
    counts = [float(b.errors) for b in summary.timeline]
    titles = [f"{b.errors:,} failed of {b.calls:,} calls" for b in summary.timeline]
    return "Errors over time", _bars_over_time(summary, counts, titles, "errors", COLORS[2])


def _methods_section(page: Page) -> tuple[str, str] | None:
    return ("Methods", _methods_table(page.summary)) if page.summary.calls else None


def _replicas_section(page: Page) -> tuple[str, str] | None:
    return ("Replicas", _replica_bars(page.summary)) if page.summary.calls else None


def _events_section(page: Page) -> tuple[str, str] | None:
    summary = page.summary
    if not summary.count_events:
        return None
    if not summary.event_counts:
        return "Events counted", _none("No records of the events counted.")
    return "Events counted", _events_table(summary)


def _slowest_section(page: Page) -> tuple[str, str] | None:
    summary = page.summary
    if not summary.calls:
        return None
    if not summary.slowest:
        return "Slowest calls", _none("None kept (the limit of slowest calls is 0).")
    return "Slowest calls", _slowest_table(summary)


def _errors_section(page: Page) -> tuple[str, str] | None:
    summary = page.summary
    if not summary.calls:
        return None
    if not summary.errors:
        return "Errors", _none("No failed calls.")
    return "Errors", _errors_table(summary)


def _input_section(page: Page) -> tuple[str, str] | None:
    return "Input", _input_table(page.summary)


#: The sections of the page, in order; add one by appending a :data:`Section` function.
def _graph_section(page: Page) -> tuple[str, str] | None:
    if page.graph is None:
        return None
    return "Service graph", render_service_graph(page.graph)  # drawn by ._graph_svg


SECTIONS: Final[list[Section]] = [
    _graph_section,
    _trace_section,
    _no_calls,
    _histogram_section,
    _percentile_section,
    _throughput_section,
    _errors_over_time_section,
    _methods_section,
    _replicas_section,
    _events_section,
    _slowest_section,
    _errors_section,
    _input_section,
]


# ---------------------------------------------------------------------- charts


def _histogram(latency: LatencySketch) -> str:
    # Re-bin the sketch's fine buckets into 10 per decade for reading.
    bins: dict[int, int] = {}
    for low, high, n in latency.buckets():
        mid = math.sqrt(low * high) if low > 0 else high
        key = math.floor(math.log10(mid) * 10)
        bins[key] = bins.get(key, 0) + n
    keys = list(range(min(bins), max(bins) + 2))  # one more: the right edge of the last bin
    y_ticks = nice_ticks(max(bins.values()))
    frame = Frame.plain(keys[0], keys[-1], y_ticks[-1])
    # 1, 2 and 5 times a power of ten (within 0.3 % of a bin edge), only 1 over 3 decades
    round_bins = {0: 1, 3: 2, 7: 5} if len(keys) <= 30 else {0: 1}
    x_ticks = [
        (k, fmt_ms_tick(round_bins[k % 10] * 10.0 ** (k // 10)))
        for k in keys
        if k % 10 in round_bins
    ]
    if len(x_ticks) < 2:  # a narrow range: its edges
        x_ticks = [(k, fmt_ms(10 ** (k / 10))) for k in (keys[0], keys[-1])]
    out = [
        legend([("calls per latency bin", COLORS[0])]),
        frame.open(time_range=False),
        frame.axes("calls", y_ticks, fmt_count, x_ticks),
    ]
    bar_w = frame.x(keys[0] + 1) - frame.x(keys[0])
    for key in keys[:-1]:
        n = bins.get(key, 0)
        top = frame.y(n)
        out.append(
            f"<rect x='{frame.x(key):.1f}' y='{top:.1f}' width='{max(bar_w - 1, 1):.1f}'"
            f" height='{frame.y(0) - top:.1f}' fill='{COLORS[0]}'><title>"
            f"{fmt_ms(10 ** (key / 10))} to {fmt_ms(10 ** ((key + 1) / 10))}: {n:,} calls"
            "</title></rect>"
        )
    out.append("</svg><p class='muted'>latency on a log scale; 10 bins per decade</p>")
    return "".join(out)


def _time_frame(summary: LogSummary, y_top: float) -> Frame:
    """The frame of a time chart: the calls' buckets, widened to events close to them."""
    start = summary.timeline[0].start
    end = summary.timeline[-1].start + summary.bucket_width
    slack = (end - start) / 4
    near = [m.time for m in summary.marks if start - slack <= m.time <= end + slack]
    return Frame.for_time(min([start, *near]), max([end, *near]), y_top, summary.marks)


def _digits(summary: LogSummary) -> int:
    """Decimals of a second that tell the buckets apart."""
    return max(0, min(3, math.ceil(-math.log10(summary.bucket_width) - 1e-9)))


def _percentile_chart(summary: LogSummary) -> str:
    quantiles = (0.5, 0.9, 0.99)
    names = [("p50", COLORS[0]), ("p90", COLORS[1]), ("p99", COLORS[2])]
    points = [
        (b.start + b.width / 2, b.start, [b.latency.quantile(q) for q in quantiles])
        for b in summary.timeline
    ]
    y_ticks = nice_ticks(max(max(v) for _, _, v in points) or 1.0)
    frame = _time_frame(summary, y_ticks[-1])
    out = [
        legend(names, marks=bool(summary.marks)),
        frame.open(time_range=True),
        frame.axes("latency", y_ticks, fmt_ms_tick, time_ticks(frame.x0, frame.x1)),
    ]
    digits = _digits(summary)
    for i, (name, color) in enumerate(names):
        coords = " ".join(f"{frame.x(t):.1f},{frame.y(v[i]):.1f}" for t, _, v in points)
        out.append(
            f"<polyline points='{coords}' fill='none' stroke='{color}' stroke-width='1.8'>"
            f"<title>{name}</title></polyline>"
        )
        out += [
            f"<circle cx='{frame.x(t):.1f}' cy='{frame.y(v[i]):.1f}' r='2.2' fill='{color}'>"
            f"<title>{fmt_time(start, digits)}: {name} {fmt_ms(v[i])}</title></circle>"
            for t, start, v in points
        ]
    out += [frame.markers(), "</svg>"]
    out.append(f"<p class='muted'>buckets of {summary.bucket_width:g} s</p>")
    return "".join(out)


def _bars_over_time(
    summary: LogSummary, values: Sequence[float], titles: Sequence[str], label: str, color: str
) -> str:
    y_ticks = nice_ticks(max(values) or 1.0)
    frame = _time_frame(summary, y_ticks[-1])
    out = [
        legend([(label, color)], marks=bool(summary.marks)),
        frame.open(time_range=True),
        frame.axes(label, y_ticks, fmt_count, time_ticks(frame.x0, frame.x1)),
    ]
    digits = _digits(summary)
    for b, v, title in zip(summary.timeline, values, titles, strict=True):
        x = frame.x(b.start)
        w = max(frame.x(b.start + b.width) - x - 1, 1)
        top = frame.y(v)
        out.append(
            f"<rect x='{x:.1f}' y='{top:.1f}' width='{w:.1f}' height='{frame.y(0) - top:.1f}' "
            f"fill='{color}'><title>{fmt_time(b.start, digits)}: {escape(title)}</title></rect>"
        )
    out += [frame.markers(), "</svg>"]
    return "".join(out)


def _replica_bars(summary: LogSummary) -> str:
    rows = [(m, p) for m in summary.methods() for p in m.replicas]
    row_h = 18
    height = 14 + row_h * len(rows) + 10
    label_w = 300
    plot_w = _W - label_w - 170
    peak = max(p.calls for _, p in rows)
    services = sorted({m.service for m, _ in rows})
    out = [
        legend([(s, COLORS[i % len(COLORS)]) for i, s in enumerate(services)]),
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{height}' "
        f"viewBox='0 0 {_W} {height}' role='img'>",
    ]
    for i, (m, p) in enumerate(rows):
        y = 14 + i * row_h
        w = plot_w * p.calls / peak
        color = COLORS[services.index(m.service) % len(COLORS)]
        label = f"{m.service}/{m.method} @ {p.server or '-'}"
        out.append(
            f"<text x='{label_w - 6}' y='{y + 12}' text-anchor='end'>{escape(label)}</text>"
            f"<rect x='{label_w}' y='{y + 2}' width='{w:.1f}' height='{row_h - 5}' "
            f"fill='{color}'><title>{escape(label)}: {p.calls:,} calls ({p.share:.2%}), "
            f"p99 {fmt_ms(p.p99_ms)}</title></rect><text x='{label_w + w + 6:.1f}' "
            f"y='{y + 12}'>{p.calls:,} ({p.share:.0%}), p99 {fmt_ms(p.p99_ms)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _waterfall(trace: Trace) -> str:
    spans = list(trace.walk())
    if not spans:
        return _none("No spans in this trace.")
    row_h = 20
    label_w = 300
    plot_w = _W - label_w - 20
    height = 14 + row_h * len(spans) + 24
    total = trace.duration_ms or 1.0
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{height}' "
        f"viewBox='0 0 {_W} {height}' role='img'>"
    ]
    for i, (depth, span) in enumerate(spans):
        y = 14 + i * row_h
        x = label_w + plot_w * span.start_offset_ms / total
        w = max(plot_w * span.duration_ms / total, 1)
        color = COLORS[2] if span.code != "OK" else COLORS[depth % 2]
        label = f"{'  ' * depth}{span.service}/{span.method}"
        out.append(
            f"<text x='{6 + 12 * depth}' y='{y + 13}'>{escape(label)}</text>"
            f"<rect x='{x:.1f}' y='{y + 3}' width='{w:.1f}' height='{row_h - 6}' fill='{color}'>"
            f"<title>{escape(span.code)} {fmt_ms(span.duration_ms)} at +"
            f"{span.start_offset_ms:.3f} ms</title></rect>"
        )
    out.append(
        f"<text x='{label_w}' y='{height - 6}'>0</text>"
        f"<text x='{_W - 20}' y='{height - 6}' text-anchor='end'>{fmt_ms(total)}</text></svg>"
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
            fmt_ms(m.p50_ms),
            fmt_ms(m.p90_ms),
            fmt_ms(m.p99_ms),
            fmt_ms(m.max_ms),
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
            fmt_ms(c.duration_ms),
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
