from __future__ import annotations

import gc
import math
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro.observe import (
    GcSettings,
    MemorySnapshot,
    _memory,
    memory_snapshot,
    open_memory_monitor,
    tune_gc,
)


@pytest.fixture
def gc_settings() -> Iterator[None]:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if frozen == 0:
            gc.unfreeze()


def test_memory_snapshot_fields_are_sane() -> None:
    snap = memory_snapshot()

    assert isinstance(snap, MemorySnapshot)
    if sys.platform == "linux":
        assert snap.rss_bytes is not None
        assert snap.rss_bytes > 1_000_000  # a Python process is megabytes, not bytes
    assert snap.peak_rss_bytes is not None
    if snap.rss_bytes is not None:
        assert snap.peak_rss_bytes >= snap.rss_bytes
    generations = len(gc.get_stats())
    assert len(snap.gc_counts) == 3
    assert snap.gc_threshold == gc.get_threshold()
    assert len(snap.gc_collections) == len(snap.gc_collected) == generations
    assert len(snap.gc_uncollectable) == generations
    assert all(n >= 0 for n in (*snap.gc_collections, *snap.gc_collected))
    assert snap.gc_frozen == gc.get_freeze_count()


def test_memory_snapshot_without_tracemalloc_has_no_traced_sizes() -> None:
    assert not tracemalloc.is_tracing()
    snap = memory_snapshot()

    assert snap.tracemalloc_current_bytes is None
    assert snap.tracemalloc_peak_bytes is None


@pytest.mark.usefixtures("tracing")
def test_memory_snapshot_reports_tracemalloc_when_tracing() -> None:
    ballast = [bytes(1000) for _ in range(1000)]
    snap = memory_snapshot()

    assert snap.tracemalloc_current_bytes is not None
    assert snap.tracemalloc_peak_bytes is not None
    assert snap.tracemalloc_current_bytes >= 1_000_000
    assert snap.tracemalloc_peak_bytes >= snap.tracemalloc_current_bytes
    del ballast


def test_memory_snapshot_collections_count_up() -> None:
    before = memory_snapshot()
    gc.collect()

    assert memory_snapshot().gc_collections[-1] == before.gc_collections[-1] + 1


def test_rss_is_none_without_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_memory, "_STATM_PATH", str(tmp_path / "no-such-file"))

    assert memory_snapshot().rss_bytes is None


async def test_memory_monitor_logs_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with capture_logs() as logs:
        async with open_memory_monitor(interval=5):
            await trio.sleep(3 * 5 + 2.5)

    records = [r for r in logs if r["event"] == "observe.memory.snapshot"]
    assert len(records) == 3
    for record in records:
        assert record["log_level"] == "info"
        assert "rss_bytes" in record  # None off Linux
        assert len(record["gc_counts"]) == 3
        assert "gc_frozen" in record
        assert "top_allocations" not in record


async def test_memory_monitor_stops_with_its_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with capture_logs() as logs:
        async with open_memory_monitor(interval=1):
            await trio.sleep(2.5)
        await trio.sleep(10)

    assert len(logs) == 2


@pytest.mark.usefixtures("tracing")
async def test_memory_monitor_lists_top_allocations_when_tracing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ballast = [bytes(1000) for _ in range(1000)]
    with capture_logs() as logs:
        async with open_memory_monitor(interval=1, top_allocations=3):
            await trio.sleep(1.5)

    [record] = logs
    sites = record["top_allocations"]
    assert 0 < len(sites) <= 3
    assert set(sites[0]) == {"where", "size_bytes", "count"}
    assert sites[0]["size_bytes"] >= 1_000_000  # the ballast line
    assert "test_memory.py:" in sites[0]["where"]
    assert record["tracemalloc_current_bytes"] >= sites[0]["size_bytes"]
    del ballast


async def test_memory_monitor_raises_the_body_error_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_memory_monitor(interval=1):
            raise KeyError("body")


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"interval": 0}, ValueError, "0"),
        ({"interval": -1.5}, ValueError, "-1.5"),
        ({"interval": math.inf}, ValueError, "inf"),
        ({"interval": math.nan}, ValueError, "nan"),
        ({"interval": "5s"}, TypeError, "'5s'"),
        ({"interval": True}, TypeError, "True"),
        ({"interval": 1, "top_allocations": -1}, ValueError, "-1"),
        ({"interval": 1, "top_allocations": 2.0}, TypeError, "2.0"),
    ],
)
async def test_memory_monitor_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as excinfo:
        async with open_memory_monitor(**kwargs):
            pass  # pragma: no cover
    assert shown in str(excinfo.value)


@pytest.mark.usefixtures("gc_settings")
def test_tune_gc_returns_and_restores_previous_settings() -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert frozen == 0

    previous = tune_gc(threshold0=50_000, freeze=True)

    assert previous == GcSettings(threshold=threshold, frozen=0)
    assert gc.get_threshold() == (50_000, *threshold[1:])
    assert gc.get_freeze_count() > 0
    previous.restore()
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("gc_settings")
def test_tune_gc_without_arguments_changes_nothing() -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()

    previous = tune_gc()

    assert previous == GcSettings(threshold=threshold, frozen=frozen)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, frozen)


@pytest.mark.usefixtures("gc_settings")
def test_tune_gc_lower_threshold_collects_more_often() -> None:
    tune_gc(threshold0=10)
    before = memory_snapshot().gc_collections[0]
    junk = [[] for _ in range(1000)]

    assert memory_snapshot().gc_collections[0] > before
    del junk


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"threshold0": 0}, ValueError, "0"),
        ({"threshold0": -700}, ValueError, "-700"),
        ({"threshold0": 1.5}, TypeError, "1.5"),
        ({"threshold0": True}, TypeError, "True"),
        ({"freeze": "yes"}, TypeError, "'yes'"),
    ],
)
@pytest.mark.usefixtures("gc_settings")
def test_tune_gc_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as excinfo:
        tune_gc(**kwargs)
    assert shown in str(excinfo.value)
    assert gc.get_freeze_count() == 0  # nothing applied
