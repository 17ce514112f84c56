"""A mergeable quantile sketch: a log-bucketed (HDR-style) histogram.

Theory of operation: a value ``x >= MIN_TRACKED`` falls into bucket
``i = floor(log(x) / log(gamma))``, which covers ``[gamma**i, gamma**(i + 1))``, with
``gamma = (1 + a) / (1 - a)`` for the relative error ``a`` (:data:`RELATIVE_ERROR`, 1%).
A quantile query finds the bucket holding the requested rank and answers with
``2 * gamma**(i + 1) / (gamma + 1)``, which is within ``a`` (relatively) of every value in
that bucket, so of the exact quantile too. Smaller values (including 0) share one zero
bucket and are answered as 0. Merging adds bucket counts, so a merged sketch is *the same*
sketch as one built from all values in one pass, in any order. Memory is one dict entry
per bucket in use: about 115 buckets per decade of latency (about 1,000 from 1 ns to an
hour).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Final, final

__all__ = ["MIN_TRACKED", "RELATIVE_ERROR", "LatencySketch"]

#: Largest relative error of :meth:`LatencySketch.quantile` for values >= MIN_TRACKED.
RELATIVE_ERROR: Final = 0.01
#: Values below this (in the sketch's unit, milliseconds here: 1 ns) count as zero.
MIN_TRACKED: Final = 1e-6

_GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
# The index of the zero bucket: just below the bucket of MIN_TRACKED, so that it sorts first.
# Every index is computed as floor(log(x) * _INV_LOG_GAMMA), here and in the bulk path of
# SummaryBuilder, so that both put a value into the same bucket.
_ZERO: Final = math.floor(math.log(MIN_TRACKED) * _INV_LOG_GAMMA) - 1
_ZEROS: Final = repeat(0)  # the default of dict.get, for map()


def add_counts(buckets: dict[int, int], more: Mapping[int, int]) -> None:
    """Add the counts of ``more`` to ``buckets``, key by key, at C speed."""
    # dict.update, also for a Counter (whose update would count the pairs as elements):
    # each key of ``more`` with the count in ``buckets`` added.
    if buckets:
        added = map(add, more.values(), map(buckets.get, more, _ZEROS))
        dict.update(buckets, zip(more, added, strict=True))
    else:
        dict.update(buckets, more)


def bucket_index(value: float) -> int:
    """Return the bucket of a non-negative ``value``."""
    return math.floor(math.log(value) * _INV_LOG_GAMMA) if value >= MIN_TRACKED else _ZERO


def _bucket_bounds(index: int) -> tuple[float, float]:
    """Return ``[low, high)`` of bucket ``index``."""
    if index == _ZERO:
        return 0.0, MIN_TRACKED
    return _GAMMA**index, _GAMMA ** (index + 1)


def _representative(index: int) -> float:
    if index == _ZERO:
        return 0.0
    return 2 * _GAMMA ** (index + 1) / (_GAMMA + 1)


@final
class LatencySketch:
    """Streaming quantiles with a relative error of at most 1%, in bounded memory.

    Feed it with :meth:`add`; combine two with :meth:`merge`. Quantiles are exact up to
    :data:`RELATIVE_ERROR` (relative to the exact value at the same rank); :attr:`count`,
    :attr:`min` and :attr:`max` are exact; :attr:`total` is a float sum (exact up to
    rounding, so merges may differ from one pass in the last bits).

    Args:
        values: Initial values (non-negative).
    """

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self, values: Iterable[float] = ()) -> None:
        # A Counter, so that bulk callers count bucket indices into it at C speed
        # (``self._buckets.update(indices)``).
        self._buckets: Counter[int] = Counter()
        #: Number of values added.
        self.count = 0
        #: Sum of the values.
        self.total = 0.0
        #: Smallest value (``inf`` while empty).
        self.min = math.inf
        #: Largest value (``-inf`` while empty).
        self.max = -math.inf
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        """Add one value.

        Raises:
            ValueError: ``value`` is negative or NaN.
        """
        if not value >= 0:
            raise ValueError(f"value must be a non-negative number, got {value!r}")
        index = bucket_index(value)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        self.min = min(value, self.min)
        self.max = max(value, self.max)

    def _add_at(self, index: int, value: float) -> None:
        """Add ``value`` whose bucket ``index`` the caller computed (no checks)."""
        self._buckets[index] += 1
        self.count += 1
        self.total += value
        self.min = min(value, self.min)
        self.max = max(value, self.max)

    def merge(self, other: LatencySketch) -> None:
        """Add every value of ``other`` to this sketch (``other`` is unchanged)."""
        add_counts(self._buckets, other._buckets)
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> LatencySketch:
        """Return an independent copy."""
        new = LatencySketch()
        new.merge(self)
        return new

    @property
    def mean(self) -> float:
        """The mean of the values (NaN while empty)."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Return the ``q``-quantile: the value of rank ``floor(q * (count - 1))``.

        The answer is within :data:`RELATIVE_ERROR` of the exact value of that rank (and
        between :attr:`min` and :attr:`max`); values below :data:`MIN_TRACKED` answer 0.

        Raises:
            ValueError: ``q`` is not within ``[0, 1]``, or the sketch is empty.
        """
        return self._quantiles((q,))[0]

    def _quantiles(self, qs: Sequence[float]) -> list[float]:
        """:meth:`quantile` of each of ``qs``, sorting the buckets once."""
        for q in qs:
            if not 0 <= q <= 1:
                raise ValueError(f"q must be within [0, 1], got {q!r}")
        if not self.count:
            raise ValueError("quantile of an empty sketch")
        last = self.count - 1
        indices: list[int] = []
        seen: list[int] = []
        out = []
        for q in qs:
            rank = math.floor(q * last)
            if rank == 0:
                out.append(self.min)
            elif rank == last:
                out.append(self.max)
            else:
                if not indices:
                    indices = sorted(self._buckets)
                    seen = list(accumulate(map(self._buckets.__getitem__, indices)))
                # The first bucket whose running count passes the rank holds it.
                index = indices[bisect_right(seen, rank)]
                out.append(min(max(_representative(index), self.min), self.max))
        return out

    def buckets(self) -> Iterator[tuple[float, float, int]]:
        """Yield ``(low, high, count)`` of every non-empty bucket, in increasing order."""
        for index in sorted(self._buckets):
            low, high = _bucket_bounds(index)
            yield low, high, self._buckets[index]

    def bucket_counts(self) -> Mapping[int, int]:
        """The raw bucket counts by index (read-only view, for serialisation)."""
        return dict(self._buckets)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return (
            self._buckets == other._buckets
            and self.count == other.count
            and self.min == other.min
            and self.max == other.max
            and math.isclose(self.total, other.total, rel_tol=1e-9, abs_tol=1e-9)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<LatencySketch count={self.count} buckets={len(self._buckets)}>"
