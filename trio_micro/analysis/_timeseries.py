"""Time buckets for plots: calls, errors and latency over time, in bounded memory.

Theory of operation: bucket ``j`` at level ``k`` covers ``[j * w, (j + 1) * w)`` seconds
since the epoch, with ``w = BASE_WIDTH * 2**k``. When the buckets in use would span more
than ``max_buckets``, the level goes up by one: neighbouring buckets pair up exactly
(``j // 2``), because every width is the previous one doubled. The level reached is the
smallest one at which the whole time range fits, whatever order the records came in, so
merging two series (coarsen both to the larger level, add, coarsen while needed) gives the
same buckets as one pass over all records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

from ._sketch import LatencySketch

__all__ = ["BASE_WIDTH", "TimeBucket"]

#: The finest bucket width in seconds (1 ms); widths are this times a power of two.
BASE_WIDTH: Final = 0.001
_TICKS_PER_SECOND: Final = 1 / BASE_WIDTH  # 1000.0: level-0 buckets per second


@final
@dataclass(frozen=True, slots=True)
class TimeBucket:
    """Calls that ended within ``[start, start + width)``.

    Attributes:
        start: Start of the bucket, seconds since the epoch (UTC).
        width: Width of the bucket in seconds.
        calls: Number of calls.
        errors: Calls whose code is not ``"OK"``.
        latency: Their durations (ms); treat as read-only.
    """

    start: float
    width: float
    calls: int
    errors: int
    latency: LatencySketch


class _Cell:
    __slots__ = ("calls", "errors", "latency")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.latency = LatencySketch()


class _TimeSeries:
    """The mutable accumulator behind :class:`TimeBucket` rows.

    Buckets are keyed by ``tick >> level``, where ``tick = floor(seconds * 1000)`` is the
    level-0 bucket, so that records and merged rows land in the same bucket whatever the
    level was when they arrived.
    """

    __slots__ = ("buckets", "hi", "level", "lo", "max_buckets")

    def __init__(self, max_buckets: int) -> None:
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets!r}")
        self.max_buckets = max_buckets
        self.level = 0
        self.buckets: dict[int, _Cell] = {}
        self.lo = 0
        self.hi = -1

    @property
    def width(self) -> float:
        """The width of a bucket in seconds."""
        return BASE_WIDTH * (1 << self.level)

    def cover(self, lo_tick: int, hi_tick: int) -> None:
        """Raise the level until ticks ``lo_tick`` to ``hi_tick`` fit (with the rest)."""
        lo, hi = lo_tick >> self.level, hi_tick >> self.level
        if self.hi >= self.lo:  # not empty
            lo, hi = min(lo, self.lo), max(hi, self.hi)
        self.lo, self.hi = lo, hi
        while self.hi - self.lo >= self.max_buckets:
            self._coarsen_to(self.level + 1)

    def cell(self, index: int) -> _Cell:
        """Return bucket ``index`` at the current level, creating it.

        Call :meth:`cover` for its ticks first, so that it is within the bound.
        """
        cell = self.buckets.get(index)
        if cell is None:
            cell = self.buckets[index] = _Cell()
        return cell

    def _coarsen_to(self, level: int) -> None:
        shift = level - self.level
        if shift <= 0:
            return
        merged: dict[int, _Cell] = {}
        for index, cell in self.buckets.items():
            j = index >> shift
            into = merged.get(j)
            if into is None:
                merged[j] = cell
            else:
                into.calls += cell.calls
                into.errors += cell.errors
                into.latency.merge(cell.latency)
        self.buckets = merged
        self.level = level
        self.lo >>= shift
        self.hi >>= shift

    def merge_rows(self, rows: tuple[TimeBucket, ...], width: float) -> None:
        """Add rows taken from another series whose bucket width is ``width``."""
        if not rows:
            return
        level = round(width / BASE_WIDTH).bit_length() - 1
        firsts = [round(row.start / width) << level for row in rows]
        self._coarsen_to(level)
        self.cover(min(firsts), max(firsts))
        for first, row in zip(firsts, rows, strict=True):
            cell = self.cell(first >> self.level)
            cell.calls += row.calls
            cell.errors += row.errors
            cell.latency.merge(row.latency)

    def rows(self) -> tuple[TimeBucket, ...]:
        width = self.width
        return tuple(
            TimeBucket(index * width, width, cell.calls, cell.errors, cell.latency.copy())
            for index, cell in sorted(self.buckets.items())
        )
