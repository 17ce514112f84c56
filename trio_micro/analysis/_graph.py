"""The service graph: who calls whom, how often, how fast, from the access logs alone.

Theory of operation
-------------------
Each call record is one span; the caller of a call is the service of the record whose
``span_id`` is its ``parent_span_id``. A record without a parent, or whose parent is not
in the logs (a client that logs no calls of its own), is called by :data:`CLIENT`. The
edge ``caller -> callee`` counts the calls, their failures and their latency (the
callee's ``duration_ms``, in a :class:`LatencySketch`, so its p99 is within 1%).

Logs are written when calls *end*, so a child usually comes before its parent, and
files read one after the other put them in any order. :class:`ServiceGraphBuilder`
therefore remembers the service of the spans it saw (to resolve later children) and the
children still waiting for their parent (resolved when it comes). Both are bounded by
``max_spans``, oldest first; a child whose parent was forgotten, or never came, is
counted as called by :data:`CLIENT`: memory stays bounded, whatever the input.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from .._validate import check_int
from ..observe import CODE_OK, CallRecord
from ._sketch import LatencySketch

__all__ = ["CLIENT", "GraphEdge", "ServiceGraph", "ServiceGraphBuilder", "build_service_graph"]

#: The caller of a call whose parent span is not in the logs.
CLIENT: Final = "client"


@final
@dataclass(frozen=True, slots=True)
class GraphEdge:
    """The calls from one service to another.

    Attributes:
        caller: The calling service, or :data:`CLIENT`.
        callee: The service called.
        calls: Calls made.
        errors: Calls that ended with a code other than ``OK``.
        latency: The callee's durations (ms).
    """

    caller: str
    callee: str
    calls: int
    errors: int
    latency: LatencySketch

    @property
    def p99_ms(self) -> float:
        """The 99th percentile of the calls' durations, in ms."""
        return self.latency.quantile(0.99)


@final
@dataclass(frozen=True, slots=True)
class ServiceGraph:
    """Who calls whom: edges sorted by caller, then callee.

    Attributes:
        edges: One per (caller, callee) pair seen.
        forgotten: Calls attributed to :data:`CLIENT` because their parent was forgotten
            (``max_spans`` reached), not because it was missing.
    """

    edges: tuple[GraphEdge, ...]
    forgotten: int = 0

    def services(self) -> list[str]:
        """Every service in the graph (:data:`CLIENT` included when it calls), sorted."""
        return sorted({e.caller for e in self.edges} | {e.callee for e in self.edges})


class _Edge:
    __slots__ = ("calls", "errors", "latency")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.latency = LatencySketch()


class ServiceGraphBuilder:
    """Add call records in any order; :meth:`build` the graph. Memory is bounded.

    Args:
        max_spans: Spans remembered to resolve parents, and children waiting for theirs,
            at most (each); beyond it the oldest is forgotten (see the module docs).

    Raises:
        TypeError / ValueError: ``max_spans`` is not an int >= 1.
    """

    def __init__(self, *, max_spans: int = 200_000) -> None:
        self._max = check_int("max_spans", max_spans, minimum=1)
        self._services: OrderedDict[str, str] = OrderedDict()  # span_id -> service
        # parent_span_id -> children waiting: (service, duration_ms, ok)
        self._waiting: OrderedDict[str, list[tuple[str, float, bool]]] = OrderedDict()
        self._waiting_count = 0
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._forgotten = 0

    def _count(self, caller: str, callee: str, duration_ms: float, ok: bool) -> None:
        edge = self._edges.get((caller, callee))
        if edge is None:
            edge = self._edges[caller, callee] = _Edge()
        edge.calls += 1
        edge.errors += not ok
        edge.latency.add(duration_ms)

    def add(self, record: CallRecord) -> None:
        """Count one call record (non-call events are not given here)."""
        ok = record.code == CODE_OK
        service, parent = record.service, record.parent_span_id
        if record.span_id is not None:
            for child, duration_ms, child_ok in self._waiting.pop(record.span_id, ()):
                self._waiting_count -= 1
                self._count(service, child, duration_ms, child_ok)
            self._services[record.span_id] = service
            if len(self._services) > self._max:
                self._services.popitem(last=False)
        if parent is None:
            self._count(CLIENT, service, record.duration_ms, ok)
        elif (caller := self._services.get(parent)) is not None:
            self._count(caller, service, record.duration_ms, ok)
        else:
            self._waiting.setdefault(parent, []).append((service, record.duration_ms, ok))
            self._waiting_count += 1
            while self._waiting_count > self._max:
                _, children = self._waiting.popitem(last=False)
                self._waiting_count -= len(children)
                self._forgotten += len(children)
                for child, duration_ms, child_ok in children:
                    self._count(CLIENT, child, duration_ms, child_ok)

    def build(self) -> ServiceGraph:
        """The graph of the records added so far; children still waiting count as called
        by :data:`CLIENT`. Does not change the builder."""
        counts = {key: (e.calls, e.errors, e.latency.copy()) for key, e in self._edges.items()}
        for children in self._waiting.values():
            for child, duration_ms, ok in children:
                calls, errors, latency = counts.get((CLIENT, child), (0, 0, LatencySketch()))
                latency.add(duration_ms)
                counts[CLIENT, child] = (calls + 1, errors + (not ok), latency)
        edges = tuple(
            GraphEdge(caller, callee, calls, errors, latency)
            for (caller, callee), (calls, errors, latency) in sorted(counts.items())
        )
        return ServiceGraph(edges, self._forgotten)


def build_service_graph(records: Iterable[CallRecord], *, max_spans: int = 200_000) -> ServiceGraph:
    """Return the service graph of ``records`` (see :class:`ServiceGraphBuilder`)."""
    builder = ServiceGraphBuilder(max_spans=max_spans)
    for record in records:
        builder.add(record)
    return builder.build()
