"""The HTML report of a fixture log, looked at in headless Chromium at 1280 and 800 px."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.analysis._records import T0, line, record
from trio_micro.analysis import render_html_report, summarize_files

from ._cdp import Browser, Tab
from ._layout import label_problems, measure

KILL_AT = 30.0  # s after T0: the fixture's replica kill, on a round tick (10:00:30)
WIDTHS = (1280, 800)


def _event(at: float, event: str, **fields: object) -> bytes:
    stamp = (T0 + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        json.dumps({"timestamp": stamp, "level": "info", "event": event, **fields}).encode() + b"\n"
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of 60 s of calls to three replicas; the third is killed at 10:00:30.

    Calls to it fail with UNAVAILABLE for the next second; latencies run from 1 ms to
    1.5 s, so that the axes show both units.
    """
    folder = tmp_path_factory.mktemp("report")
    servers = ("10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051")
    lines = []
    for i in range(60 * 40):  # 40 calls/s
        at = i / 40
        failed = KILL_AT <= at < KILL_AT + 1 and i % 3 == 2  # calls to the killed replica
        server = servers[i % 3] if at < KILL_AT or failed else servers[i % 2]
        duration = 1500.0 if i % 997 == 0 else 1 + (i * 37 % 400) / 10
        rec = record(
            at=at, server=server, duration_ms=duration, code="UNAVAILABLE" if failed else "OK"
        )
        lines.append(line(rec, cache="hit" if i % 4 else "miss"))
    lines.append(_event(KILL_AT, "rpc.channel.connection_lost", peer=servers[2]))
    lines.append(
        _event(KILL_AT + 2, "registry.server.expired", service="users", address=servers[2])
    )
    lines.append(_event(45.0, "rpc.channel.goaway", peer=servers[0]))
    log = folder / "client.jsonl"
    log.write_bytes(b"".join(lines))
    summary = summarize_files([log], jobs=1, group_by=("cache",))
    path = folder / "report.html"
    path.write_text(render_html_report(summary, title="fixture"))
    return path


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"{w}px")
def page(browser: Browser, report: Path, request: pytest.FixtureRequest) -> Iterator[Tab]:
    tab = browser.open_page(report.as_uri(), width=request.param)
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def layout(page: Tab) -> dict[str, Any]:
    return measure(page)


def test_report_loads_without_console_errors(page: Tab) -> None:
    assert page.evaluate("document.title") == "fixture"
    assert page.console_errors() == []


def test_report_fetches_nothing(page: Tab) -> None:
    # One self-contained file: no script, and every resource is the file itself.
    assert page.evaluate("document.scripts.length") == 0
    resources = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []


def test_every_chart_has_a_size(layout: dict[str, Any]) -> None:
    boxes = [chart["box"] for chart in layout["charts"]]
    assert len(boxes) == 5  # histogram, percentiles, throughput, errors, replicas
    assert all(right > left and bottom > top for left, top, right, bottom in boxes)


def test_the_page_fits_its_width(layout: dict[str, Any]) -> None:
    assert layout["scrollWidth"] <= layout["width"]


def test_tick_labels_neither_overlap_nor_are_clipped(layout: dict[str, Any]) -> None:
    charts = [c for c in layout["charts"] if c["ticks"]]
    assert len(charts) == 4
    problems = [p for chart in charts for p in label_problems(chart)]
    assert problems == []


def test_ticks_are_human(layout: dict[str, Any]) -> None:
    labels = {tick["text"] for chart in layout["charts"] for tick in chart["ticks"]}
    assert {"10:00:30", "1 s", "1 ms"} <= labels
    assert not [label for label in labels if "e+" in label or "e-" in label]


def test_the_kill_is_marked_at_its_time(layout: dict[str, Any]) -> None:
    time_charts = [c for c in layout["charts"] if c["start"] is not None]
    assert len(time_charts) == 3  # percentiles, throughput, errors
    kill = T0.timestamp() + KILL_AT
    for chart in time_charts:
        (mark,) = [m for m in chart["marks"] if m["time"] == kill]
        assert mark["label"] == "connection lost"
        x = (mark["box"][0] + mark["box"][2]) / 2
        # The tick of 10:00:30 is the same moment, placed by the axis code.
        (tick,) = [t for t in chart["ticks"] if t["text"] == "10:00:30"]
        assert x == pytest.approx((tick["box"][0] + tick["box"][2]) / 2, abs=1.5)
        left, _, right, _ = chart["plot"]
        share = (kill - chart["start"]) / (chart["end"] - chart["start"])
        assert x == pytest.approx(left + (right - left) * share, abs=1.5)


def test_every_event_of_the_log_is_marked(layout: dict[str, Any]) -> None:
    (chart, *_) = [c for c in layout["charts"] if c["start"] is not None]
    labels = {m["label"] for m in chart["marks"]}
    assert labels == {"connection lost", "lease expired", "GOAWAY"}


def test_screenshot(page: Tab, tmp_path: Path) -> None:
    shot = page.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
