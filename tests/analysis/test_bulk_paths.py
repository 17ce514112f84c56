"""The bulk paths of the summary agree with the per-record ones.

A large chunk in time order takes shortcuts (database queries cut out by position, first
and last calls found by searching, reused buffers); these tests feed the same records
through the shortcut and through ``SummaryBuilder.add`` and compare.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from trio_micro.analysis import LatencySketch, SummaryBuilder, summarize
from trio_micro.observe import CallRecord

from ._records import line, record
from .test_summary import comparable

DB_QUERY = (
    b'{"timestamp":"2026-11-26T10:00:00.500000Z","event":"users.db.query",'
    b'"server":"10.0.0.7:50051","duration_ms":0.3}\n'
)


def calls_in_order(n: int, *, servers: int = 3) -> list[bytes]:
    """``n`` call lines one millisecond apart, with stamps of one length (the bulk path)."""
    return [line(r) for r in records_in_order(n, servers=servers)]


def records_in_order(n: int, *, servers: int = 3) -> list[CallRecord]:
    return [
        record(
            at=0.000001 + i / 1000,
            server=f"10.0.0.{i % servers}:50051",
            code="OK" if i % 7 else "NOT_FOUND",
            duration_ms=(i * 37) % 101 + i / 1024,  # no ties (slowest)
            message=None if i % 7 else f"user {i} not found",
        )
        for i in range(n)
    ]


def test_a_few_db_queries_among_many_calls_are_cut_out_exactly() -> None:
    lines = calls_in_order(400)
    for i in (0, 17, 18, 200, 399):
        lines.insert(i, DB_QUERY)
    builder = SummaryBuilder(max_time_buckets=8, count_events=("users.db.query",))
    builder.add_json_lines(b"".join(lines))
    summary = builder.build()
    expected = summarize(records_in_order(400), max_time_buckets=8)
    ignored = {"input": None, "events": None, "count_events": None}
    assert comparable(summary) | ignored == comparable(expected) | ignored
    assert summary.input.other_events == 5
    assert summary.event_counts == {"users.db.query": {"10.0.0.7:50051": 5}}


def test_many_rare_keys_give_the_same_summary_as_records() -> None:
    # 200 replicas, each with a few calls: the search for first and last calls gives up
    # and takes one pass.
    builder = SummaryBuilder(max_time_buckets=8)
    builder.add_json_lines(b"".join(calls_in_order(600, servers=200)))
    expected = summarize(records_in_order(600, servers=200), max_time_buckets=8)
    assert comparable(builder.build()) == comparable(expected)


def test_chunks_in_time_order_keep_first_and_last_per_group() -> None:
    data = calls_in_order(300)
    builder = SummaryBuilder()
    for start in range(0, 300, 50):
        builder.add_json_lines(b"".join(data[start : start + 50]))
    expected = summarize(records_in_order(300))
    assert comparable(builder.build()) == comparable(expected)


def test_a_later_chunk_with_earlier_calls_moves_the_first_call_back() -> None:
    data = calls_in_order(300)
    builder = SummaryBuilder()
    builder.add_json_lines(b"".join(data[150:]))
    builder.add_json_lines(b"".join(data[:150]))
    expected = summarize(records_in_order(300))
    assert comparable(builder.build()) == comparable(expected)


def test_a_bytearray_chunk_is_not_kept() -> None:
    data = b"".join(calls_in_order(100))
    buffer = bytearray(data)
    builder = SummaryBuilder()
    builder.add_json_lines(buffer)
    buffer[:] = b"x" * len(buffer)  # the caller reuses its buffer
    expected = SummaryBuilder()
    expected.add_json_lines(data)
    assert comparable(builder.build()) == comparable(expected.build())


durations = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=50)


@given(durations, durations)
def test_merging_into_a_non_empty_sketch_equals_one_sketch(a: list[float], b: list[float]) -> None:
    merged = LatencySketch(a)
    merged.merge(LatencySketch(b))
    assert merged == LatencySketch(a + b)
    assert merged.copy() == merged


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1))
def test_several_quantiles_at_once_equal_one_at_a_time(values: list[float]) -> None:
    sketch = LatencySketch(values)
    qs = (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)
    assert sketch.quantiles(qs) == [sketch.quantile(q) for q in qs]
    assert not any(math.isnan(v) for v in sketch.quantiles(qs))


def test_slowest_calls_tied_on_duration_do_not_depend_on_chunking() -> None:
    # Durations quantised to whole milliseconds, as many services log them: the slowest
    # list is cut inside a run of equal durations, and the full order (duration, then
    # time, ...) decides which calls stay -- whatever the chunks were.
    records = [
        record(at=0.000001 + i / 1000, duration_ms=float(5 if i % 4 else 9), server="s:1")
        for i in range(240)
    ]
    data = [line(r) for r in records]
    expected = summarize(records, slowest=5).slowest
    assert [c.duration_ms for c in expected] == [9.0] * 5
    # Ties go to the latest calls (SlowCall's order: duration, then time).
    assert [round(c.timestamp.microsecond / 1000) for c in expected] == [236, 232, 228, 224, 220]
    for size in (7, 50, 240):
        builder = SummaryBuilder(slowest=5)
        for start in range(0, len(data), size):
            builder.add_json_lines(b"".join(data[start : start + size]))
        assert builder.build().slowest == expected, size
