"""Observability: logging setup, task monitor, memory monitor.

* :func:`configure_logging`: structlog as JSON lines (machines) or console (people).
* :class:`TaskMonitor` / :func:`open_task_monitor`: live-task counts, leak and long-lived
  task warnings, steps that block the event loop; :func:`format_task_tree` dumps the tasks.
* :func:`memory_snapshot` / :func:`open_memory_monitor`: RSS, tracemalloc and gc counters,
  logged periodically; :func:`tune_gc` adjusts the collector.
* :class:`CallRecord`, :data:`RPC_CALL_COMPLETE`, :data:`RPC_CALL_FAILED`: the schema of
  the RPC access log (one record per call), shared by its writer and ``trio-micro logs``.
* :class:`TraceContext`, :func:`parse_traceparent` / :func:`format_traceparent`,
  :func:`current_span`, :func:`start_span` / :func:`use_span`: W3C trace context, the span
  current in a task, and its ids bound for structlog.
* :func:`register_stats_source`, :func:`register_task_monitor`,
  :func:`register_process_metrics`: Prometheus metrics read from ``statistics()``
  snapshots and the process (``rpc.MetricsInterceptor`` counts the calls);
  :func:`resolve_registry` and :data:`METRIC_PREFIX` for metrics defined next to them.
* :func:`serve_debug` / :func:`open_debug_server`: the localhost debug HTTP endpoint
  (``/metrics``, ``/debug/tasks``, ``/debug/memory``, ``/debug/stats``).

Log events defined here: ``observe.tasks.leak_suspected``, ``observe.tasks.leak_cleared``,
``observe.tasks.long_lived``, ``observe.loop.blocked``, ``observe.memory.snapshot``,
``observe.metrics.source_failed``, ``observe.debug.started``, ``observe.debug.page_failed``.

Names are imported on first use (PEP 562 module ``__getattr__``): reading the access-log
schema (``CallRecord``, as ``trio-micro logs`` does) does not import structlog, rich,
prometheus-client or Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from ._debug import DebugServer, open_debug_server, serve_debug
    from ._log import configure_logging
    from ._memory import GcSettings, MemorySnapshot, memory_snapshot, open_memory_monitor, tune_gc
    from ._metrics import (
        METRIC_PREFIX,
        register_process_metrics,
        register_stats_source,
        register_task_monitor,
        resolve_registry,
    )
    from ._schema import (
        CALL_EVENTS,
        CALL_RECORD_FIELDS,
        CODE_OK,
        RPC_CALL_COMPLETE,
        RPC_CALL_FAILED,
        CallRecord,
    )
    from ._tasks import TaskMonitor, TaskMonitorStatistics, format_task_tree, open_task_monitor
    from ._trace import (
        TRACEPARENT,
        TraceContext,
        bind_span,
        child_of_traceparent,
        current_span,
        format_traceparent,
        new_span_id,
        new_trace,
        new_trace_id,
        new_traceparent,
        parse_traceparent,
        start_span,
        use_span,
    )

__all__ = [
    "CALL_EVENTS",
    "CALL_RECORD_FIELDS",
    "CODE_OK",
    "METRIC_PREFIX",
    "RPC_CALL_COMPLETE",
    "RPC_CALL_FAILED",
    "TRACEPARENT",
    "CallRecord",
    "DebugServer",
    "GcSettings",
    "MemorySnapshot",
    "TaskMonitor",
    "TaskMonitorStatistics",
    "TraceContext",
    "bind_span",
    "child_of_traceparent",
    "configure_logging",
    "current_span",
    "format_task_tree",
    "format_traceparent",
    "memory_snapshot",
    "new_span_id",
    "new_trace",
    "new_trace_id",
    "new_traceparent",
    "open_debug_server",
    "open_memory_monitor",
    "open_task_monitor",
    "parse_traceparent",
    "register_process_metrics",
    "register_stats_source",
    "register_task_monitor",
    "resolve_registry",
    "serve_debug",
    "start_span",
    "tune_gc",
    "use_span",
]

# private module -> the names of __all__ it defines
_MODULES: dict[str, tuple[str, ...]] = {
    "._debug": (
        "DebugServer",
        "open_debug_server",
        "serve_debug",
    ),
    "._log": ("configure_logging",),
    "._memory": (
        "GcSettings",
        "MemorySnapshot",
        "memory_snapshot",
        "open_memory_monitor",
        "tune_gc",
    ),
    "._metrics": (
        "METRIC_PREFIX",
        "register_process_metrics",
        "register_stats_source",
        "register_task_monitor",
        "resolve_registry",
    ),
    "._schema": (
        "CALL_EVENTS",
        "CALL_RECORD_FIELDS",
        "CODE_OK",
        "CallRecord",
        "RPC_CALL_COMPLETE",
        "RPC_CALL_FAILED",
    ),
    "._tasks": (
        "TaskMonitor",
        "TaskMonitorStatistics",
        "format_task_tree",
        "open_task_monitor",
    ),
    "._trace": (
        "TRACEPARENT",
        "TraceContext",
        "bind_span",
        "child_of_traceparent",
        "current_span",
        "format_traceparent",
        "new_span_id",
        "new_trace",
        "new_trace_id",
        "new_traceparent",
        "parse_traceparent",
        "start_span",
        "use_span",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _MODULES, __all__)
