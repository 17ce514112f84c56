from __future__ import annotations

import itertools
import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_micro.analysis import (
    RELATIVE_ERROR,
    LogSummary,
    RecordFilter,
    SummaryBuilder,
    merge_summaries,
    summarize,
)
from trio_micro.observe import CallRecord

from ._records import T0, line, record

CODES = ["OK", "OK", "OK", "NOT_FOUND", "UNAVAILABLE"]

records_strategy = st.lists(
    st.builds(
        record,
        at=st.floats(min_value=0, max_value=7200, allow_nan=False),
        service=st.sampled_from(["users", "orders"]),
        method=st.sampled_from(["Get", "List"]),
        server=st.sampled_from(["a:1", "b:1", None]),
        code=st.sampled_from(CODES),
        duration_ms=st.floats(min_value=0, max_value=1e5, allow_nan=False),
        message=st.sampled_from([None, "boom"]),
    ),
    max_size=60,
)


def comparable(summary: LogSummary) -> dict[str, object]:
    data = summary.to_dict()
    # Float sums may differ in the last bits between one pass and a merge.
    for m in data["methods"]:
        m["mean_ms"] = round(m["mean_ms"], 6)
        for p in m["replicas"]:
            p["mean_ms"] = round(p["mean_ms"], 6)
    if data["latency_ms"]["mean_ms"] is not None:
        data["latency_ms"]["mean_ms"] = round(data["latency_ms"]["mean_ms"], 6)
    for b in data["timeline"]["buckets"]:
        b["mean_ms"] = round(b["mean_ms"], 6)
    return data


@given(records_strategy, st.integers(min_value=0, max_value=60))
def test_merged_partial_summaries_equal_one_pass(records: list[CallRecord], cut: int) -> None:
    opts = {"slowest": 3, "error_samples": 2, "max_time_buckets": 8}
    whole = summarize(records, **opts)  # type: ignore[arg-type]
    parts = merge_summaries(
        [summarize(records[:cut], **opts), summarize(records[cut:], **opts)]  # type: ignore[arg-type]
    )
    assert comparable(parts) == comparable(whole)


@given(records_strategy, records_strategy)
def test_merge_of_summaries_is_commutative(a: list[CallRecord], b: list[CallRecord]) -> None:
    sa, sb = summarize(a, max_time_buckets=8), summarize(b, max_time_buckets=8)
    assert comparable(merge_summaries([sa, sb])) == comparable(merge_summaries([sb, sa]))


def test_counts_calls_and_errors_by_code_per_method() -> None:
    summary = summarize(
        [record(), record(code="NOT_FOUND"), record(code="NOT_FOUND"), record(method="List")]
    )
    (get, lst) = summary.methods()
    assert (get.method, get.calls, get.errors, dict(get.codes)) == (
        "GetUser",
        3,
        2,
        {"NOT_FOUND": 2, "OK": 1},
    )
    assert (lst.method, lst.calls, lst.errors) == ("List", 1, 0)


def test_percentiles_are_within_relative_error() -> None:
    durations = [float(i) for i in range(1, 1001)]
    (m,) = summarize(record(duration_ms=d) for d in durations).methods()
    for q, value in ((0.5, m.p50_ms), (0.9, m.p90_ms), (0.99, m.p99_ms)):
        exact = durations[math.floor(q * 999)]
        assert abs(value - exact) <= RELATIVE_ERROR * exact
    assert m.max_ms == 1000.0


def test_throughput_is_calls_per_second_between_first_and_last() -> None:
    (m,) = summarize([record(at=0), record(at=5), record(at=10)]).methods()
    assert m.throughput == pytest.approx(0.3)


def test_throughput_of_a_single_instant_is_none() -> None:
    (m,) = summarize([record(at=1)]).methods()
    assert m.throughput is None


def grouped(*caches: object, group_by: tuple[str, ...] = ("cache",)) -> LogSummary:
    builder = SummaryBuilder(group_by=group_by)
    builder.add_json_lines(b"".join(line(record(), cache=cache) for cache in caches))
    return builder.build()


def test_group_by_counts_calls_by_the_values_logged() -> None:
    (m,) = grouped("hit", "hit", "miss", None).methods()
    assert m.fields == {"cache": {"hit": 2, "miss": 1}}


def test_field_shares_are_among_the_calls_that_logged_the_field() -> None:
    (m,) = grouped("hit", "hit", "miss", None).methods()
    assert m.field_shares("cache") == [
        ("hit", pytest.approx(2 / 3)),
        ("miss", pytest.approx(1 / 3)),
    ]


def test_a_field_never_logged_has_no_counts() -> None:
    (m,) = grouped(None).methods()
    assert (m.fields, m.field_shares("cache")) == ({}, [])


def test_values_other_than_strings_are_shown_as_json() -> None:
    (m,) = grouped(2, False, 1.5, "2").methods()
    assert m.fields == {"cache": {"2": 2, "false": 1, "1.5": 1}}


def test_group_by_is_kept_by_merges() -> None:
    merged = merge_summaries([grouped("hit"), grouped("miss", "miss")])
    ((_key, stats),) = merged.groups.items()
    assert (merged.group_by, stats.fields) == (("cache",), {"cache": {"hit": 1, "miss": 2}})


def test_group_by_a_column_of_the_summary_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot group by 'duration_ms'"):
        SummaryBuilder(group_by=("duration_ms",))


def test_replicas_split_the_calls_of_a_method_by_server() -> None:
    recs = [record(server="a", peer="x"), record(server="a", peer="y"), record(server="b")]
    (m,) = summarize(recs).methods()
    assert [(r.server, r.calls) for r in m.replicas] == [("a", 2), ("b", 1)]
    assert [r.share for r in m.replicas] == pytest.approx([2 / 3, 1 / 3])


def test_calls_without_server_form_one_replica_row() -> None:
    (m,) = summarize([record(server=None, peer="x"), record(server=None, peer="y")]).methods()
    assert [(r.server, r.calls) for r in m.replicas] == [(None, 2)]


def test_slowest_keeps_the_top_n_slowest_first() -> None:
    summary = summarize((record(duration_ms=d) for d in [5, 1, 9, 3, 7]), slowest=3)
    assert [c.duration_ms for c in summary.slowest] == [9, 7, 5]


def test_recent_errors_keep_the_newest_with_messages() -> None:
    recs = [record(at=i, code="INTERNAL", message=f"m{i}") for i in range(5)]
    summary = summarize(recs, error_samples=2)
    assert [e.message for e in summary.recent_errors] == ["m4", "m3"]


def test_timeline_stays_within_max_buckets() -> None:
    summary = summarize((record(at=i * 0.37) for i in range(5000)), max_time_buckets=50)
    assert len(summary.timeline) <= 50
    assert sum(b.calls for b in summary.timeline) == 5000


def test_timeline_counts_errors_per_bucket() -> None:
    summary = summarize([record(at=0), record(at=0, code="INTERNAL")], max_time_buckets=4)
    assert [(b.calls, b.errors) for b in summary.timeline] == [(2, 1)]


def test_filter_since_until_keeps_half_open_range() -> None:
    flt = RecordFilter(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3))
    summary = summarize((record(at=i) for i in range(5)), filter=flt)
    assert (summary.calls, summary.input.filtered_out) == (2, 3)


def test_filter_by_service_method_and_code() -> None:
    recs = [
        record(service="users", method="Get"),
        record(service="users", method="Get", code="NOT_FOUND"),
        record(service="orders", method="Get", code="NOT_FOUND"),
        record(service="users", method="List", code="NOT_FOUND"),
    ]
    flt = RecordFilter(
        services=frozenset({"users"}), methods=frozenset({"Get"}), codes=frozenset({"NOT_FOUND"})
    )
    assert summarize(recs, filter=flt).calls == 1


def test_filter_method_accepts_service_slash_method() -> None:
    recs = [record(service="users", method="Get"), record(service="orders", method="Get")]
    summary = summarize(recs, filter=RecordFilter(methods=frozenset({"orders/Get"})))
    assert [m.service for m in summary.methods()] == ["orders"]


def test_filter_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RecordFilter(since=T0.replace(tzinfo=None))


def test_filter_matches_one_record_as_the_summary_filters() -> None:
    flt = RecordFilter(
        since=T0 + timedelta(seconds=1),
        until=T0 + timedelta(seconds=3),
        methods=frozenset({"orders/Get"}),
    )
    recs = [
        record(at=at, service=s, method="Get") for at in (0, 1, 2.5, 3) for s in ("a", "orders")
    ]
    kept = [(r.service, r.timestamp) for r in recs if flt.matches(r)]
    assert kept == [("orders", T0 + timedelta(seconds=1)), ("orders", T0 + timedelta(seconds=2.5))]
    assert summarize(recs, filter=flt).calls == len(kept)


def test_empty_input_gives_an_empty_summary() -> None:
    summary = summarize([])
    assert (summary.calls, summary.methods(), summary.first) == (0, [], None)
    assert summary.to_dict()["latency_ms"]["p50_ms"] is None


def test_merge_summaries_needs_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        merge_summaries([])


def test_json_lines_chunk_gives_same_summary_as_records() -> None:
    recs = [record(at=i, duration_ms=i + 0.5) for i in range(100)]
    builder = SummaryBuilder()
    builder.add_json_lines(b"".join(line(r) for r in recs))
    assert comparable(builder.build()) == comparable(summarize(recs))


def test_to_dict_is_json_ready_with_iso_utc_times() -> None:
    data = summarize([record(at=1.5)]).to_dict()
    assert data["first"] == "2026-11-26T10:00:01.500000Z"
    assert data["methods"][0]["calls"] == 1


@given(records_strategy, st.lists(st.integers(min_value=0, max_value=60), max_size=3))
def test_json_lines_in_chunks_equal_records_in_one_pass(
    records: list[CallRecord], cuts: list[int]
) -> None:
    # Random order and mixed timestamp lengths exercise the unsorted and per-line paths;
    # summaries of the chunks, merged, are the summary of all records.
    opts = {"slowest": 3, "error_samples": 2, "max_time_buckets": 8}
    bounds = [0, *sorted(cuts), len(records)]
    parts = []
    for start, end in itertools.pairwise(bounds):
        builder = SummaryBuilder(**opts)  # type: ignore[arg-type]
        builder.add_json_lines(b"".join(line(r) for r in records[start:end]))
        parts.append(builder.build())
    whole = summarize(records, **opts)  # type: ignore[arg-type]
    assert comparable(merge_summaries(parts)) == comparable(whole)


def test_sorted_chunk_gives_same_summary_as_records() -> None:
    # Uniform "...ffffffZ" stamps in order: the bulk timestamp path.
    recs = [record(at=i * 0.1 + 0.000001, duration_ms=(i * 7) % 13 + 0.1) for i in range(500)]
    builder = SummaryBuilder(max_time_buckets=8)
    builder.add_json_lines(b"".join(line(r) for r in recs))
    assert comparable(builder.build()) == comparable(summarize(recs, max_time_buckets=8))


def test_group_by_a_key_with_a_dot_in_its_name() -> None:
    builder = SummaryBuilder(group_by=("http.status",))
    builder.add_json_lines(line(record(), **{"http.status": 200}))
    (m,) = builder.build().methods()
    assert m.fields == {"http.status": {"200": 1}}


def test_an_object_as_a_group_by_value_makes_the_call_record_wrong_type() -> None:
    builder = SummaryBuilder(group_by=("cache",))
    builder.add_json_lines(line(record(), cache="hit") + line(record(), cache={"a": 1}))
    summary = builder.build()
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"wrong_type": 1})
