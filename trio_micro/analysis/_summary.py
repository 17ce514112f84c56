"""Streaming, mergeable summaries of RPC access logs.

Theory of operation: :class:`SummaryBuilder` keeps one accumulator per
``(service, method, server)`` -- counts, error codes, cache hits, first and last timestamps
and a :class:`LatencySketch` -- plus two bounded heaps (the slowest calls, the most recent
errors) and a bounded :class:`TimeBucket` series. Everything in it merges exactly: counts
add, sketches add bucket counts, heaps keep the top of the union under a total order, time
series coarsen to a common width. So summaries of parts of a log (files, byte ranges,
processes) combine with :func:`merge_summaries` into the summary of the whole, and memory
depends on the number of distinct ``(service, method, server)`` and the limits, never on
the number of records. Per-method figures are merged from the per-replica (``server``)
accumulators when asked for.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress, islice, repeat
from math import floor, log
from operator import add, attrgetter, eq, itemgetter, le, ne, sub
from typing import Any, Final, Protocol, cast, final

from ..observe import CACHE_HIT, CACHE_MISS, CODE_OK, CallRecord
from ._decode import (
    LineFinder,
    _FullRow,
    _Row,
    _Tally,
    decode_each_line,
    decode_rows,
    drop_incomplete,
    parse_times,
    split_calls,
)
from ._sketch import (
    _INV_LOG_GAMMA,
    _ZERO,
    MIN_TRACKED,
    RELATIVE_ERROR,
    LatencySketch,
    add_counts,
    bucket_index,
)
from ._timeseries import _TICKS_PER_SECOND, TimeBucket, _TimeSeries

__all__ = [
    "ErrorSample",
    "GroupStats",
    "InputStats",
    "LogSummary",
    "MethodStats",
    "RecordFilter",
    "ReplicaStats",
    "SlowCall",
    "SummaryBuilder",
    "merge_summaries",
    "summarize",
]

_DEFAULT_SLOWEST: Final = 10
_DEFAULT_ERROR_SAMPLES: Final = 20
_DEFAULT_TIME_BUCKETS: Final = 120
_P50_P90_P99: Final = (0.5, 0.9, 0.99)
_P50_P99: Final = (0.5, 0.99)


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

    def bounds(self) -> tuple[float, float]:
        """``since`` and ``until`` as seconds since the epoch (``-inf``/``inf`` if unset)."""
        return (
            -math.inf if self.since is None else self.since.timestamp(),
            math.inf if self.until is None else self.until.timestamp(),
        )

    def mask(self, records: Sequence[_CallRow], times: Sequence[float]) -> list[bool]:
        """Return, for each record, whether it passes; ``times`` are its epoch seconds."""
        since, until = self.bounds()
        services, methods, codes = self.services, self.methods, self.codes
        return [
            since <= t < until
            and (not services or r.service in services)
            and (not codes or r.code in codes)
            and (not methods or r.method in methods or f"{r.service}/{r.method}" in methods)
            for r, t in zip(records, times, strict=True)
        ]

    def matches(self, record: CallRecord) -> bool:
        """Return whether ``record`` passes every condition (as :meth:`mask` decides)."""
        return self.mask((record,), (record.timestamp.timestamp(),))[0]


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
    replicas: tuple[ReplicaStats, ...]

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


class _CallRow(Protocol):
    """What the builder counts of a call: a ``_Row`` or a :class:`CallRecord`."""

    @property
    def service(self) -> str | None: ...
    @property
    def method(self) -> str | None: ...
    @property
    def server(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def duration_ms(self) -> float | None: ...
    @property
    def cache(self) -> str | None: ...


class _Detailed(Protocol):
    """What the builder shows of a sampled call (slowest, errors)."""

    @property
    def server(self) -> str | None: ...
    @property
    def peer(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def span_id(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class _IncompleteRowError(Exception):
    """A call row lacks a required field (found before anything was counted)."""


# (service, method, server, cache): the key everything is counted by; folded into
# (service, method, server) groups by _flush().
_Key = tuple[str, str, str | None, str | None]
_KEY: Final = attrgetter("service", "method", "server", "cache")
_DURATION: Final = attrgetter("duration_ms")
_CODE: Final = attrgetter("code")
_SERVER: Final = attrgetter("server")
_NO_DETAILS: Final = _FullRow()


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# Counted pairs are one int: key_id * _STRIDE + (bucket index - _ZERO), which is faster to
# hash and compare than a tuple. Bucket indices stay below _STRIDE for any finite float.
_STRIDE: Final = 1 << 20


class _KeyIds(dict[_Key, int]):
    """Key -> ``key_id * _STRIDE - _ZERO``; a new key gets the next id."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_by_id: list[_Key] = []

    def __missing__(self, key: _Key) -> int:
        if key[0] is None or key[1] is None:
            raise _IncompleteRowError
        base = self[key] = len(self.keys_by_id) * _STRIDE - _ZERO
        self.keys_by_id.append(key)
        return base

    def key_of(self, base: int) -> _Key:
        """Return the key of a key base."""
        return self.keys_by_id[(base + _ZERO) // _STRIDE]


@final
class SummaryBuilder:
    """Accumulates call records into a :class:`LogSummary`, in constant memory.

    Theory of operation: records arrive in batches (a decoded chunk of a log) and each
    batch is reduced with C-level bulk operations, so that Python code runs per distinct
    key, not per record: ``map``/``attrgetter`` pull out columns; one
    :meth:`Counter.update <collections.Counter.update>` counts ``(key, latency bucket)``
    pairs into a counter that lives as long as the builder (its size is bounded by the
    keys times the buckets in use), folded into sketches only by :meth:`build`; durations
    are sorted into one list per key by ``map(list.append, ...)`` for the sum, min and
    max; failed calls are picked out with ``compress``. Logs are written in time order,
    so a batch is usually sorted by time: then the last call of each key is found by
    ``list.index`` from the end (the first call only for keys that may start earlier
    than what was seen), and the time series takes whole runs of records per bucket
    (found by bisection), counted into the bucket's sketch by one ``Counter.update``.
    An unsorted batch takes a per-record path with the same result. Mind the order of
    float additions when changing this: sums are added per key and chunk, so that the
    output is the same from run to run.

    Args:
        filter: Which records to count (others count as ``filtered_out``).
        slowest: How many of the slowest calls to keep.
        error_samples: How many of the most recent failed calls to keep.
        max_time_buckets: Most buckets of the time series.

    Raises:
        ValueError: A limit is negative, or ``max_time_buckets`` is below 2.
    """

    __slots__ = (
        "_db_queries",
        "_error_codes",
        "_errors",
        "_filtered",
        "_first_seen",
        "_groups",
        "_key_ids",
        "_pairs",
        "_records",
        "_series",
        "_slow",
        "_stats",
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
        self._key_ids = _KeyIds()
        self._pairs: Counter[int] = Counter()
        self._error_codes: Counter[tuple[int, str]] = Counter()
        # key base -> [total, min, max, first, last]
        self._stats: dict[int, list[float]] = {}
        # key base -> the earliest time seen of the key (kept across flushes: bounded by
        # the keys), so that a batch in time order only looks for the first call of keys
        # that may start earlier
        self._first_seen: dict[int, float] = {}
        self._slow: list[SlowCall] = []
        self._errors: list[ErrorSample] = []
        self._tally = _Tally()
        self._db_queries: Counter[str | None] = Counter()
        self._records = 0
        self._filtered = 0

    def add_json_lines(self, data: bytes | bytearray | Iterable[bytes | str]) -> None:
        """Decode and add JSON lines: a ``bytes`` chunk of whole lines, or single lines.

        A ``bytearray`` chunk is read in place, not kept: the caller may refill it after
        the call.

        Lines that are other events or malformed are counted, never raised. Records of
        ``users.db.query`` are also counted per ``server``, unless the filter names
        services, methods or codes (which such records do not have).
        """
        tally = self._tally
        finder: LineFinder | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            if isinstance(data, memoryview):
                data = bytes(data)  # a bytearray is used as it is (no copy)
            rows = decode_rows(data, tally)
            finder = LineFinder(data)
        else:
            rows = decode_each_line(data, tally, full=True)
        calls, db_rows = split_calls(rows, tally)
        if db_rows:
            self._count_db_queries(db_rows)
        kept, stamps, time_of = parse_times(calls, tally)
        if finder is None:  # decoded as _FullRow
            self._add_calls(kept, stamps, time_of, lambda i: cast(_FullRow, kept[i]))
        else:
            find = finder.find
            n = len(kept)
            self._add_calls(kept, stamps, time_of, lambda i: find(kept[i], i / n) or _NO_DETAILS)

    def _count_db_queries(self, rows: list[_Row]) -> None:
        flt = self.filter
        if flt.services or flt.methods or flt.codes:
            return
        db = self._db_queries
        if flt.since is None and flt.until is None:
            db.update(map(_SERVER, rows))
            return
        since, until = flt.bounds()
        rows, stamps, time_of = parse_times(rows, None)
        for row, stamp in zip(rows, stamps, strict=True):
            if since <= time_of(stamp) < until:
                db[row.server] = db.get(row.server, 0) + 1

    def add(self, records: Iterable[CallRecord]) -> None:
        """Add call records."""
        rows = list(records)
        times = [r.timestamp.timestamp() for r in rows]
        self._add_calls(rows, times, float, rows.__getitem__)

    def _add_calls(
        self,
        rows: Sequence[_CallRow],
        stamps: Sequence[Any],
        time_of: Callable[[Any], float],
        details: Callable[[int], _Detailed],
    ) -> None:
        """Add call rows whose timestamps are ``stamps`` (``time_of`` gives epoch seconds).

        ``details(i)`` returns the sampled fields of ``rows[i]`` (asked in order).
        """
        times: list[Any] = stamps if isinstance(stamps, list) else list(stamps)
        if self.filter.active:
            if time_of is not float:
                times = list(map(time_of, stamps))
                time_of = float
            positions = list(range(len(rows)))
            rows, times, positions = drop_incomplete(rows, times, positions, self._tally)
            keep = self.filter.mask(rows, times)
            total = len(rows)
            rows = list(compress(rows, keep))
            times = list(compress(times, keep))
            positions = list(compress(positions, keep))
            self._filtered += total - len(rows)
            by_index = details
            details = lambda i: by_index(positions[i])  # noqa: E731
        if not rows:
            return
        try:
            self._add_batch(rows, times, time_of, details)
        except _IncompleteRowError:
            positions = list(range(len(rows)))
            rows, times, positions = drop_incomplete(rows, times, positions, self._tally)
            by_index = details
            if rows:
                self._add_batch(rows, times, time_of, lambda i: by_index(positions[i]))

    def _add_batch(
        self,
        rows: Sequence[_CallRow],
        times: list[Any],
        time_of: Callable[[Any], float],
        details: Callable[[int], _Detailed],
    ) -> None:
        # The hot path, see the class docstring. Nothing is changed before every check
        # that can raise _IncompleteRowError has passed.
        n = len(rows)
        key_ids = self._key_ids
        bases: list[int] = list(map(key_ids.__getitem__, map(_KEY, rows)))
        durations: list[float] = list(map(_DURATION, rows))
        codes: list[str] = list(map(_CODE, rows))
        ok = codes.count(CODE_OK)
        failed: list[int] = []
        if ok < n:
            failed = list(compress(range(n), map(ne, codes, repeat(CODE_OK))))
            failed_codes = list(map(codes.__getitem__, failed))
            if None in failed_codes:
                raise _IncompleteRowError
        # parse_times returns strings only when they are in order.
        in_order = time_of is not float or all(map(le, times, islice(times, 1, None)))
        if not in_order and time_of is not float:
            times = list(map(time_of, times))
            time_of = float
        firsts: dict[int, float] = {}
        first_seen = self._first_seen
        if in_order:
            # Distinct keys in order of appearance, with the time of their last call.
            present = dict.fromkeys(bases)
            lasts = {base: time_of(times[i]) for base, i in _last_positions(bases, present).items()}
            # A key already seen at or before this batch starts keeps its first time, so
            # only the others look for their first call (usually near the start).
            start_time = time_of(times[0])
            new = [base for base in present if first_seen.get(base, math.inf) > start_time]
            if new:
                for base, i in _first_positions(bases, new).items():
                    firsts[base] = time_of(times[i])
        else:
            lasts = {}
            for base, t in zip(bases, times, strict=True):
                if t < firsts.get(base, math.inf):
                    firsts[base] = t
                if t > lasts.get(base, -math.inf):
                    lasts[base] = t
        # Durations by key: sum, min and max (a None among them fails the batch here).
        by_key: dict[int, list[float]] = {base: [] for base in lasts}
        deque(map(list.append, map(by_key.__getitem__, bases), durations), maxlen=0)
        try:
            sums = [(sum(values), min(values), max(values)) for values in by_key.values()]
        except TypeError:  # a None among them
            raise _IncompleteRowError from None
        smallest = min(low for _total, low, _high in sums)
        largest = max(high for _total, _low, high in sums)
        if smallest >= MIN_TRACKED:
            indices = list(map(floor, map(_INV_LOG_GAMMA.__mul__, map(log, durations))))
        else:
            indices = list(map(bucket_index, durations))

        # Per key: latency buckets, error codes, sum/min/max, first/last.
        self._pairs.update(map(add, bases, indices))
        if failed:
            self._error_codes.update(zip(map(bases.__getitem__, failed), failed_codes, strict=True))
        stats = self._stats
        for base, (total, low, high) in zip(by_key, sums, strict=True):
            first = firsts.get(base, math.inf)
            last = lasts[base]
            if first < first_seen.get(base, math.inf):
                first_seen[base] = first
            acc = stats.get(base)
            if acc is None:
                stats[base] = [total, low, high, first, last]
            else:
                acc[0] += total
                acc[1] = min(acc[1], low)
                acc[2] = max(acc[2], high)
                acc[3] = min(acc[3], first)
                acc[4] = max(acc[4], last)

        # Time series.
        series = self._series
        per_s = _TICKS_PER_SECOND
        if in_order:
            series.cover(floor(time_of(times[0]) * per_s), floor(time_of(times[-1]) * per_s))
            level = series.level
            start = 0

            def ticks_of(stamp: Any) -> float:
                return time_of(stamp) * per_s

            while start < n:
                j = floor(ticks_of(times[start])) >> level
                end = bisect_left(times, float((j + 1) << level), start, n, key=ticks_of)
                segment = durations[start:end]
                cell = series.cell(j)
                cell.calls += end - start
                cell.errors += end - start - codes[start:end].count(CODE_OK)
                sketch = cell.latency
                sketch._buckets.update(indices[start:end])
                sketch.count += end - start
                sketch.total += sum(segment)
                sketch.min = min(sketch.min, min(segment))
                sketch.max = max(sketch.max, max(segment))
                start = end
        else:
            ticks = list(map(floor, map(per_s.__mul__, times)))
            series.cover(min(ticks), max(ticks))
            level = series.level
            for tick, index, d, code in zip(ticks, indices, durations, codes, strict=True):
                cell = series.cell(tick >> level)
                cell.calls += 1
                cell.errors += code != CODE_OK
                cell.latency._add_at(index, d)

        # The slowest calls and the most recent errors.
        key_of = key_ids.key_of
        slow, limit = self._slow, self.slowest
        if limit:
            floor_ms = slow[0].duration_ms if len(slow) >= limit else -math.inf
            chosen: list[int] = []
            if largest >= floor_ms:
                candidates = compress(range(n), map(le, repeat(floor_ms), durations))
                chosen = heapq.nlargest(limit, candidates, key=durations.__getitem__)
                if len(chosen) == limit:
                    chosen = _break_ties(chosen, limit, durations, times)
            for i in sorted(chosen):
                more = details(i)
                key = key_of(bases[i])
                call = SlowCall(
                    durations[i],
                    _epoch(time_of(times[i])),
                    key[0],
                    key[1],
                    key[2] or "",
                    more.peer or "",
                    codes[i],
                    more.trace_id or "",
                    more.span_id or "",
                )
                _push_bounded(slow, call, limit)
        errors, limit = self._errors, self.error_samples
        if limit and failed:
            floor_s = errors[0].timestamp.timestamp() if len(errors) >= limit else -math.inf
            # In time order only the newest `limit` can be kept.
            for i in failed[-limit:] if in_order else failed:
                t = time_of(times[i])
                if t < floor_s:
                    continue
                more = details(i)
                key = key_of(bases[i])
                sample = ErrorSample(
                    _epoch(t),
                    key[0],
                    key[1],
                    key[2] or "",
                    more.peer or "",
                    codes[i],
                    more.message or "",
                    durations[i],
                    more.trace_id or "",
                    more.span_id or "",
                )
                _push_bounded(errors, sample, limit)
        self._records += n

    def _flush(self) -> None:
        """Fold the per-key counters into the per-group accumulators."""
        groups = self._groups

        def group_of(key: _Key) -> _Group:
            group = groups.get(key[:3])
            if group is None:
                group = groups[key[:3]] = _Group()
            return group

        key_of = self._key_ids.key_of
        keys_by_id = self._key_ids.keys_by_id
        # Sorted, the pairs of one key are a run (key_id * _STRIDE + offset): fold each
        # run with C-level operations.
        ordered = sorted(self._pairs.items())
        packed: list[int] = list(map(itemgetter(0), ordered))
        counts: list[int] = list(map(itemgetter(1), ordered))
        start, end = 0, len(packed)
        while start < end:
            key_id = packed[start] // _STRIDE
            stop = bisect_left(packed, (key_id + 1) * _STRIDE, start, end)
            key = keys_by_id[key_id]
            group = group_of(key)
            sketch = group.latency
            indices = map(sub, islice(packed, start, stop), repeat(key_id * _STRIDE - _ZERO))
            add_counts(sketch._buckets, dict(zip(indices, counts[start:stop], strict=True)))
            count = sum(counts[start:stop])
            sketch.count += count
            group.codes[CODE_OK] = group.codes.get(CODE_OK, 0) + count
            if key[3] == CACHE_HIT:
                group.hits += count
            elif key[3] == CACHE_MISS:
                group.misses += count
            start = stop
        for (base, code), count in self._error_codes.items():
            codes = group_of(key_of(base)).codes
            codes[CODE_OK] -= count
            codes[code] = codes.get(code, 0) + count
        for base, (total, low, high, first, last) in self._stats.items():
            group = group_of(key_of(base))
            sketch = group.latency
            sketch.total += total
            sketch.min = min(sketch.min, low)
            sketch.max = max(sketch.max, high)
            group.first = min(group.first, first)
            group.last = max(group.last, last)
        for group in groups.values():
            if not group.codes.get(CODE_OK, 1):
                del group.codes[CODE_OK]
        self._pairs.clear()
        self._error_codes.clear()
        self._stats.clear()

    def merge(self, summary: LogSummary) -> None:
        """Add everything counted in ``summary`` (a summary of other records).

        The result is the same as if this builder had seen those records too; the
        limits of this builder apply.
        """
        self._flush()
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
        for server, n in summary.db_queries.items():
            self._db_queries[server] = self._db_queries.get(server, 0) + n
        self._records += summary.input.records
        self._filtered += summary.input.filtered_out

    def build(self) -> LogSummary:
        """Return the summary of everything added so far (the builder stays usable)."""
        self._flush()
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
            db_queries=dict(sorted(self._db_queries.items(), key=lambda item: item[0] or "")),
        )


def _last_positions(items: list[int], keys: Iterable[int]) -> dict[int, int]:
    """Where each of ``keys`` (all in ``items``) occurs last in ``items``.

    Searched from the end with ``list.index``, which finds frequent keys after a few
    items; if the searches add up to more than ``len(items)`` (many rare keys), one
    pass over all items instead.
    """
    n = len(items)
    backwards = items[::-1]
    budget = n
    out: dict[int, int] = {}
    for key in keys:
        i = backwards.index(key)
        budget -= i
        if budget < 0:
            last = dict(zip(items, range(n), strict=True))
            return {key: last[key] for key in keys}
        out[key] = n - 1 - i
    return out


def _first_positions(items: list[int], keys: list[int]) -> dict[int, int]:
    """Where each of ``keys`` (all in ``items``) occurs first in ``items`` (as above)."""
    n = len(items)
    budget = n
    out: dict[int, int] = {}
    for key in keys:
        i = items.index(key)
        budget -= i
        if budget < 0:
            first = dict(zip(reversed(items), range(n - 1, -1, -1), strict=True))
            return {key: first[key] for key in keys}
        out[key] = i
    return out


def _sort_key(key: tuple[str, str, str | None]) -> tuple[str, str, str]:
    return key[0], key[1], key[2] or ""


def _break_ties(
    chosen: list[int], limit: int, durations: Sequence[float], times: Sequence[Any]
) -> list[int]:
    """Widen a chunk's ``limit`` slowest (by duration alone) to the calls tied with them.

    ``heapq.nlargest`` breaks ties in duration by position in the chunk; the slowest list
    must break them by :class:`SlowCall`'s order (duration, then time, then the rest), or
    it would depend on how the input was cut into chunks. Among the calls tied with the
    last one chosen this keeps the latest (``times`` sort like the times they stand for:
    floats, or UTC stamps of one format), and all tied with the last of those on time too;
    :func:`_push_bounded` then applies the full order.
    """
    edge = durations[chosen[-1]]
    tied = list(compress(range(len(durations)), map(eq, repeat(edge), durations)))
    if len(tied) < 2:
        return chosen
    above = [i for i in chosen if durations[i] > edge]
    latest = heapq.nlargest(limit - len(above), tied, key=times.__getitem__)
    last = times[latest[-1]]
    return above + [i for i in tied if times[i] >= last]


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
        db_queries: ``users.db.query`` records by ``server`` (``None``: not logged).
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
    db_queries: Mapping[str | None, int] = field(default_factory=dict)

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
                    "cache_hit_ratio": m.cache_hit_ratio,
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
            "database_queries": [
                {"server": server, "queries": n} for server, n in self.db_queries.items()
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
    p50, p90, p99 = sketch._quantiles(_P50_P90_P99)
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
    hits = misses = 0
    first, last = math.inf, -math.inf
    for _server, stats in replicas:
        latency.merge(stats.latency)
        for code, n in stats.codes.items():
            codes[code] = codes.get(code, 0) + n
        hits += stats.cache_hits
        misses += stats.cache_misses
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
        for p50, p99 in [stats.latency._quantiles(_P50_P99)]
    )
    p50, p90, p99 = latency._quantiles(_P50_P90_P99)
    return MethodStats(
        service=service,
        method=method,
        calls=calls,
        errors=errors,
        codes=dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
        mean_ms=latency.mean,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=latency.max,
        first=_epoch(first),
        last=_epoch(last),
        throughput=calls / (last - first) if last > first else None,
        cache_hit_ratio=hits / (hits + misses) if hits + misses else None,
        replicas=replica_rows,
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
