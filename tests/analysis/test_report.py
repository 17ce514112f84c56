"""The HTML report as text: tick labels, event marks, empty sections, the section list."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import pytest

from trio_micro.analysis import (
    MARK_EVENTS,
    MAX_MARKS,
    EventMark,
    LogSummary,
    RecordFilter,
    SummaryBuilder,
    merge_summaries,
    render_html_report,
)
from trio_micro.analysis._charts import fmt_count, fmt_ms_tick, nice_ticks, time_ticks
from trio_micro.analysis._report import SECTIONS, Page

from ._records import T0, line, record


def event_line(at: float, event: str, **fields: object) -> bytes:
    stamp = (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"timestamp": stamp, "event": event, **fields}).encode() + b"\n"


def summary_of(*lines: bytes, **options: object) -> LogSummary:
    builder = SummaryBuilder(**options)  # type: ignore[arg-type]
    builder.add_json_lines(b"".join(lines))
    return builder.build()


CALLS = tuple(line(record(at=i / 10, duration_ms=1 + i % 50)) for i in range(600))


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (950, "950"), (3950, "3,950"), (13_200, "13.2k"), (2_500_000, "2.5M"),
     (0.25, "0.25"), (math.nan, "-")],
)  # fmt: skip
def test_counts_read_as_people_write_them(value: float, text: str) -> None:
    assert fmt_count(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (0.5, "0.5 ms"), (250, "250 ms"), (1000, "1 s"), (1500, "1.5 s")]
)
def test_duration_ticks_carry_their_unit(value: float, text: str) -> None:
    assert fmt_ms_tick(value) == text


def test_nice_ticks_are_round_and_reach_the_top() -> None:
    assert nice_ticks(3950) == [0, 1000, 2000, 3000, 4000]
    assert nice_ticks(13_200)[-1] >= 13_200
    assert nice_ticks(0) == [0.0, 1.0]


def test_time_ticks_of_a_few_seconds_are_distinct() -> None:
    start = T0.timestamp() + 0.37
    ticks = time_ticks(start, start + 3)
    labels = [label for _, label in ticks]
    assert len(set(labels)) == len(labels) >= 3
    assert all(start <= t <= start + 3 for t, _ in ticks)
    assert labels[0] == "10:00:00.5"


def test_marks_keep_the_events_that_stop_a_replica() -> None:
    summary = summary_of(
        *CALLS,
        event_line(30, "rpc.channel.connection_lost", peer="10.0.0.3:50051"),
        event_line(31, "registry.server.expired", service="users", server="10.0.0.9:1"),
        event_line(32, "users.db.query"),
    )
    assert summary.marks == (
        EventMark(T0.timestamp() + 30, "rpc.channel.connection_lost"),
        EventMark(T0.timestamp() + 31, "registry.server.expired", "10.0.0.9:1", "users"),
    )
    assert [m.label for m in summary.marks] == ["connection lost", "lease expired"]
    assert summary.input.other_events == 3


def test_a_counted_event_that_is_also_marked_is_both() -> None:
    summary = summary_of(
        *CALLS,
        event_line(30, "rpc.channel.goaway"),
        event_line(31, "users.db.query"),
        count_events=["rpc.channel.goaway", "users.db.query"],
    )
    assert [m.event for m in summary.marks] == ["rpc.channel.goaway"]
    assert summary.event_counts == {"rpc.channel.goaway": {None: 1}, "users.db.query": {None: 1}}


def test_marks_outside_the_filters_time_range_are_dropped() -> None:
    flt = RecordFilter(since=T0 + timedelta(seconds=10))
    summary = summary_of(
        *CALLS,
        event_line(5, "rpc.channel.goaway"),
        event_line(20, "rpc.channel.goaway"),
        filter=flt,
    )
    assert [m.time for m in summary.marks] == [T0.timestamp() + 20]


def test_marks_are_bounded_to_the_earliest() -> None:
    events = [event_line(i, "rpc.channel.goaway") for i in range(MAX_MARKS + 30, -1, -1)]
    summary = summary_of(*CALLS, *events)
    assert len(summary.marks) == MAX_MARKS
    assert summary.marks[0].time == T0.timestamp()
    assert summary.marks == tuple(sorted(summary.marks))


def test_merged_summaries_keep_the_marks_of_both() -> None:
    a = summary_of(*CALLS[:300], event_line(40, "rpc.channel.goaway"))
    b = summary_of(*CALLS[300:], event_line(10, "supervise.worker.exited"))
    merged = merge_summaries([a, b])
    assert [m.event for m in merged.marks] == ["supervise.worker.exited", "rpc.channel.goaway"]


def test_every_marked_event_has_a_label() -> None:
    assert all(label and label != event for event, label in MARK_EVENTS.items())


def test_the_time_charts_mark_each_event_at_its_time() -> None:
    html = render_html_report(summary_of(*CALLS, event_line(30, "rpc.channel.connection_lost")))
    stamp = repr(T0.timestamp() + 30)
    assert (
        html.count(f"<g class='mark' data-time='{stamp}'>") == 2
    )  # latency, calls/s (no errors: no chart)
    assert "connection lost</text>" in html


def test_events_at_one_moment_share_a_line() -> None:
    events = [event_line(30 + i / 1000, "rpc.channel.connection_lost") for i in range(3)]
    html = render_html_report(summary_of(*CALLS, *events))
    assert html.count("connection lost \u00d73</text>") == 2  # latency and throughput charts


def test_labels_that_find_no_row_are_left_to_the_hover_title() -> None:
    events = [event_line(30, name) for name in MARK_EVENTS]  # all at one moment
    html = render_html_report(summary_of(*CALLS, *events))
    chart = html[html.index("Latency percentiles") : html.index("Throughput")]
    assert chart.count("<g class='mark'") == len(MARK_EVENTS)
    assert chart.count("class='mark-label'") == 3  # one per row


def test_no_scientific_notation_on_the_axes() -> None:
    calls = [line(record(at=i / 1000, duration_ms=1500 + i)) for i in range(20_000)]
    html = render_html_report(summary_of(*calls))
    ticks = re.findall(r"<text class='tick'[^>]*>([^<]*)</text>", html)
    assert ticks
    assert not [t for t in ticks if re.search(r"\de[+-]", t)]
    assert {"1,000", "2 s", "5 s", "10 s", "10:00:05"} <= set(ticks)


def test_sections_without_anything_say_so_in_one_line() -> None:
    html = render_html_report(summary_of(*CALLS, count_events=["users.db.query"]))
    assert html.count("<p class='muted'>No failed calls.</p>") == 2  # errors chart and table
    assert "<p class='muted'>No records of the events counted.</p>" in html
    assert "<table><tr><th class='l'>service</th>" not in html  # no header-only table


def test_a_summary_without_calls_says_so() -> None:
    html = render_html_report(summary_of(event_line(1, "rpc.channel.goaway")))
    assert "No call records in the input" in html
    assert "<svg" not in html


def test_a_section_appended_to_the_list_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    def extra(page: Page) -> tuple[str, str]:
        return "Extra", f"<p>{page.summary.calls} calls</p>"

    monkeypatch.setattr("trio_micro.analysis._report.SECTIONS", [*SECTIONS, extra])
    html = render_html_report(summary_of(*CALLS))
    assert html.endswith("<h2>Extra</h2><p>600 calls</p></body></html>")


def test_bars_and_points_have_their_exact_value_on_hover() -> None:
    html = render_html_report(summary_of(*CALLS))
    assert re.search(r"<title>10:00:\d\d(\.\d+)?: [\d.,k]+ calls/s \([\d,]+ calls\)</title>", html)
    assert re.search(r"<circle [^>]*><title>10:00:\d\d(\.\d+)?: p99 \d", html)
    assert re.search(r"<title>users/GetUser @ 10.0.0.1:50051: 600 calls \(100.00%\)", html)


def test_a_narrow_latency_range_still_has_x_labels() -> None:
    calls = [line(record(at=i, duration_ms=2.6 + i / 100)) for i in range(50)]
    html = render_html_report(summary_of(*calls))
    histogram = html[html.index("Latency distribution") : html.index("Latency percentiles")]
    assert re.findall(
        r"<text class='tick' x='[^']*' y='[^']*' text-anchor='middle'>([^<]*)<", histogram
    ) == ["2.51 ms", "3.16 ms"]


def test_the_json_summary_lists_the_marks() -> None:
    data = summary_of(*CALLS, event_line(30, "rpc.channel.goaway", server="10.0.0.1:50051"))
    assert data.to_dict()["marks"] == [
        {
            "time": "2026-11-26T10:00:30Z",
            "event": "rpc.channel.goaway",
            "server": "10.0.0.1:50051",
            "service": None,
        }
    ]


def test_time_ticks_of_weeks_are_dates() -> None:
    start = T0.timestamp()
    labels = [label for _, label in time_ticks(start, start + 20 * 86400)]
    assert labels == ["2026-12-03", "2026-12-10"]  # a week apart
