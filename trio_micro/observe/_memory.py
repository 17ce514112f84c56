"""Memory monitor and GC tuning: the Go article's ``MemoryProfiler`` and ``SetGCPercent``.

:func:`memory_snapshot` gathers what Python can tell cheaply about the process's memory:
resident set size (from ``/proc/self/statm``) and its peak (``getrusage``), the
:mod:`tracemalloc` totals when tracing is on, and the collector's counters.
:func:`open_memory_monitor` logs one every ``interval`` seconds. :func:`tune_gc` adjusts
the collector and hands back the settings it replaced.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, final

import structlog
import trio

from .._background import open_background_nursery
from .._validate import check_bool, check_int, check_optional_int, check_seconds
from ._tasks import _short_path

__all__ = [
    "GcSettings",
    "MemorySnapshot",
    "memory_snapshot",
    "open_memory_monitor",
    "tune_gc",
]

_log = structlog.get_logger("trio_micro.observe")

_STATM_PATH: Final = "/proc/self/statm"  # Linux: sizes in pages; the second is resident
# Allocation sites in these files are the measuring itself, not the application.
_TRACEMALLOC_NOISE: Final = (
    tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib._bootstrap>"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(inclusive=False, filename_pattern="<unknown>"),
)


@final
@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """The process's memory at one moment.

    Attributes:
        rss_bytes: Resident set size now, or ``None`` where ``/proc/self/statm`` is missing.
        peak_rss_bytes: The largest resident set size so far, or ``None`` without
            :mod:`resource`.
        tracemalloc_current_bytes: Memory in blocks traced by :mod:`tracemalloc`, or
            ``None`` when it is not tracing.
        tracemalloc_peak_bytes: The peak of that since tracing started (or the peak was
            reset), or ``None`` when not tracing.
        gc_counts: Allocations minus deallocations counted towards each generation's next
            collection (:func:`gc.get_count`).
        gc_threshold: The collector's thresholds (:func:`gc.get_threshold`).
        gc_collections: Collections run so far, per generation.
        gc_collected: Objects collected so far, per generation.
        gc_uncollectable: Uncollectable objects found so far, per generation.
        gc_frozen: Objects in the permanent generation (:func:`gc.freeze`).
    """

    rss_bytes: int | None
    peak_rss_bytes: int | None
    tracemalloc_current_bytes: int | None
    tracemalloc_peak_bytes: int | None
    gc_counts: tuple[int, ...]
    gc_threshold: tuple[int, ...]
    gc_collections: tuple[int, ...]
    gc_collected: tuple[int, ...]
    gc_uncollectable: tuple[int, ...]
    gc_frozen: int


def memory_snapshot() -> MemorySnapshot:
    """Measure the process's memory now.

    Cheap (a small ``/proc`` read and a few counters); not a checkpoint.

    Returns:
        The measurements; fields the platform cannot provide are ``None``.
    """
    rss = _rss_bytes()
    peak = _peak_rss_bytes()
    # The kernel updates the rusage high-water mark lazily, so it can trail statm by a
    # few pages; the peak is never below what we just saw.
    if peak is not None and rss is not None and rss > peak:
        peak = rss
    if tracemalloc.is_tracing():
        current, traced_peak = tracemalloc.get_traced_memory()
        traced: tuple[int | None, int | None] = (current, traced_peak)
    else:
        traced = (None, None)
    stats = gc.get_stats()
    return MemorySnapshot(
        rss_bytes=rss,
        peak_rss_bytes=peak,
        tracemalloc_current_bytes=traced[0],
        tracemalloc_peak_bytes=traced[1],
        gc_counts=tuple(gc.get_count()),
        gc_threshold=tuple(gc.get_threshold()),
        gc_collections=tuple(gen["collections"] for gen in stats),
        gc_collected=tuple(gen["collected"] for gen in stats),
        gc_uncollectable=tuple(gen["uncollectable"] for gen in stats),
        gc_frozen=gc.get_freeze_count(),
    )


def _rss_bytes() -> int | None:
    try:
        with open(_STATM_PATH, "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux, or unexpected
        return None


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Kilobytes on Linux and the BSDs, bytes on macOS.
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _top_allocations(limit: int) -> list[dict[str, object]]:
    """The ``limit`` source lines holding the most traced memory."""
    snapshot = tracemalloc.take_snapshot().filter_traces(_TRACEMALLOC_NOISE)
    return [
        {
            "where": f"{_short_path(stat.traceback[0].filename)}:{stat.traceback[0].lineno}",
            "size_bytes": stat.size,
            "count": stat.count,
        }
        for stat in snapshot.statistics("lineno")[:limit]
    ]


@asynccontextmanager
async def open_memory_monitor(*, interval: float, top_allocations: int = 0) -> AsyncIterator[None]:
    """Log a memory snapshot every ``interval`` seconds while the body runs.

    A task named ``trio_micro.observe.memory_monitor``, in a nursery owned by this context
    manager, logs ``observe.memory.snapshot`` (the fields of :class:`MemorySnapshot`) at
    ``interval``, ``2 * interval``, ... seconds of trio time after entry, so a body that runs
    ``n * interval`` seconds gets ``n`` records. With ``top_allocations`` and
    :mod:`tracemalloc` tracing, each record also has ``top_allocations``: the source lines
    holding the most traced memory, as ``{"where", "size_bytes", "count"}`` objects. That
    takes a tracemalloc snapshot, which holds the event loop for a time proportional to
    the number of traced blocks: use it while hunting a leak, not all the time.

    Entering is not a checkpoint; exiting is one. On exit, or when the body is cancelled,
    the logging task is cancelled. An exception raised by the body
    comes out unwrapped (:func:`trio_micro.open_background_nursery`); only if the logging
    task failed too do both come out in a :class:`BaseExceptionGroup`.

    Args:
        interval: Seconds of trio time between records.
        top_allocations: How many allocation sites to list; 0 lists none.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``interval`` is not positive or ``top_allocations`` is negative.
    """
    check_seconds("interval", interval, finite=True)
    check_int("top_allocations", top_allocations, minimum=0)

    async with open_background_nursery() as nursery:
        nursery.start_soon(
            _log_forever, interval, top_allocations, name="trio_micro.observe.memory_monitor"
        )
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def _log_forever(interval: float, top_allocations: int) -> None:
    deadline = trio.current_time()
    while True:
        # Absolute deadlines: logging time does not make the schedule drift.
        deadline += interval
        await trio.sleep_until(deadline)
        fields: dict[str, object] = dataclasses.asdict(memory_snapshot())
        if top_allocations and tracemalloc.is_tracing():
            fields["top_allocations"] = _top_allocations(top_allocations)
        _log.info("observe.memory.snapshot", **fields)


@final
@dataclass(frozen=True, slots=True)
class GcSettings:
    """Collector settings, as returned by :func:`tune_gc` to undo its changes.

    Attributes:
        threshold: The three generation thresholds (:func:`gc.get_threshold`).
        frozen: Objects in the permanent generation (:func:`gc.get_freeze_count`).
    """

    threshold: tuple[int, ...]
    frozen: int

    def restore(self) -> None:
        """Put the collector back to these settings.

        Sets the thresholds back. If no objects were frozen then and some are now, calls
        :func:`gc.unfreeze` (they go back into the oldest generation). If objects were
        already frozen then, the freeze is left alone: the collector cannot unfreeze part
        of it. Not a checkpoint.
        """
        gc.set_threshold(*self.threshold)
        if self.frozen == 0 and gc.get_freeze_count() > 0:
            gc.unfreeze()


def tune_gc(*, threshold0: int | None = None, freeze: bool = False) -> GcSettings:
    """Tune CPython's cyclic garbage collector; the analogue of Go's ``SetGCPercent``.

    Go's knob sets how much the heap may grow before the next collection. CPython frees
    most objects at once by reference counting; the cyclic collector only hunts reference
    cycles, and its generation-0 pass runs each time allocations minus deallocations of
    container objects exceed ``threshold0`` (700 by default). A server that builds many
    short-lived dicts, lists and objects per request therefore runs gen-0 collections
    thousands of times a second, and every older-generation pass scans every long-lived
    object too: CPU time and latency spikes spent finding little garbage.

    * ``threshold0``: raise it (say to 10_000 - 50_000) for **fewer gen-0 collections** in
      allocation-heavy servers, trading some memory (cyclic garbage waits longer) for CPU
      and steadier latency. Lowering it collects more aggressively, like the article's
      ``SetGCPercent(50)``.
    * ``freeze=True``: call it **after startup**, once modules, configuration and warm
      caches are loaded. :func:`gc.freeze` moves every object the collector tracks into
      a permanent generation that collections never scan, so long-lived startup objects
      stop costing time in each full collection (and, in forked workers, stop having their
      pages copied by the collector writing to them). Objects frozen this way are never
      collected until :func:`gc.unfreeze`.

    Measure with :func:`memory_snapshot` (``gc_collections``) before and after. Not a
    checkpoint; the settings are process-wide.

    Args:
        threshold0: The new generation-0 threshold; ``None`` leaves it as it is.
        freeze: Freeze all objects the collector currently tracks.

    Returns:
        The settings before this call; call :meth:`GcSettings.restore` on it to undo.

    Raises:
        TypeError: ``threshold0`` is not an int, or ``freeze`` not a bool.
        ValueError: ``threshold0`` is not positive (use :func:`gc.disable` to turn the
            collector off).
    """
    check_optional_int("threshold0", threshold0, minimum=1)
    check_bool("freeze", freeze)

    previous = GcSettings(threshold=tuple(gc.get_threshold()), frozen=gc.get_freeze_count())
    if threshold0 is not None:
        gc.set_threshold(threshold0, *previous.threshold[1:])
    if freeze:
        gc.freeze()
    return previous
