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
    """The mutable accumulator behind :class:`TimeBucket` rows."""

    __slots__ = ("buckets", "hi", "level", "lo", "max_buckets", "width")

    def __init__(self, max_buckets: int) -> None:
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets!r}")
        self.max_buckets = max_buckets
        self.level = 0
        self.width = BASE_WIDTH
        self.buckets: dict[int, _Cell] = {}
        self.lo = 0
        self.hi = -1

    def cell(self, index: int) -> _Cell:
        """Return the bucket for ``index`` (computed with the current width), creating it.

        Creating it may raise the level (and change :attr:`width` and :attr:`buckets`);
        the cell returned is then the coarser one that holds ``index``.
        """
        cell = self.buckets.get(index)
        if cell is not None:
            return cell
        if not self.buckets:
            self.lo = self.hi = index
        else:
            self.lo = min(self.lo, index)
            self.hi = max(self.hi, index)
        cell = self.buckets[index] = _Cell()
        level = self.level
        while self.hi - self.lo >= self.max_buckets:
            self._coarsen_to(self.level + 1)
        return self.buckets[index >> (self.level - level)]

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
        self.width = BASE_WIDTH * 2**level
        self.lo >>= shift
        self.hi >>= shift

    def merge_rows(self, rows: tuple[TimeBucket, ...], width: float) -> None:
        """Add rows taken from another series whose bucket width is ``width``."""
        if not rows:
            return
        level = round(width / BASE_WIDTH).bit_length() - 1
        self._coarsen_to(level)
        for row in rows:
            cell = self.cell(round(row.start / width) >> (self.level - level))
            cell.calls += row.calls
            cell.errors += row.errors
            cell.latency.merge(row.latency)

    def rows(self) -> tuple[TimeBucket, ...]:
        width = self.width
        return tuple(
            TimeBucket(index * width, width, cell.calls, cell.errors, cell.latency.copy())
            for index, cell in sorted(self.buckets.items())
        )
