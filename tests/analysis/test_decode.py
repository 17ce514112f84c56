from __future__ import annotations

import msgspec

from trio_micro.analysis import LogSummary, SummaryBuilder, iter_call_records

from ._records import line, record

GOOD = line(record())


def summary_of(data: bytes) -> LogSummary:
    builder = SummaryBuilder()
    builder.add_json_lines(data)
    return builder.build()


def test_garbage_line_counts_as_invalid_json() -> None:
    summary = summary_of(GOOD + b"not json at all\n" + GOOD)
    assert (summary.calls, dict(summary.input.malformed)) == (2, {"invalid_json": 1})


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
