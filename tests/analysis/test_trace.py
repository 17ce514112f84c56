from __future__ import annotations

import pytest

from trio_micro.analysis import build_trace

from ._records import record


def test_children_hang_under_their_parent_span() -> None:
    recs = [
        record(at=0.010, service="gateway", span_id="root", duration_ms=10),
        record(at=0.004, service="users", span_id="u", parent_span_id="root", duration_ms=3),
        record(at=0.008, service="orders", span_id="o", parent_span_id="root", duration_ms=2),
        record(at=0.007, service="inventory", span_id="i", parent_span_id="o", duration_ms=0.5),
    ]
    trace = build_trace(recs, "t1")
    assert [(d, s.service) for d, s in trace.walk()] == [
        (0, "gateway"),
        (1, "users"),
        (1, "orders"),
        (2, "inventory"),
    ]


def test_start_offsets_are_measured_from_the_first_start() -> None:
    recs = [
        record(at=0.010, span_id="root", duration_ms=10),
        record(at=0.004, span_id="c", parent_span_id="root", duration_ms=3),
    ]
    trace = build_trace(recs, "t1")
    (root,) = trace.roots
    assert root.start_offset_ms == pytest.approx(0)
    assert root.children[0].start_offset_ms == pytest.approx(1)
    assert trace.duration_ms == pytest.approx(10)


def test_other_traces_are_ignored() -> None:
    trace = build_trace([record(trace_id="t1"), record(trace_id="t2")], "t2")
    assert trace.span_count == 1


def test_span_with_unknown_parent_becomes_a_root() -> None:
    trace = build_trace([record(span_id="x", parent_span_id="missing")], "t1")
    assert [s.span_id for s in trace.roots] == ["x"]


def test_parent_cycle_does_not_lose_spans() -> None:
    recs = [record(span_id="a", parent_span_id="b"), record(span_id="b", parent_span_id="a")]
    assert len(list(build_trace(recs, "t1").walk())) == 2


def test_unknown_trace_is_empty() -> None:
    trace = build_trace([record()], "nope")
    assert (trace.span_count, trace.roots, trace.start) == (0, (), None)
