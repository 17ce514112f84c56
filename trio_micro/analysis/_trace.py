"""The call tree of one trace, across services: a waterfall.

Each call record is one span. Its parent is the span whose ``span_id`` is the record's
``parent_span_id``; a span whose parent is not in the log (or that has none) is a root.
A record is logged when the call ends, so a span starts ``duration_ms`` before its
``timestamp``; offsets are measured from the earliest start in the trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import final

from ..observe import CallRecord

__all__ = ["Trace", "TraceSpan", "build_trace"]


@final
@dataclass(frozen=True, slots=True)
class TraceSpan:
    """One call in a trace, with the calls it made.

    Attributes:
        service: Service that handled the call.
        method: Method called.
        server: Replica that served it, if logged.
        peer: The client that made it, if logged.
        code: Status code.
        span_id: This span (``""`` when not logged).
        parent_span_id: The calling span (``None`` at a root).
        start_offset_ms: When the call started, ms after the trace started.
        duration_ms: How long it took.
        message: Error message of a failed call.
        children: The calls it made, by start time.
    """

    service: str
    method: str
    server: str | None
    peer: str | None
    code: str
    span_id: str
    parent_span_id: str | None
    start_offset_ms: float
    duration_ms: float
    message: str | None
    children: tuple[TraceSpan, ...]


@final
@dataclass(frozen=True, slots=True)
class Trace:
    """The call tree of one ``trace_id``.

    Attributes:
        trace_id: The trace.
        start: When its first call started (``None`` for an empty trace).
        duration_ms: From the first start to the last end.
        roots: Top-level calls (usually one), by start time.
        span_count: Number of spans.
    """

    trace_id: str
    start: datetime | None
    duration_ms: float
    roots: tuple[TraceSpan, ...]
    span_count: int

    def walk(self) -> Iterator[tuple[int, TraceSpan]]:
        """Yield ``(depth, span)`` depth-first in waterfall order (roots at depth 0)."""
        stack = [(0, span) for span in reversed(self.roots)]
        while stack:
            depth, span = stack.pop()
            yield depth, span
            stack.extend((depth + 1, child) for child in reversed(span.children))


def build_trace(records: Iterable[CallRecord], trace_id: str) -> Trace:
    """Build the call tree of ``trace_id`` from call records (others are skipped).

    Memory is proportional to the spans of that one trace. A span that names itself as
    its parent, or takes part in a parent cycle, becomes a root rather than vanishing.
    """
    spans = [r for r in records if r.trace_id == trace_id]
    if not spans:
        return Trace(trace_id, None, 0.0, (), 0)
    starts = [r.timestamp - timedelta(milliseconds=r.duration_ms) for r in spans]
    origin = min(starts)
    end = max(r.timestamp for r in spans)
    by_id: dict[str, int] = {}
    for i, r in enumerate(spans):
        if r.span_id is not None:
            by_id.setdefault(r.span_id, i)
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i, r in enumerate(spans):
        parent = by_id.get(r.parent_span_id) if r.parent_span_id is not None else None
        if parent is None or parent == i or _reaches(parent, i, spans, by_id):
            roots.append(i)
        else:
            children.setdefault(parent, []).append(i)

    def offset(i: int) -> float:
        return (starts[i] - origin) / timedelta(milliseconds=1)

    def node(i: int) -> TraceSpan:
        r = spans[i]
        kids = sorted(children.get(i, ()), key=offset)
        return TraceSpan(
            service=r.service,
            method=r.method,
            server=r.server,
            peer=r.peer,
            code=r.code,
            span_id=r.span_id or "",
            parent_span_id=r.parent_span_id,
            start_offset_ms=offset(i),
            duration_ms=r.duration_ms,
            message=r.message,
            children=tuple(node(k) for k in kids),
        )

    return Trace(
        trace_id=trace_id,
        start=origin,
        duration_ms=(end - origin) / timedelta(milliseconds=1),
        roots=tuple(node(i) for i in sorted(roots, key=offset)),
        span_count=len(spans),
    )


def _reaches(start: int, target: int, spans: list[CallRecord], by_id: dict[str, int]) -> bool:
    """Whether following parents from ``start`` leads back to ``target`` (a cycle)."""
    seen = set()
    current: int | None = start
    while current is not None and current not in seen:
        if current == target:
            return True
        seen.add(current)
        parent_id = spans[current].parent_span_id
        current = by_id.get(parent_id) if parent_id is not None else None
    return False
