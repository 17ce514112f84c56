"""Analysis of the services' JSON-lines access logs: pure functions, and one file reader.

Records in, results out. The one exception is :func:`summarize_files`, the fast reader
of log files (byte ranges summarised by a pool of processes), which opens the files it is
given; nothing else here does I/O.

* :class:`SummaryBuilder` / :func:`summarize`: per ``service/method`` calls, errors by
  code, p50/p90/p99/max latency, throughput, per-replica split, the slowest calls, recent
  errors with messages, a time series, malformed-line counts -- in constant memory -- and,
  as asked, calls by the values of ``group_by`` fields and records of ``count_events``
  per server. :func:`merge_summaries` combines summaries of parts exactly (parallelism).
* :func:`summarize_files`: the summary of log files, read in parallel.
* :class:`LatencySketch`: the mergeable quantile sketch behind every latency figure
  (DDSketch's logarithmic mapping; relative error at most :data:`RELATIVE_ERROR`, 1%).
* :func:`build_trace`: the call tree of one trace across services (a waterfall).
* :func:`build_service_graph` / :class:`ServiceGraphBuilder`: who calls whom, with call
  counts, errors and p99 per edge, from the parent links of the records (bounded memory);
  :func:`render_service_graph` draws it as SVG.
* :func:`iter_call_records`: JSON lines to :class:`~trio_micro.observe.CallRecord`, bad
  lines and other events skipped.
* :func:`render_html_report`: one self-contained HTML page with inline SVG plots.

Names are imported on first use (PEP 562 module ``__getattr__``): a summary does not
import the HTML report or the trace modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from ._decode import MALFORMED_KINDS, iter_call_records
    from ._files import find_trace_records, summarize_files
    from ._filter import RecordFilter
    from ._graph import CLIENT, GraphEdge, ServiceGraph, ServiceGraphBuilder, build_service_graph
    from ._graph_svg import render_service_graph
    from ._model import (
        MARK_EVENTS,
        MAX_MARKS,
        ErrorSample,
        EventMark,
        GroupStats,
        InputStats,
        LogSummary,
        MethodStats,
        ReplicaStats,
        SlowCall,
    )
    from ._report import render_html_report
    from ._sketch import MIN_TRACKED, RELATIVE_ERROR, LatencySketch
    from ._summary import SummaryBuilder, merge_summaries, summarize
    from ._timeseries import BASE_WIDTH, TimeBucket
    from ._trace import Trace, TraceSpan, build_trace

__all__ = [
    "BASE_WIDTH",
    "CLIENT",
    "MALFORMED_KINDS",
    "MARK_EVENTS",
    "MAX_MARKS",
    "MIN_TRACKED",
    "RELATIVE_ERROR",
    "ErrorSample",
    "EventMark",
    "GraphEdge",
    "GroupStats",
    "InputStats",
    "LatencySketch",
    "LogSummary",
    "MethodStats",
    "RecordFilter",
    "ReplicaStats",
    "ServiceGraph",
    "ServiceGraphBuilder",
    "SlowCall",
    "SummaryBuilder",
    "TimeBucket",
    "Trace",
    "TraceSpan",
    "build_service_graph",
    "build_trace",
    "find_trace_records",
    "iter_call_records",
    "merge_summaries",
    "render_html_report",
    "render_service_graph",
    "summarize",
    "summarize_files",
]

# private module -> the names of __all__ it defines
_MODULES: dict[str, tuple[str, ...]] = {
    "._decode": ("MALFORMED_KINDS", "iter_call_records"),
    "._files": ("find_trace_records", "summarize_files"),
    "._filter": ("RecordFilter",),
    "._graph": (
        "CLIENT",
        "GraphEdge",
        "ServiceGraph",
        "ServiceGraphBuilder",
        "build_service_graph",
    ),
    "._graph_svg": ("render_service_graph",),
    "._model": (
        "MARK_EVENTS",
        "MAX_MARKS",
        "ErrorSample",
        "EventMark",
        "GroupStats",
        "InputStats",
        "LogSummary",
        "MethodStats",
        "ReplicaStats",
        "SlowCall",
    ),
    "._report": ("render_html_report",),
    "._sketch": ("MIN_TRACKED", "RELATIVE_ERROR", "LatencySketch"),
    "._summary": ("SummaryBuilder", "merge_summaries", "summarize"),
    "._timeseries": ("BASE_WIDTH", "TimeBucket"),
    "._trace": ("Trace", "TraceSpan", "build_trace"),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES, __all__)
