"""The counting kernel of :class:`~trio_micro.analysis.SummaryBuilder`: one batch at a time.

Theory of operation: records arrive in batches (a decoded chunk of a log) and each batch
is reduced with C-level bulk operations, so that Python code runs per distinct key, not
per record. A key is ``(service, method, server, *group_by values)``; :class:`KeyIds` gives
each a base, an int such that ``base + bucket index`` is a distinct, cheaply hashed int
per ``(key, latency bucket)``. Then, for a batch:

* ``map``/``attrgetter`` pull out columns (key bases, durations, codes);
* if the batch is not in time order (rare: logs are written in time order), it is sorted
  by time first, so that everything below runs in time order;
* one :meth:`Counter.update <collections.Counter.update>` counts the ``(key, bucket)``
  ints of the whole batch into :attr:`CallCounter.pairs`, which lives as long as the
  builder (its size is bounded by the keys times the buckets in use) and is folded into
  per-group sketches only by :meth:`CallCounter.fold`;
* durations are sorted into one list per key by ``map(list.append, ...)`` for the sum,
  min and max (:class:`KeyStats`); the last call of each key is found by ``list.index``
  from the end, the first only for keys that may start earlier than what was seen;
* the time series takes whole runs of records per bucket (found by bisection), added to
  the bucket's sketch by :meth:`LatencySketch.add_many` with the batch's bucket indices;
* the slowest calls are picked by ``heapq.nlargest`` among those above the current floor,
  failed calls by ``compress``; only the few kept are looked up in full (``details``).

``tests/analysis/test_kernel.py`` checks this against a plain per-record reference. Mind
the order of float additions when changing it: sums are added per key and batch, so that
the output is the same from run to run.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, islice, repeat
from math import floor
from operator import add, attrgetter, eq, itemgetter, le, ne, sub
from typing import Any, Final, Protocol, final

import msgspec

from ..observe import CODE_OK
from ._filter import CallRow
from ._model import ErrorSample, GroupStats, SlowCall, add_counts, epoch
from ._sketch import LatencySketch, bucket_index
from ._timeseries import _TICKS_PER_SECOND, _TimeSeries

__all__: list[str] = []  # internal to the analysis package

#: ``(service, method, server, *group_by values)``: what calls are counted by.
Key = tuple[Any, ...]
#: ``(service, method, server)``: what a :class:`GroupStats` describes.
GroupKey = tuple[str, str, str | None]

_DURATION: Final = attrgetter("duration_ms")
_CODE: Final = attrgetter("code")
# Counted pairs are one int: key_id * _STRIDE + (bucket index - _ZERO_INDEX), which is faster
# to hash and compare than a tuple. Bucket indices stay below _STRIDE for any finite float.
_STRIDE: Final = 1 << 20
_ZERO_INDEX: Final = bucket_index(0.0)


class Detailed(Protocol):
    """What a summary shows of a sampled call (slowest, errors)."""

    @property
    def peer(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def span_id(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class IncompleteRowError(Exception):
    """A call row lacks a required field (found before anything was counted)."""


class KeyIds(dict[Key, int]):
    """Key -> its base, ``key_id * _STRIDE - _ZERO_INDEX``; a new key gets the next id."""

    def __init__(self) -> None:
        super().__init__()
        self.keys_by_id: list[Key] = []

    def __missing__(self, key: Key) -> int:
        if key[0] is None or key[1] is None:
            raise IncompleteRowError
        base = self[key] = len(self.keys_by_id) * _STRIDE - _ZERO_INDEX
        self.keys_by_id.append(key)
        return base

    def key_of(self, base: int) -> Key:
        """Return the key of a key base."""
        return self.keys_by_id[(base + _ZERO_INDEX) // _STRIDE]


@final
class KeyStats:
    """The running figures of one key: sum and extremes of its durations, its time span."""

    __slots__ = ("first", "last", "longest", "shortest", "total")

    def __init__(self) -> None:
        #: Sum of the durations (ms).
        self.total = 0.0
        #: Shortest and longest duration (ms).
        self.shortest = math.inf
        self.longest = -math.inf
        #: Earliest and latest timestamp, seconds since the epoch.
        self.first = math.inf
        self.last = -math.inf


@final
class GroupAccumulator:
    """The mutable form of :class:`GroupStats`, merged from keys and summaries."""

    __slots__ = ("codes", "fields", "first", "last", "latency")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.fields: dict[str, dict[str, int]] = {}
        self.latency = LatencySketch()
        self.first = math.inf
        self.last = -math.inf

    def add(self, stats: GroupStats) -> None:
        """Add the figures of ``stats`` (a group of other records)."""
        add_counts(self.codes, stats.codes)
        for name, counts in stats.fields.items():
            add_counts(self.fields.setdefault(name, {}), counts)
        self.latency.merge(stats.latency)
        self.first = min(self.first, stats.first)
        self.last = max(self.last, stats.last)

    def stats(self) -> GroupStats:
        """Return the figures as an immutable :class:`GroupStats`."""
        codes = {code: n for code, n in self.codes.items() if n}
        return GroupStats(
            calls=self.latency.count,
            codes=codes,
            fields={name: dict(counts) for name, counts in self.fields.items()},
            latency=self.latency.copy(),
            first=self.first,
            last=self.last,
        )


def value_name(value: object) -> str:
    """A ``group_by`` value as shown: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


@final
class Batch:
    """The columns of one batch of call ``rows``, in time order (sorted here if not).

    ``times`` are the rows' timestamps and ``time_of`` turns one into seconds since the
    epoch; timestamps that are not floats sort like the times they stand for and are in
    order. ``details(i)`` returns the sampled fields of ``rows[i]``, ``key_of(row)`` its
    key, and ``key_ids`` numbers the keys (:attr:`CallCounter.key_ids`).

    Raises:
        IncompleteRowError: A row lacks its service, method or code.
    """

    __slots__ = ("bases", "codes", "details", "durations", "failed", "key_ids", "time_of", "times")

    def __init__(
        self,
        rows: Sequence[CallRow],
        times: list[Any],
        time_of: Callable[[Any], float],
        details: Callable[[int], Detailed],
        key_of: Callable[[Any], Key],
        key_ids: KeyIds,
    ) -> None:
        n = len(rows)
        self.key_ids = key_ids
        #: The key base of each row (see KeyIds), its duration, code and timestamp.
        self.bases: list[int] = list(map(key_ids.__getitem__, map(key_of, rows)))
        self.durations: list[float] = list(map(_DURATION, rows))
        self.codes: list[str] = list(map(_CODE, rows))
        self.times = times
        self.time_of = time_of
        #: The sampled fields of a row, by its position here.
        self.details = details
        if time_of is float and not all(map(le, times, islice(times, 1, None))):
            order = sorted(range(n), key=times.__getitem__)
            self.bases, self.durations, self.codes, self.times = (
                list(map(column.__getitem__, order))
                for column in (self.bases, self.durations, self.codes, times)
            )
            self.details = lambda i: details(order[i])
        #: Positions of the failed calls.
        self.failed: list[int] = []
        if self.codes.count(CODE_OK) < n:
            self.failed = list(compress(range(n), map(ne, self.codes, repeat(CODE_OK))))
            if None in list(map(self.codes.__getitem__, self.failed)):
                raise IncompleteRowError

    def sampled(self, i: int) -> tuple[str, str, str, Detailed]:
        """``(service, method, server or "", details)`` of row ``i``."""
        service, method, server = self.key_ids.key_of(self.bases[i])[:3]
        return service, method, server or "", self.details(i)


@final
class CallCounter:
    """Everything a summary counts of call records, and the kernel that counts a batch.

    Args:
        group_by: The fields after ``(service, method, server)`` in every key.
        slowest: How many of the slowest calls to keep.
        error_samples: How many of the most recent failed calls to keep.
        max_time_buckets: Most buckets of the time series.
    """

    __slots__ = (
        "error_codes",
        "error_samples",
        "errors",
        "group_by",
        "key_ids",
        "keys",
        "pairs",
        "records",
        "series",
        "slow",
        "slowest",
    )

    def __init__(
        self, group_by: tuple[str, ...], slowest: int, error_samples: int, max_time_buckets: int
    ) -> None:
        self.group_by = group_by
        self.slowest = slowest
        self.error_samples = error_samples
        self.series = _TimeSeries(max_time_buckets)
        self.key_ids = KeyIds()
        #: key base + bucket index -> calls
        self.pairs: Counter[int] = Counter()
        #: (key base, code) -> failed calls
        self.error_codes: Counter[tuple[int, str]] = Counter()
        #: key base -> its running figures
        self.keys: dict[int, KeyStats] = {}
        #: Heaps of the slowest calls and of the most recent failed calls.
        self.slow: list[SlowCall] = []
        self.errors: list[ErrorSample] = []
        #: Call records counted.
        self.records = 0

    def add_batch(self, batch: Batch) -> None:
        """Count a batch of call rows (not empty; made with this counter's ``key_ids``)."""
        # Every check that can raise IncompleteRowError comes before the first change.
        # Durations by key, keys in order of appearance: sum, min and max.
        by_key: dict[int, list[float]] = {base: [] for base in dict.fromkeys(batch.bases)}
        deque(map(list.append, map(by_key.__getitem__, batch.bases), batch.durations), maxlen=0)
        try:
            sums = [(sum(values), min(values), max(values)) for values in by_key.values()]
        except TypeError:  # a None among them
            raise IncompleteRowError from None

        smallest = min(low for _total, low, _high in sums)
        indices = LatencySketch.bucket_indices(batch.durations, smallest)
        self.pairs.update(map(add, batch.bases, indices))
        if batch.failed:
            failed = batch.failed
            codes = map(batch.codes.__getitem__, failed)
            self.error_codes.update(zip(map(batch.bases.__getitem__, failed), codes, strict=True))
        self._add_key_stats(batch, by_key, sums)
        self._add_to_series(batch, indices)
        largest = max(high for _total, _low, high in sums)
        if self.slowest and largest >= self._slowest_floor():
            self._sample_slowest(batch)
        if self.error_samples and batch.failed:
            self._sample_errors(batch)
        self.records += len(batch.bases)

    def _add_key_stats(
        self, batch: Batch, by_key: Mapping[int, object], sums: list[tuple[float, float, float]]
    ) -> None:
        keys, bases, times, time_of = self.keys, batch.bases, batch.times, batch.time_of
        lasts = _last_positions(bases, by_key)
        # A key already seen at or before this batch starts keeps its first time, so only
        # the others look for their first call (usually near the start).
        start = time_of(times[0])
        new = [base for base in by_key if base not in keys or keys[base].first > start]
        firsts = _first_positions(bases, new) if new else {}
        for base, (total, shortest, longest) in zip(by_key, sums, strict=True):
            stats = keys.get(base)
            if stats is None:
                stats = keys[base] = KeyStats()
            stats.total += total
            stats.shortest = min(stats.shortest, shortest)
            stats.longest = max(stats.longest, longest)
            if base in firsts:
                stats.first = min(stats.first, time_of(times[firsts[base]]))
            stats.last = max(stats.last, time_of(times[lasts[base]]))

    def _add_to_series(self, batch: Batch, indices: list[int]) -> None:
        series, times, time_of = self.series, batch.times, batch.time_of
        durations, codes = batch.durations, batch.codes
        per_s = _TICKS_PER_SECOND

        def ticks_of(stamp: Any) -> float:
            return time_of(stamp) * per_s

        n = len(times)
        series.cover(floor(ticks_of(times[0])), floor(ticks_of(times[-1])))
        level = series.level
        start = 0
        while start < n:
            j = floor(ticks_of(times[start])) >> level
            end = bisect_left(times, float((j + 1) << level), start, n, key=ticks_of)
            cell = series.cell(j)
            cell.calls += end - start
            cell.errors += end - start - codes[start:end].count(CODE_OK)
            cell.latency.add_many(durations[start:end], indices[start:end])
            start = end

    def _slowest_floor(self) -> float:
        """The duration a call needs to be among the slowest kept."""
        slow = self.slow
        return slow[0].duration_ms if len(slow) >= self.slowest else -math.inf

    def _sample_slowest(self, batch: Batch) -> None:
        limit, durations = self.slowest, batch.durations
        floor_ms = self._slowest_floor()
        candidates = compress(range(len(durations)), map(le, repeat(floor_ms), durations))
        chosen = heapq.nlargest(limit, candidates, key=durations.__getitem__)
        if len(chosen) == limit:
            chosen = _break_ties(chosen, limit, durations, batch.times)
        for i in sorted(chosen):
            service, method, server, more = batch.sampled(i)
            call = SlowCall(
                durations[i],
                epoch(batch.time_of(batch.times[i])),
                service,
                method,
                server,
                more.peer or "",
                batch.codes[i],
                more.trace_id or "",
                more.span_id or "",
            )
            push_bounded(self.slow, call, limit)

    def _sample_errors(self, batch: Batch) -> None:
        errors, limit, failed, times = self.errors, self.error_samples, batch.failed, batch.times
        floor_s = errors[0].timestamp.timestamp() if len(errors) >= limit else -math.inf
        # In time order only the newest `limit` can be kept, and those at the same time
        # as the oldest of them (the full order of ErrorSample decides between them).
        k = max(0, len(failed) - limit)
        while k and times[failed[k - 1]] == times[failed[k]]:
            k -= 1
        for i in failed[k:]:
            t = batch.time_of(times[i])
            if t < floor_s:
                continue
            service, method, server, more = batch.sampled(i)
            sample = ErrorSample(
                epoch(t),
                service,
                method,
                server,
                more.peer or "",
                batch.codes[i],
                more.message or "",
                batch.durations[i],
                more.trace_id or "",
                more.span_id or "",
            )
            push_bounded(errors, sample, limit)

    def fold(self, groups: dict[GroupKey, GroupAccumulator]) -> None:
        """Add the per-key counts to per-group accumulators (this counter is unchanged)."""

        def group_of(key: Key) -> GroupAccumulator:
            group = groups.get(key[:3])
            if group is None:
                group = groups[key[:3]] = GroupAccumulator()
            return group

        keys_by_id = self.key_ids.keys_by_id
        names = self.group_by
        # Sorted, the pairs of one key are a run (key_id * _STRIDE + offset): fold each
        # run with C-level operations.
        ordered = sorted(self.pairs.items())
        packed: list[int] = list(map(itemgetter(0), ordered))
        counts: list[int] = list(map(itemgetter(1), ordered))
        start, end = 0, len(packed)
        while start < end:
            key_id = packed[start] // _STRIDE
            stop = bisect_left(packed, (key_id + 1) * _STRIDE, start, end)
            key = keys_by_id[key_id]
            base = key_id * _STRIDE - _ZERO_INDEX
            stats = self.keys[base]
            indices = map(sub, islice(packed, start, stop), repeat(base))
            sketch = LatencySketch.from_buckets(
                dict(zip(indices, counts[start:stop], strict=True)),
                total=stats.total,
                min=stats.shortest,
                max=stats.longest,
            )
            group = group_of(key)
            group.latency.merge(sketch)
            group.codes[CODE_OK] = group.codes.get(CODE_OK, 0) + sketch.count
            for name, value in zip(names, key[3:], strict=True):
                if value is not None:
                    counts_of = group.fields.setdefault(name, {})
                    shown = value_name(value)
                    counts_of[shown] = counts_of.get(shown, 0) + sketch.count
            group.first = min(group.first, stats.first)
            group.last = max(group.last, stats.last)
            start = stop
        key_of = self.key_ids.key_of
        for (base, code), count in self.error_codes.items():
            codes = group_of(key_of(base)).codes
            codes[CODE_OK] -= count
            codes[code] = codes.get(code, 0) + count


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


def _break_ties(
    chosen: list[int], limit: int, durations: Sequence[float], times: Sequence[Any]
) -> list[int]:
    """Widen a batch's ``limit`` slowest (by duration alone) to the calls tied with them.

    ``heapq.nlargest`` breaks ties in duration by position in the batch; the slowest list
    must break them by :class:`SlowCall`'s order (duration, then time, then the rest), or
    it would depend on how the input was cut into batches. Among the calls tied with the
    last one chosen this keeps the latest (``times`` sort like the times they stand for:
    floats, or UTC stamps of one format), and all tied with the last of those on time too;
    :func:`push_bounded` then applies the full order.
    """
    edge = durations[chosen[-1]]
    tied = list(compress(range(len(durations)), map(eq, repeat(edge), durations)))
    if len(tied) < 2:
        return chosen
    above = [i for i in chosen if durations[i] > edge]
    latest = heapq.nlargest(limit - len(above), tied, key=times.__getitem__)
    last = times[latest[-1]]
    return above + [i for i in tied if times[i] >= last]


def push_bounded(heap: list[Any], item: Any, limit: int) -> None:
    """Push ``item`` onto a min-heap that keeps the ``limit`` largest items."""
    if not limit:
        return
    if len(heap) < limit:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heappushpop(heap, item)
