"""Streaming, mergeable summaries of RPC access logs: :class:`SummaryBuilder`.

Theory of operation: :class:`SummaryBuilder` keeps one accumulator per
``(service, method, server, *group_by values)`` -- counts, error codes, first and last
timestamps, latency buckets -- plus two bounded heaps (the slowest calls, the most recent
errors) and a bounded :class:`TimeBucket` series (all in a :class:`CallCounter`, whose
kernel counts a batch of records; see ``_kernel.py``). Everything in it merges exactly:
counts add, sketches add bucket counts, heaps keep the top of the union under a total
order, time series coarsen to a common width. So summaries of parts of a log (files, byte
ranges, processes) combine with :func:`merge_summaries` into the summary of the whole, and
memory depends on the number of distinct keys and the limits, never on the number of
records. Per-method figures are merged from the per-replica (``server``) groups when asked
for.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress
from operator import attrgetter
from typing import Any, Final, cast, final

from ..observe import CALL_EVENTS, CallRecord
from ._decode import (
    RESERVED_FIELDS,
    LineFinder,
    _FullRow,
    _Row,
    _Tally,
    decode_each_line,
    decode_rows,
    drop_incomplete,
    parse_times,
    row_schema,
    split_calls,
)
from ._filter import CallRow, RecordFilter
from ._kernel import (
    Batch,
    CallCounter,
    Detailed,
    GroupAccumulator,
    GroupKey,
    IncompleteRowError,
    Key,
    push_bounded,
)
from ._model import MARK_EVENTS, MAX_MARKS, EventMark, InputStats, LogSummary

__all__ = ["SummaryBuilder", "merge_summaries", "summarize"]

_DEFAULT_SLOWEST: Final = 10
_DEFAULT_ERROR_SAMPLES: Final = 20
_DEFAULT_TIME_BUCKETS: Final = 120
_SERVER: Final = attrgetter("server")
_EVENT: Final = attrgetter("event")
_NO_DETAILS: Final = _FullRow()


@final
class SummaryBuilder:
    """Accumulates call records into a :class:`LogSummary`, in constant memory.

    Besides the fixed figures (calls, codes, latency, time span per ``service/method``
    and replica), a summary counts what the caller names: ``group_by`` fields split each
    group's calls by the value logged (e.g. ``group_by=("cache",)`` counts ``"hit"`` and
    ``"miss"``), and the records of ``count_events`` (events other than calls, e.g.
    ``"db.query"``) are counted per ``server``. The records of
    :data:`~trio_micro.analysis.MARK_EVENTS` (a replica stops serving, a worker restarts,
    a GOAWAY) are kept as :attr:`LogSummary.marks`, the earliest :data:`MAX_MARKS`.

    Args:
        filter: Which records to count (others count as ``filtered_out``).
        slowest: How many of the slowest calls to keep.
        error_samples: How many of the most recent failed calls to keep.
        max_time_buckets: Most buckets of the time series.
        group_by: Log fields whose values to count calls by: strings, numbers or booleans
            (values equal in Python, such as ``1`` and ``true``, count as one; a call
            record whose value is an object or an array is ``wrong_type``).
        count_events: Events whose records to count per ``server``.

    Raises:
        ValueError: A limit is negative, ``max_time_buckets`` is below 2, a ``group_by``
            field is one the summary reads anyway (``service``, ``duration_ms``, ...), or
            a ``count_events`` event is a call event.
    """

    __slots__ = (
        "_counter",
        "_events",
        "_filtered",
        "_marks",
        "_merged",
        "_picked",
        "_tally",
        "count_events",
        "error_samples",
        "filter",
        "group_by",
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
        group_by: Iterable[str] = (),
        count_events: Iterable[str] = (),
    ) -> None:
        for name, value in (("slowest", slowest), ("error_samples", error_samples)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        group_by = tuple(dict.fromkeys(group_by))
        count_events = tuple(dict.fromkeys(count_events))
        for field in group_by:
            if field in RESERVED_FIELDS:
                raise ValueError(f"cannot group by {field!r}: the summary reads it already")
        for event in count_events:
            if event in CALL_EVENTS:
                raise ValueError(f"cannot count {event!r}: it is a call event")
        self.filter = filter if filter is not None else RecordFilter()
        self.slowest = slowest
        self.error_samples = error_samples
        self.max_time_buckets = max_time_buckets
        self.group_by: tuple[str, ...] = group_by
        self.count_events: tuple[str, ...] = count_events
        self._counter = CallCounter(group_by, slowest, error_samples, max_time_buckets)
        # groups of summaries merged in (the counter's keys are folded in by build())
        self._merged: dict[GroupKey, GroupAccumulator] = {}
        self._tally = _Tally()
        # (event, server) -> records
        # event -> server -> records
        self._events: dict[str, Counter[str | None]] = {e: Counter() for e in count_events}
        self._filtered = 0
        self._marks: list[EventMark] = []
        # the events split_calls picks out: those counted, then those marked
        self._picked = count_events + tuple(e for e in MARK_EVENTS if e not in count_events)

    def add_json_lines(self, data: bytes | bytearray | Iterable[bytes | str]) -> None:
        """Decode and add JSON lines: a ``bytes`` chunk of whole lines, or single lines.

        A ``bytearray`` chunk is read in place, not kept: the caller may refill it after
        the call.

        Lines that are other events or malformed are counted, never raised. Records of
        :attr:`count_events` are also counted per ``server``, unless the filter names
        services, methods or codes (which such records do not have).
        """
        tally = self._tally
        schema = row_schema(self.group_by)
        finder: LineFinder | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            if isinstance(data, memoryview):
                data = bytes(data)  # a bytearray is used as it is (no copy)
            rows = decode_rows(data, tally, schema)
            finder = LineFinder(data)
        else:
            rows = decode_each_line(data, tally, full=True, schema=schema)
        calls, picked = split_calls(rows, tally, self._picked)
        if picked:
            self._mark_events(picked)
            self._count_events(picked)
        kept, stamps, time_of = parse_times(calls, tally)
        key_of = attrgetter("service", "method", "server", *schema.attributes)
        if finder is None:  # decoded as full rows
            self._add_calls(kept, stamps, time_of, lambda i: cast(_FullRow, kept[i]), key_of)
        else:
            find = finder.find
            n = len(kept)
            self._add_calls(
                kept, stamps, time_of, lambda i: find(kept[i], i / n) or _NO_DETAILS, key_of
            )

    def _mark_events(self, rows: list[_Row]) -> None:
        """Keep the rows of :data:`MARK_EVENTS` in the time range of the filter as marks."""
        rows = [row for row in rows if row.event in MARK_EVENTS]
        rows, stamps, time_of = parse_times(rows, None)
        since, until = self.filter.bounds()
        for row, stamp in zip(rows, stamps, strict=True):
            t = time_of(stamp)
            if since <= t < until:
                self._marks.append(EventMark(t, row.event or "", row.server, row.service))
        self._bound_marks()

    def _bound_marks(self) -> None:
        if len(self._marks) > MAX_MARKS:
            self._marks = heapq.nsmallest(MAX_MARKS, self._marks)

    def _count_events(self, rows: list[_Row]) -> None:
        if len(self._picked) != len(self.count_events):  # marked events were picked too
            rows = [row for row in rows if row.event in self._events]
            if not rows:
                return
        flt = self.filter
        if flt.services or flt.methods or flt.codes:
            return
        if flt.since is not None or flt.until is not None:
            since, until = flt.bounds()
            rows, stamps, time_of = parse_times(rows, None)
            rows = [
                row
                for row, stamp in zip(rows, stamps, strict=True)
                if since <= time_of(stamp) < until
            ]
        if len(self._events) == 1:  # rows of the one event counted
            (servers,) = self._events.values()
            servers.update(map(_SERVER, rows))
        else:
            for event, server in zip(map(_EVENT, rows), map(_SERVER, rows), strict=True):
                self._events[event][server] += 1

    def add(self, records: Iterable[CallRecord]) -> None:
        """Add call records (``group_by`` fields are read as attributes, if they have them)."""
        rows = list(records)
        times = [r.timestamp.timestamp() for r in rows]
        names = self.group_by

        def key_of(row: Any) -> Key:
            return (row.service, row.method, row.server, *(getattr(row, n, None) for n in names))

        self._add_calls(rows, times, float, rows.__getitem__, key_of)

    def _add_calls(
        self,
        rows: Sequence[CallRow],
        stamps: Sequence[Any],
        time_of: Callable[[Any], float],
        details: Callable[[int], Detailed],
        key_of: Callable[[Any], Key],
    ) -> None:
        """Add call rows whose timestamps are ``stamps`` (``time_of`` gives epoch seconds).

        ``details(i)`` returns the sampled fields of ``rows[i]``.
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
        counter = self._counter
        try:
            counter.add_batch(Batch(rows, times, time_of, details, key_of, counter.key_ids))
        except IncompleteRowError:
            positions = list(range(len(rows)))
            rows, times, positions = drop_incomplete(rows, times, positions, self._tally)
            by_position = details
            if rows:
                details = lambda i: by_position(positions[i])  # noqa: E731
                counter.add_batch(Batch(rows, times, time_of, details, key_of, counter.key_ids))

    def merge(self, summary: LogSummary) -> None:
        """Add everything counted in ``summary`` (a summary of other records).

        The result is the same as if this builder had seen those records too; the
        limits, ``group_by`` and ``count_events`` of this builder apply.
        """
        merged = self._merged
        for key, stats in summary.groups.items():
            group = merged.get(key)
            if group is None:
                group = merged[key] = GroupAccumulator()
            group.add(stats)
        counter = self._counter
        for call in summary.slowest:
            push_bounded(counter.slow, call, self.slowest)
        for sample in summary.recent_errors:
            push_bounded(counter.errors, sample, self.error_samples)
        counter.series.merge_rows(summary.timeline, summary.bucket_width)
        counter.records += summary.input.records
        tally = self._tally
        tally.other_events += summary.input.other_events
        for kind, n in summary.input.malformed.items():
            tally.malformed[kind] = tally.malformed.get(kind, 0) + n
        for kind, message in summary.input.malformed_examples.items():
            tally.examples.setdefault(kind, message)
        for event, servers in summary.event_counts.items():
            self._events.setdefault(event, Counter()).update(servers)
        self._marks += summary.marks
        self._bound_marks()
        self._filtered += summary.input.filtered_out

    def build(self) -> LogSummary:
        """Return the summary of everything added so far (the builder stays usable)."""
        groups: dict[GroupKey, GroupAccumulator] = {}
        for key, merged in self._merged.items():
            groups[key] = GroupAccumulator()
            groups[key].add(merged.stats())
        self._counter.fold(groups)
        events = {
            event: dict(sorted(servers.items(), key=_server_order))
            for event, servers in sorted(self._events.items())
            if servers
        }
        counter = self._counter
        return LogSummary(
            filter=self.filter,
            slowest_limit=self.slowest,
            error_sample_limit=self.error_samples,
            max_time_buckets=self.max_time_buckets,
            input=InputStats(
                records=counter.records,
                filtered_out=self._filtered,
                other_events=self._tally.other_events,
                malformed=dict(sorted(self._tally.malformed.items())),
                malformed_examples=dict(sorted(self._tally.examples.items())),
            ),
            groups={key: groups[key].stats() for key in sorted(groups, key=_group_order)},
            slowest=tuple(sorted(counter.slow, reverse=True)),
            recent_errors=tuple(sorted(counter.errors, reverse=True)),
            timeline=counter.series.rows(),
            bucket_width=counter.series.width,
            group_by=self.group_by,
            count_events=self.count_events,
            event_counts=events,
            marks=tuple(sorted(self._marks)),
        )


def _group_order(key: GroupKey) -> tuple[str, str, str]:
    return key[0], key[1], key[2] or ""


def _server_order(item: tuple[str | None, int]) -> str:
    return item[0] or ""


def summarize(
    records: Iterable[CallRecord],
    *,
    filter: RecordFilter | None = None,  # noqa: A002 - the natural name
    slowest: int = _DEFAULT_SLOWEST,
    error_samples: int = _DEFAULT_ERROR_SAMPLES,
    max_time_buckets: int = _DEFAULT_TIME_BUCKETS,
    group_by: Iterable[str] = (),
) -> LogSummary:
    """Summarise call records in one pass (see :class:`SummaryBuilder` for the options)."""
    builder = SummaryBuilder(
        filter=filter,
        slowest=slowest,
        error_samples=error_samples,
        max_time_buckets=max_time_buckets,
        group_by=group_by,
    )
    builder.add(records)
    return builder.build()


def merge_summaries(summaries: Iterable[LogSummary]) -> LogSummary:
    """Combine summaries of disjoint sets of records into the summary of their union.

    The limits (slowest, error samples, time buckets), filter, ``group_by`` and
    ``count_events`` of the first summary apply.

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
        group_by=first.group_by,
        count_events=first.count_events,
    )
    builder.merge(first)
    for summary in iterator:
        builder.merge(summary)
    return builder.build()
