"""The results of a log summary: :class:`LogSummary` and the figures it is made of.

Everything here is immutable and built by :class:`~trio_micro.analysis.SummaryBuilder`;
:meth:`LogSummary.methods` and :meth:`LogSummary.to_dict` derive per-method figures from
the per-replica accumulators when asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, final

from ..observe import CODE_OK
from ._filter import RecordFilter
from ._sketch import RELATIVE_ERROR, LatencySketch
from ._timeseries import TimeBucket

__all__ = [
    "MARK_EVENTS",
    "ErrorSample",
    "EventMark",
    "GroupStats",
    "InputStats",
    "LogSummary",
    "MethodStats",
    "ReplicaStats",
    "SlowCall",
]

#: Log events that mark a moment on the report's time charts, with their short labels: a
#: replica that stops serving (deregistered, its lease expired, a connection to it lost,
#: ejected by a client), a worker that exits and is restarted, a GOAWAY received.
MARK_EVENTS: Final[Mapping[str, str]] = {
    "registry.server.deregistered": "deregistered",
    "registry.server.expired": "lease expired",
    "registry.endpoint.removed": "endpoint removed",
    "registry.lease.lost": "lease lost",
    "rpc.channel.connection_lost": "connection lost",
    "rpc.channel.endpoint_ejected": "endpoint ejected",
    "rpc.channel.goaway": "GOAWAY",
    "supervise.worker.exited": "worker exited (restart)",
    "supervise.worker.killed": "worker killed",
}
#: The most :attr:`LogSummary.marks` kept (the earliest).
MAX_MARKS: Final = 64
_P50_P90_P99: Final = (0.5, 0.9, 0.99)
_P50_P99: Final = (0.5, 0.99)


def epoch(seconds: float) -> datetime:
    """The aware UTC datetime of ``seconds`` since the epoch."""
    return datetime.fromtimestamp(seconds, UTC)


@final
@dataclass(frozen=True, slots=True, order=True)
class SlowCall:
    """One of the slowest calls (ordered by duration first).

    ``server`` is the replica that served the call, ``peer`` the client ("" if not logged).
    """

    duration_ms: float
    timestamp: datetime
    service: str
    method: str
    server: str
    peer: str
    code: str
    trace_id: str
    span_id: str


@final
@dataclass(frozen=True, slots=True, order=True)
class ErrorSample:
    """One failed call, with its message (ordered by time first)."""

    timestamp: datetime
    service: str
    method: str
    server: str
    peer: str
    code: str
    message: str
    duration_ms: float
    trace_id: str
    span_id: str


@final
@dataclass(frozen=True, slots=True)
class InputStats:
    """What the input held besides the call records that were summarised.

    Attributes:
        records: Call records summarised (after filtering).
        filtered_out: Call records the filter dropped.
        other_events: Valid JSON records of other events (skipped).
        malformed: Malformed lines by kind: ``invalid_json``, ``not_utf8``,
            ``missing_field``, ``wrong_type``.
        malformed_examples: The first error message seen for each kind.
    """

    records: int = 0
    filtered_out: int = 0
    other_events: int = 0
    malformed: Mapping[str, int] = field(default_factory=dict)
    malformed_examples: Mapping[str, str] = field(default_factory=dict)

    @property
    def malformed_total(self) -> int:
        """All malformed lines."""
        return sum(self.malformed.values())


@final
@dataclass(frozen=True, slots=True)
class GroupStats:
    """The mergeable accumulator of one ``(service, method, server)``.

    Attributes:
        calls: Number of calls.
        codes: Calls by status code, ``"OK"`` included.
        fields: For each field of the summary's ``group_by``, calls by the value logged
            (as a string; JSON text for a number or boolean); calls without it are left
            out.
        latency: Durations in ms (treat as read-only).
        first: Earliest timestamp, seconds since the epoch.
        last: Latest timestamp, seconds since the epoch.
    """

    calls: int
    codes: Mapping[str, int]
    fields: Mapping[str, Mapping[str, int]]
    latency: LatencySketch
    first: float
    last: float


@final
@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """Calls of one method served by one replica (the records' ``server``).

    ``server`` is ``None`` for calls logged without ``server``.
    """

    server: str | None
    calls: int
    share: float
    errors: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@final
@dataclass(frozen=True, slots=True)
class MethodStats:
    """The figures of one ``service/method``.

    Latencies are in ms and within 1% of the exact values (``max_ms`` is exact).
    ``throughput`` is calls per second between the first and the last call (``None``
    when they share a timestamp). ``fields`` counts calls by the values of the
    summary's ``group_by`` fields, most frequent first (see :attr:`GroupStats.fields`).
    """

    service: str
    method: str
    calls: int
    errors: int
    codes: Mapping[str, int]
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first: datetime
    last: datetime
    throughput: float | None
    fields: Mapping[str, Mapping[str, int]]
    replicas: tuple[ReplicaStats, ...]

    @property
    def error_rate(self) -> float:
        """Errors per call."""
        return self.errors / self.calls

    def field_shares(self, name: str) -> list[tuple[str, float]]:
        """``(value, share)`` of each value of the ``group_by`` field ``name``: its calls
        per call that logged the field, most frequent first (empty if none did)."""
        counts = self.fields.get(name, {})
        logged = sum(counts.values())
        return [(value, n / logged) for value, n in counts.items()]


@final
@dataclass(frozen=True, slots=True, order=True)
class EventMark:
    """One record of a :data:`MARK_EVENTS` event.

    Attributes:
        time: When it was logged, seconds since the epoch (UTC).
        event: The event, e.g. ``"rpc.channel.connection_lost"``.
        server: The ``server`` field of the record (``None``: not logged).
        service: The ``service`` field of the record (``None``: not logged).
    """

    time: float
    event: str
    server: str | None = None
    service: str | None = None

    @property
    def label(self) -> str:
        """The short label of the event, e.g. ``"connection lost"``."""
        return MARK_EVENTS.get(self.event, self.event)


@final
@dataclass(frozen=True, slots=True)
class LogSummary:
    """The summary of a set of call records; combine several with :func:`merge_summaries`.

    Attributes:
        filter: The filter the records passed.
        slowest_limit: How many slowest calls were kept.
        error_sample_limit: How many recent errors were kept.
        max_time_buckets: The bound of :attr:`timeline`.
        input: Counts of records, skipped and malformed lines.
        groups: Accumulators by ``(service, method, peer)``, sorted.
        slowest: The slowest calls, slowest first.
        recent_errors: The most recent failed calls, newest first.
        timeline: Calls, errors and latency over time, oldest first, without gaps filled.
        bucket_width: Width of the :attr:`timeline` buckets in seconds.
        group_by: The fields whose values :attr:`GroupStats.fields` counts.
        count_events: The events whose records :attr:`event_counts` counts.
        event_counts: For each of ``count_events`` seen, its records by ``server``
            (``None``: not logged).
        marks: Records of :data:`MARK_EVENTS`, oldest first, at most :data:`MAX_MARKS`
            (the earliest).
    """

    filter: RecordFilter
    slowest_limit: int
    error_sample_limit: int
    max_time_buckets: int
    input: InputStats
    groups: Mapping[tuple[str, str, str | None], GroupStats]
    slowest: tuple[SlowCall, ...]
    recent_errors: tuple[ErrorSample, ...]
    timeline: tuple[TimeBucket, ...]
    bucket_width: float
    group_by: tuple[str, ...] = ()
    count_events: tuple[str, ...] = ()
    event_counts: Mapping[str, Mapping[str | None, int]] = field(default_factory=dict)
    marks: tuple[EventMark, ...] = ()

    @property
    def calls(self) -> int:
        """All calls summarised."""
        return self.input.records

    @property
    def errors(self) -> int:
        """Calls whose code is not ``"OK"``."""
        return sum(n for g in self.groups.values() for c, n in g.codes.items() if c != CODE_OK)

    @property
    def first(self) -> datetime | None:
        """The earliest timestamp (``None`` without records)."""
        return epoch(min(g.first for g in self.groups.values())) if self.groups else None

    @property
    def last(self) -> datetime | None:
        """The latest timestamp (``None`` without records)."""
        return epoch(max(g.last for g in self.groups.values())) if self.groups else None

    def latency(self) -> LatencySketch:
        """All durations in one sketch (a new one)."""
        sketch = LatencySketch()
        for group in self.groups.values():
            sketch.merge(group.latency)
        return sketch

    def methods(self) -> list[MethodStats]:
        """Per ``service/method`` figures, sorted by service and method."""
        by_method: dict[tuple[str, str], list[tuple[str | None, GroupStats]]] = {}
        for (service, method, server), stats in self.groups.items():
            by_method.setdefault((service, method), []).append((server, stats))
        return [
            _method_stats(service, method, peers)
            for (service, method), peers in sorted(by_method.items())
        ]

    def error_counts(self) -> list[tuple[str, str, str, int]]:
        """``(service, method, code, calls)`` for every code other than ``"OK"``."""
        counts: dict[tuple[str, str, str], int] = {}
        for (service, method, _server), stats in self.groups.items():
            for code, n in stats.codes.items():
                if code != CODE_OK:
                    key = (service, method, code)
                    counts[key] = counts.get(key, 0) + n
        return [(*key, n) for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready builtins (latencies in ms, times ISO-8601 UTC)."""
        total = self.latency()
        first, last = self.first, self.last
        return {
            "relative_error": RELATIVE_ERROR,
            "calls": self.calls,
            "errors": self.errors,
            "first": _iso(first),
            "last": _iso(last),
            "latency_ms": _percentiles(total),
            "input": {
                "records": self.input.records,
                "filtered_out": self.input.filtered_out,
                "other_events": self.input.other_events,
                "malformed": dict(self.input.malformed),
                "malformed_total": self.input.malformed_total,
                "malformed_examples": dict(self.input.malformed_examples),
            },
            "methods": [
                {
                    "service": m.service,
                    "method": m.method,
                    "calls": m.calls,
                    "errors": m.errors,
                    "error_rate": m.error_rate,
                    "codes": dict(m.codes),
                    "mean_ms": m.mean_ms,
                    "p50_ms": m.p50_ms,
                    "p90_ms": m.p90_ms,
                    "p99_ms": m.p99_ms,
                    "max_ms": m.max_ms,
                    "first": _iso(m.first),
                    "last": _iso(m.last),
                    "throughput_per_s": m.throughput,
                    "fields": {name: dict(counts) for name, counts in m.fields.items()},
                    "replicas": [
                        {
                            "server": p.server,
                            "calls": p.calls,
                            "share": p.share,
                            "errors": p.errors,
                            "mean_ms": p.mean_ms,
                            "p50_ms": p.p50_ms,
                            "p99_ms": p.p99_ms,
                            "max_ms": p.max_ms,
                        }
                        for p in m.replicas
                    ],
                }
                for m in self.methods()
            ],
            "slowest": [
                {
                    "duration_ms": c.duration_ms,
                    "timestamp": _iso(c.timestamp),
                    "service": c.service,
                    "method": c.method,
                    "server": c.server,
                    "peer": c.peer,
                    "code": c.code,
                    "trace_id": c.trace_id,
                    "span_id": c.span_id,
                }
                for c in self.slowest
            ],
            "errors_by_code": [
                {"service": s, "method": m, "code": c, "calls": n}
                for s, m, c, n in self.error_counts()
            ],
            "recent_errors": [
                {
                    "timestamp": _iso(e.timestamp),
                    "service": e.service,
                    "method": e.method,
                    "server": e.server,
                    "peer": e.peer,
                    "code": e.code,
                    "message": e.message,
                    "duration_ms": e.duration_ms,
                    "trace_id": e.trace_id,
                    "span_id": e.span_id,
                }
                for e in self.recent_errors
            ],
            "group_by": list(self.group_by),
            "count_events": list(self.count_events),
            "events": [
                {"event": event, "server": server, "records": n}
                for event, servers in self.event_counts.items()
                for server, n in servers.items()
            ],
            "marks": [
                {
                    "time": _iso(epoch(m.time)),
                    "event": m.event,
                    "server": m.server,
                    "service": m.service,
                }
                for m in self.marks
            ],
            "timeline": {
                "bucket_width_s": self.bucket_width,
                "buckets": [
                    {
                        "start": _iso(epoch(b.start)),
                        "calls": b.calls,
                        "errors": b.errors,
                        **_percentiles(b.latency),
                    }
                    for b in self.timeline
                ],
            },
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _percentiles(sketch: LatencySketch) -> dict[str, float | None]:
    if not sketch.count:
        return {"mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    p50, p90, p99 = sketch.quantiles(_P50_P90_P99)
    return {
        "mean_ms": sketch.mean,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "max_ms": sketch.max,
    }


def _method_stats(
    service: str, method: str, replicas: list[tuple[str | None, GroupStats]]
) -> MethodStats:
    latency = LatencySketch()
    codes: dict[str, int] = {}
    fields: dict[str, dict[str, int]] = {}
    first, last = math.inf, -math.inf
    for _server, stats in replicas:
        latency.merge(stats.latency)
        add_counts(codes, stats.codes)
        for name, counts in stats.fields.items():
            add_counts(fields.setdefault(name, {}), counts)
        first = min(first, stats.first)
        last = max(last, stats.last)
    calls = latency.count
    errors = calls - codes.get(CODE_OK, 0)
    replica_rows = tuple(
        ReplicaStats(
            server=server,
            calls=stats.calls,
            share=stats.calls / calls,
            errors=stats.calls - stats.codes.get(CODE_OK, 0),
            mean_ms=stats.latency.mean,
            p50_ms=p50,
            p99_ms=p99,
            max_ms=stats.latency.max,
        )
        for server, stats in replicas
        for p50, p99 in [stats.latency.quantiles(_P50_P99)]
    )
    p50, p90, p99 = latency.quantiles(_P50_P90_P99)
    return MethodStats(
        service=service,
        method=method,
        calls=calls,
        errors=errors,
        codes=_by_count(codes),
        mean_ms=latency.mean,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=latency.max,
        first=epoch(first),
        last=epoch(last),
        throughput=calls / (last - first) if last > first else None,
        fields={name: _by_count(counts) for name, counts in fields.items()},
        replicas=replica_rows,
    )


def add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    """Add the counts of ``more`` to ``into``, key by key."""
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` ordered by count (largest first), then by key."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
