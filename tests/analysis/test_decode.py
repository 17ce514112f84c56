from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from trio_micro.analysis import LogSummary, RecordFilter, SummaryBuilder, iter_call_records

from ..nested import NESTED_JSON
from ._records import T0, line, record

GOOD = line(record())


def summary_of(data: bytes) -> LogSummary:
    builder = SummaryBuilder()
    builder.add_json_lines(data)
    return builder.build()


def test_garbage_line_counts_as_invalid_json() -> None:
    summary = summary_of(GOOD + b"not json at all\n" + GOOD)
    assert (summary.calls, dict(summary.input.malformed)) == (2, {"invalid_json": 1})


def test_a_line_nested_too_deeply_counts_as_invalid_json() -> None:
    deep = b'{"x": ' + NESTED_JSON.encode() + b"}\n"
    summary = summary_of(GOOD + deep + GOOD)
    assert (summary.calls, dict(summary.input.malformed)) == (2, {"invalid_json": 1})


def test_iter_call_records_skips_a_line_nested_too_deeply() -> None:
    deep = GOOD.rstrip(b"}\n") + b', "x": ' + NESTED_JSON.encode() + b"}"
    assert len(list(iter_call_records([GOOD, deep, GOOD]))) == 2


def test_wrong_type_counts_as_wrong_type() -> None:
    bad = GOOD.replace(b'"duration_ms":1.0', b'"duration_ms":"slow"')
    summary = summary_of(GOOD + bad)
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"wrong_type": 1})


def test_negative_duration_counts_as_wrong_type() -> None:
    bad = GOOD.replace(b'"duration_ms":1.0', b'"duration_ms":-1')
    assert dict(summary_of(bad).input.malformed) == {"wrong_type": 1}


def test_call_record_without_required_field_counts_as_missing_field() -> None:
    bad = msgspec.json.encode({"event": "rpc.call.complete", "service": "users"}) + b"\n"
    summary = summary_of(GOOD + bad)
    assert dict(summary.input.malformed) == {"missing_field": 1}
    assert "missing required field" in summary.input.malformed_examples["missing_field"]


def test_other_events_are_skipped_not_malformed() -> None:
    other = b'{"event":"observe.memory.snapshot","timestamp":"2026-11-26T10:00:00Z","rss":1}\n'
    summary = summary_of(GOOD + other + GOOD)
    assert (summary.calls, summary.input.other_events, summary.input.malformed_total) == (2, 1, 0)


def test_other_event_with_call_fields_is_skipped() -> None:
    other = GOOD.replace(b"rpc.call.complete", b"rpc.call.started")
    summary = summary_of(GOOD + other)
    assert (summary.calls, summary.input.other_events) == (1, 1)


def test_truncated_last_line_counts_as_malformed() -> None:
    summary = summary_of(GOOD + GOOD[:40])
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"invalid_json": 1})


def test_last_line_without_newline_is_read() -> None:
    assert summary_of(GOOD + GOOD.rstrip(b"\n")).calls == 2


def test_non_utf8_bytes_in_a_string_count_as_not_utf8() -> None:
    bad = GOOD.replace(b'"users"', b'"us\xff\xfers"')
    summary = summary_of(GOOD + bad)
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"not_utf8": 1})


def test_a_line_that_is_neither_json_nor_utf8_counts_as_not_utf8() -> None:
    # Which error the decoder meets first varies with msgspec's version; the bytes decide.
    summary = summary_of(GOOD + b'{"event": \xff\n' + GOOD)
    assert (summary.calls, dict(summary.input.malformed)) == (2, {"not_utf8": 1})


def test_bad_utf8_is_classified_in_a_large_chunk_too() -> None:
    bad = GOOD.replace(b'"users"', b'"us\xff\xfers"')
    summary = summary_of(GOOD * 3000 + bad + GOOD * 3000)
    assert (summary.calls, dict(summary.input.malformed)) == (6000, {"not_utf8": 1})


def test_a_wrong_type_before_bad_utf8_still_counts_as_not_utf8() -> None:
    bad = GOOD.replace(b'"duration_ms":1.0', b'"duration_ms":"slow"')
    bad = bad.replace(b'"s1"', b'"s\xff\xfe"')  # after the wrong type
    summary = summary_of(GOOD + bad)
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"not_utf8": 1})


def test_json_array_line_counts_as_wrong_type() -> None:
    assert dict(summary_of(b"[1, 2]\n").input.malformed) == {"wrong_type": 1}


def test_blank_lines_are_ignored() -> None:
    summary = summary_of(b"\n" + GOOD + b"   \n\r\n" + GOOD)
    assert (summary.calls, summary.input.malformed_total) == (2, 0)


def test_bad_lines_in_a_large_chunk_are_counted_exactly() -> None:
    # Larger than the 64 KiB pieces, so the piecewise fallback is exercised.
    lines = [GOOD] * 3000
    for i in (5, 1500, 2999):
        lines[i] = b"{oops\n"
    summary = summary_of(b"".join(lines))
    assert (summary.calls, summary.input.malformed_total) == (2997, 3)


def test_iterable_of_str_lines_is_accepted() -> None:
    builder = SummaryBuilder()
    builder.add_json_lines([GOOD.decode(), "garbage"])
    summary = builder.build()
    assert (summary.calls, summary.input.malformed_total) == (1, 1)


def test_iter_call_records_skips_bad_lines() -> None:
    assert len(list(iter_call_records([GOOD, b"garbage", GOOD]))) == 2


DB_QUERY = (
    b'{"timestamp":"2026-11-26T10:00:00.5Z","event":"users.db.query",'
    b'"server":"10.0.0.1:50051","duration_ms":0.4}\n'
)


COUNTED = ("users.db.query",)


def test_counted_events_are_counted_per_server_as_other_events() -> None:
    no_server = DB_QUERY.replace(b'"server":"10.0.0.1:50051",', b"")
    builder = SummaryBuilder(count_events=COUNTED)
    builder.add_json_lines(GOOD + DB_QUERY + DB_QUERY + no_server + GOOD)
    summary = builder.build()
    assert summary.calls == 2
    assert summary.input.other_events == 3
    assert summary.event_counts == {"users.db.query": {None: 1, "10.0.0.1:50051": 2}}


def test_events_are_not_counted_unless_named() -> None:
    summary = summary_of(GOOD + DB_QUERY)
    assert (summary.input.other_events, dict(summary.event_counts)) == (1, {})


def test_counted_events_are_not_counted_under_a_method_filter() -> None:
    builder = SummaryBuilder(
        filter=RecordFilter(methods=frozenset({"GetUser"})), count_events=COUNTED
    )
    builder.add_json_lines(GOOD + DB_QUERY)
    assert dict(builder.build().event_counts) == {}


def test_counted_events_honour_a_time_filter() -> None:
    builder = SummaryBuilder(
        filter=RecordFilter(since=T0 + timedelta(seconds=1)), count_events=COUNTED
    )
    builder.add_json_lines(GOOD + DB_QUERY)
    assert dict(builder.build().event_counts) == {}


def test_a_call_event_cannot_be_counted() -> None:
    with pytest.raises(ValueError, match="call event"):
        SummaryBuilder(count_events=("rpc.call.complete",))


def test_new_values_after_the_first_chunk_are_decoded() -> None:
    # The first chunk teaches the interning decoder its values; later ones bring new ones.
    builder = SummaryBuilder()
    builder.add_json_lines(GOOD)
    builder.add_json_lines(line(record(service="orders", method="List", server="new:1")))
    keys = set(builder.build().groups)
    assert keys == {("users", "GetUser", "10.0.0.1:50051"), ("orders", "List", "new:1")}


def test_timestamps_with_offsets_are_converted_to_utc() -> None:
    other = GOOD.replace(b"2026-11-26T10:00:00Z", b"2026-11-26T12:00:01+02:00")
    assert b"+02:00" in other
    summary = summary_of(GOOD + other)
    assert (summary.first, summary.last) == (T0, T0 + timedelta(seconds=1))


def test_naive_or_invalid_timestamps_count_as_wrong_type() -> None:
    naive = GOOD.replace(b"2026-11-26T10:00:00Z", b"2026-11-26T10:00:00")
    invalid = GOOD.replace(b"2026-11-26T10:00:00Z", b"2026-13-45T10:00:00Z")
    summary = summary_of(GOOD + naive + invalid)
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"wrong_type": 2})


def test_call_record_without_service_counts_as_missing_field() -> None:
    bad = GOOD.replace(b'"service":"users",', b"")
    summary = summary_of(GOOD + bad)
    assert (summary.calls, dict(summary.input.malformed)) == (1, {"missing_field": 1})


def test_sampled_calls_keep_ids_and_messages_from_a_chunk() -> None:
    recs = [record(at=i, duration_ms=i + 1.5, span_id=f"s{i}") for i in range(50)]
    recs.append(record(at=60, code="INTERNAL", message="disk on fire", trace_id="tx"))
    summary = summary_of(b"".join(line(r) for r in recs))
    assert (summary.slowest[0].span_id, summary.slowest[0].peer) == ("s49", "10.0.0.9:41234")
    assert (summary.recent_errors[0].message, summary.recent_errors[0].trace_id) == (
        "disk on fire",
        "tx",
    )


def test_several_events_are_counted_each_per_server() -> None:
    other = DB_QUERY.replace(b"users.db.query", b"users.cache.evict")
    builder = SummaryBuilder(count_events=("users.cache.evict", "users.db.query"))
    builder.add_json_lines(GOOD + DB_QUERY + other + other + GOOD)
    assert builder.build().event_counts == {
        "users.cache.evict": {"10.0.0.1:50051": 2},
        "users.db.query": {"10.0.0.1:50051": 1},
    }
