"""Streaming, mergeable summaries of RPC access logs.

Theory of operation: :class:`SummaryBuilder` keeps one accumulator per
``(service, method, peer)`` -- counts, error codes, cache hits, first and last timestamps
and a :class:`LatencySketch` -- plus two bounded heaps (the slowest calls, the most recent
errors) and a bounded :class:`TimeBucket` series. Everything in it merges exactly: counts
add, sketches add bucket counts, heaps keep the top of the union under a total order, time
series coarsen to a common width. So summaries of parts of a log (files, byte ranges,
processes) combine with :func:`merge_summaries` into the summary of the whole, and memory
depends on the number of distinct ``(service, method, peer)`` and the limits, never on
the number of records. Per-method figures are merged from the per-peer accumulators when
asked for.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, final

from ..observe._schema import CACHE_HIT, CACHE_MISS, CODE_OK, CallRecord
from ._decode import _decode_each_line, _Tally, decode_chunk
from ._sketch import _INV_LOG_GAMMA, _OFFSET, _ZERO, MIN_TRACKED, RELATIVE_ERROR, LatencySketch
from ._timeseries import TimeBucket, _TimeSeries

__all__ = [
    "ErrorSample",
    "GroupStats",
    "InputStats",
    "LogSummary",
    "MethodStats",
    "PeerStats",
    "RecordFilter",
    "SlowCall",
    "SummaryBuilder",
    "merge_summaries",
    "summarize",
]

_DEFAULT_SLOWEST: Final = 10
_DEFAULT_ERROR_SAMPLES: Final = 20
_DEFAULT_TIME_BUCKETS: Final = 120


@final
@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which call records to keep; every condition given must hold.

    Attributes:
        since: Keep records with ``timestamp >= since`` (timezone-aware).
        until: Keep records with ``timestamp < until`` (timezone-aware).
        services: Keep these services (empty: all).
        methods: Keep these methods, each given as ``"Method"`` or ``"service/Method"``
            (empty: all).
        codes: Keep these status codes, e.g. ``{"NOT_FOUND"}`` (empty: all).

    Raises:
        ValueError: ``since`` or ``until`` is a naive datetime.
    """

    since: datetime | None = None
    until: datetime | None = None
    services: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value!r}")

    @property
    def active(self) -> bool:
        """Whether any condition is set."""
        return bool(
            self.since is not None
            or self.until is not None
            or self.services
            or self.methods
            or self.codes
        )

    def matches(self, record: CallRecord) -> bool:
        """Return whether ``record`` passes every condition."""
        if self.since is not None and record.timestamp < self.since:
            return False
        if self.until is not None and record.timestamp >= self.until:
            return False
        if self.services and record.service not in self.services:
            return False
        if self.codes and record.code not in self.codes:
            return False
        return not (
            self.methods
            and record.method not in self.methods
            and f"{record.service}/{record.method}" not in self.methods
        )


@final
@dataclass(frozen=True, slots=True, order=True)
class SlowCall:
    """One of the slowest calls (ordered by duration first)."""

    duration_ms: float
    timestamp: datetime
    service: str
    method: str
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
    """The mergeable accumulator of one ``(service, method, peer)``.

    Attributes:
        calls: Number of calls.
        codes: Calls by status code, ``"OK"`` included.
        cache_hits: Calls logged with ``cache="hit"``.
        cache_misses: Calls logged with ``cache="miss"``.
        latency: Durations in ms (treat as read-only).
        first: Earliest timestamp, seconds since the epoch.
        last: Latest timestamp, seconds since the epoch.
    """

    calls: int
    codes: Mapping[str, int]
    cache_hits: int
    cache_misses: int
    latency: LatencySketch
    first: float
    last: float


@final
@dataclass(frozen=True, slots=True)
class PeerStats:
    """Calls of one method served by one peer (replica)."""

    peer: str | None
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
    when they share a timestamp); ``cache_hit_ratio`` is ``None`` when no call of the
    method logged ``cache``.
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
    cache_hit_ratio: float | None
    peers: tuple[PeerStats, ...]

    @property
    def error_rate(self) -> float:
        """Errors per call."""
        return self.errors / self.calls


class _Group:
    __slots__ = ("codes", "first", "hits", "last", "latency", "misses")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.hits = 0
        self.misses = 0
        self.latency = LatencySketch()
        self.first = math.inf
        self.last = -math.inf


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@final
class SummaryBuilder:
    """Accumulates call records into a :class:`LogSummary`, in constant memory.

    Args:
        filter: Which records to count (others count as ``filtered_out``).
        slowest: How many of the slowest calls to keep.
        error_samples: How many of the most recent failed calls to keep.
        max_time_buckets: Most buckets of the time series.

    Raises:
        ValueError: A limit is negative, or ``max_time_buckets`` is below 2.
    """

    __slots__ = (
        "_errors",
        "_filtered",
        "_groups",
        "_records",
        "_series",
        "_slow",
        "_tally",
        "error_samples",
        "filter",
        "max_time_buckets",
        "slowest",
    )

    def __init__(
        self,
        *,
        filter: RecordFilter | None = None,  # noqa: A002 - the natural name
        slowest: int = _DEFAULT_SLOWEST,
        error_samples: int = _DEFAULT_ERROR_SAMPLES,
        max_time_buckets: int = _DEFAULT_TIME_BUCKETS,
    ) -> None:
        for name, value in (("slowest", slowest), ("error_samples", error_samples)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.filter = filter if filter is not None else RecordFilter()
        self.slowest = slowest
        self.error_samples = error_samples
        self.max_time_buckets = max_time_buckets
        self._series = _TimeSeries(max_time_buckets)
        self._groups: dict[tuple[str, str, str | None], _Group] = {}
        self._slow: list[SlowCall] = []
        self._errors: list[ErrorSample] = []
        self._tally = _Tally()
        self._records = 0
        self._filtered = 0

    def add_json_lines(self, data: bytes | Iterable[bytes | str]) -> None:
        """Decode and add JSON lines: a ``bytes`` chunk of whole lines, or single lines.

        Lines that are other events or malformed are counted, never raised.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            self.add(decode_chunk(bytes(data), self._tally))
        else:
            self.add(_decode_each_line(data, self._tally))

    def add(self, records: Iterable[CallRecord]) -> None:
        """Add call records (the hot loop: keep per-record work small)."""
        # Everything the loop touches is a local; the sketch update is inlined.
        groups = self._groups
        slow = self._slow
        slow_limit = self.slowest
        errors = self._errors
        error_limit = self.error_samples
        series = self._series
        cells = series.buckets
        width = series.width
        log = math.log
        inv_log_gamma = _INV_LOG_GAMMA
        offset = _OFFSET
        min_tracked = MIN_TRACKED
        ok = CODE_OK
        heappush = heapq.heappush
        heappushpop = heapq.heappushpop
        flt = self.filter
        matches = flt.matches if flt.active else None
        count = filtered = 0
        for r in records:
            if matches is not None and not matches(r):
                filtered += 1
                continue
            count += 1
            key = (r.service, r.method, r.peer)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            d = r.duration_ms
            ts = r.timestamp.timestamp()
            index = int(log(d) * inv_log_gamma + offset) if d >= min_tracked else _ZERO
            sketch = group.latency
            b = sketch._buckets
            b[index] = b.get(index, 0) + 1
            sketch.count += 1
            sketch.total += d
            if d > sketch.max:
                sketch.max = d
            if d < sketch.min:
                sketch.min = d
            if ts > group.last:
                group.last = ts
            if ts < group.first:
                group.first = ts
            code = r.code
            codes = group.codes
            codes[code] = codes.get(code, 0) + 1
            cache = r.cache
            if cache is not None:
                if cache == CACHE_HIT:
                    group.hits += 1
                elif cache == CACHE_MISS:
                    group.misses += 1
            cell = cells.get(int(ts / width))
            if cell is None:
                cell = series.cell(int(ts / width))
                width = series.width
                cells = series.buckets
            cell.calls += 1
            sketch = cell.latency
            b = sketch._buckets
            b[index] = b.get(index, 0) + 1
            sketch.count += 1
            sketch.total += d
            if d > sketch.max:
                sketch.max = d
            if d < sketch.min:
                sketch.min = d
            if code != ok:
                cell.errors += 1
                if error_limit and (
                    len(errors) < error_limit or r.timestamp >= errors[0].timestamp
                ):
                    sample = ErrorSample(
                        r.timestamp,
                        r.service,
                        r.method,
                        r.peer or "",
                        code,
                        r.message or "",
                        d,
                        r.trace_id or "",
                        r.span_id or "",
                    )
                    if len(errors) < error_limit:
                        heappush(errors, sample)
                    else:
                        heappushpop(errors, sample)
            if slow_limit and (len(slow) < slow_limit or d >= slow[0].duration_ms):
                call = SlowCall(
                    d,
                    r.timestamp,
                    r.service,
                    r.method,
                    r.peer or "",
                    code,
                    r.trace_id or "",
                    r.span_id or "",
                )
                if len(slow) < slow_limit:
                    heappush(slow, call)
                else:
                    heappushpop(slow, call)
        self._records += count
        self._filtered += filtered

    def merge(self, summary: LogSummary) -> None:
        """Add everything counted in ``summary`` (a summary of other records).

        The result is the same as if this builder had seen those records too; the
        limits of this builder apply.
        """
        groups = self._groups
        for key, stats in summary.groups.items():
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group()
            for code, n in stats.codes.items():
                group.codes[code] = group.codes.get(code, 0) + n
            group.hits += stats.cache_hits
            group.misses += stats.cache_misses
            group.latency.merge(stats.latency)
            group.first = min(group.first, stats.first)
            group.last = max(group.last, stats.last)
        for call in summary.slowest:
            _push_bounded(self._slow, call, self.slowest)
        for sample in summary.recent_errors:
            _push_bounded(self._errors, sample, self.error_samples)
        self._series.merge_rows(summary.timeline, summary.bucket_width)
        tally = self._tally
        tally.other_events += summary.input.other_events
        for kind, n in summary.input.malformed.items():
            tally.malformed[kind] = tally.malformed.get(kind, 0) + n
        for kind, message in summary.input.malformed_examples.items():
            tally.examples.setdefault(kind, message)
        self._records += summary.input.records
        self._filtered += summary.input.filtered_out

    def build(self) -> LogSummary:
        """Return the summary of everything added so far (the builder stays usable)."""
        groups = {
            key: GroupStats(
                calls=group.latency.count,
                codes=dict(group.codes),
                cache_hits=group.hits,
                cache_misses=group.misses,
                latency=group.latency.copy(),
                first=group.first,
                last=group.last,
            )
            for key, group in sorted(self._groups.items(), key=lambda item: _sort_key(item[0]))
        }
        return LogSummary(
            filter=self.filter,
            slowest_limit=self.slowest,
            error_sample_limit=self.error_samples,
            max_time_buckets=self.max_time_buckets,
            input=InputStats(
                records=self._records,
                filtered_out=self._filtered,
                other_events=self._tally.other_events,
                malformed=dict(sorted(self._tally.malformed.items())),
                malformed_examples=dict(sorted(self._tally.examples.items())),
            ),
            groups=groups,
            slowest=tuple(sorted(self._slow, reverse=True)),
            recent_errors=tuple(sorted(self._errors, reverse=True)),
            timeline=self._series.rows(),
            bucket_width=self._series.width,
        )


def _sort_key(key: tuple[str, str, str | None]) -> tuple[str, str, str]:
    return key[0], key[1], key[2] or ""


def _push_bounded(heap: list[Any], item: Any, limit: int) -> None:
    if not limit:
        return
    if len(heap) < limit:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heappushpop(heap, item)


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
        return _epoch(min(g.first for g in self.groups.values())) if self.groups else None

    @property
    def last(self) -> datetime | None:
        """The latest timestamp (``None`` without records)."""
        return _epoch(max(g.last for g in self.groups.values())) if self.groups else None

    def latency(self) -> LatencySketch:
        """All durations in one sketch (a new one)."""
        sketch = LatencySketch()
        for group in self.groups.values():
            sketch.merge(group.latency)
        return sketch

    def methods(self) -> list[MethodStats]:
        """Per ``service/method`` figures, sorted by service and method."""
        by_method: dict[tuple[str, str], list[tuple[str | None, GroupStats]]] = {}
        for (service, method, peer), stats in self.groups.items():
            by_method.setdefault((service, method), []).append((peer, stats))
        return [
            _method_stats(service, method, peers)
            for (service, method), peers in sorted(by_method.items())
        ]

    def error_counts(self) -> list[tuple[str, str, str, int]]:
        """``(service, method, code, calls)`` for every code other than ``"OK"``."""
        counts: dict[tuple[str, str, str], int] = {}
        for (service, method, _peer), stats in self.groups.items():
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
                    "cache_hit_ratio": m.cache_hit_ratio,
                    "peers": [
                        {
                            "peer": p.peer,
                            "calls": p.calls,
                            "share": p.share,
                            "errors": p.errors,
                            "mean_ms": p.mean_ms,
                            "p50_ms": p.p50_ms,
                            "p99_ms": p.p99_ms,
                            "max_ms": p.max_ms,
                        }
                        for p in m.peers
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
                    "peer": e.peer,
                    "code": e.code,
                    "message": e.message,
                    "duration_ms": e.duration_ms,
                    "trace_id": e.trace_id,
                    "span_id": e.span_id,
                }
                for e in self.recent_errors
            ],
            "timeline": {
                "bucket_width_s": self.bucket_width,
                "buckets": [
                    {
                        "start": _iso(_epoch(b.start)),
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
    return {
        "mean_ms": sketch.mean,
        "p50_ms": sketch.quantile(0.5),
        "p90_ms": sketch.quantile(0.9),
        "p99_ms": sketch.quantile(0.99),
        "max_ms": sketch.max,
    }


def _method_stats(
    service: str, method: str, peers: list[tuple[str | None, GroupStats]]
) -> MethodStats:
    latency = LatencySketch()
    codes: dict[str, int] = {}
    hits = misses = 0
    first, last = math.inf, -math.inf
    for _peer, stats in peers:
        latency.merge(stats.latency)
        for code, n in stats.codes.items():
            codes[code] = codes.get(code, 0) + n
        hits += stats.cache_hits
        misses += stats.cache_misses
        first = min(first, stats.first)
        last = max(last, stats.last)
    calls = latency.count
    errors = calls - codes.get(CODE_OK, 0)
    peer_rows = tuple(
        PeerStats(
            peer=peer,
            calls=stats.calls,
            share=stats.calls / calls,
            errors=stats.calls - stats.codes.get(CODE_OK, 0),
            mean_ms=stats.latency.mean,
            p50_ms=stats.latency.quantile(0.5),
            p99_ms=stats.latency.quantile(0.99),
            max_ms=stats.latency.max,
        )
        for peer, stats in peers
    )
    return MethodStats(
        service=service,
        method=method,
        calls=calls,
        errors=errors,
        codes=dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
        mean_ms=latency.mean,
        p50_ms=latency.quantile(0.5),
        p90_ms=latency.quantile(0.9),
        p99_ms=latency.quantile(0.99),
        max_ms=latency.max,
        first=_epoch(first),
        last=_epoch(last),
        throughput=calls / (last - first) if last > first else None,
        cache_hit_ratio=hits / (hits + misses) if hits + misses else None,
        peers=peer_rows,
    )


def summarize(
    records: Iterable[CallRecord],
    *,
    filter: RecordFilter | None = None,  # noqa: A002 - the natural name
    slowest: int = _DEFAULT_SLOWEST,
    error_samples: int = _DEFAULT_ERROR_SAMPLES,
    max_time_buckets: int = _DEFAULT_TIME_BUCKETS,
) -> LogSummary:
    """Summarise call records in one pass (see :class:`SummaryBuilder` for the options)."""
    builder = SummaryBuilder(
        filter=filter,
        slowest=slowest,
        error_samples=error_samples,
        max_time_buckets=max_time_buckets,
    )
    builder.add(records)
    return builder.build()


def merge_summaries(summaries: Iterable[LogSummary]) -> LogSummary:
    """Combine summaries of disjoint sets of records into the summary of their union.

    The limits (slowest, error samples, time buckets) and filter of the first summary
    apply.

    Raises:
        ValueError: ``summaries`` is empty.
    """
    iterator: Iterator[LogSummary] = iter(summaries)
    first = next(iterator, None)
    if first is None:
        raise ValueError("merge_summaries() needs at least one summary")
    builder = SummaryBuilder(
        filter=first.filter,
        slowest=first.slowest_limit,
        error_samples=first.error_sample_limit,
        max_time_buckets=first.max_time_buckets,
    )
    builder.merge(first)
    for summary in iterator:
        builder.merge(summary)
    return builder.build()
