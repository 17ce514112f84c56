"""A mergeable quantile sketch: DDSketch's logarithmic mapping, without a bucket limit.

The mapping is DDSketch's (Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable
Quantile Sketch with Relative-Error Guarantees", PVLDB 12(12), 2019; DataDog's
``ddsketch`` package), and ``tests/analysis/test_sketch.py`` checks it against that package.

Theory of operation: a value ``x >= MIN_TRACKED`` falls into bucket
``i = floor(log(x) / log(gamma))``, which covers ``[gamma**i, gamma**(i + 1))``, with
``gamma = (1 + a) / (1 - a)`` for the relative error ``a`` (:data:`RELATIVE_ERROR`, 1%).
(DDSketch numbers the same buckets ``i + 1``, by ``ceil``, and closes them on the right;
the two differ only for a value that is exactly a power of ``gamma``.) A quantile query
finds the bucket holding the requested rank and answers with ``2 * gamma**(i + 1) /
(gamma + 1)``, which is within ``a`` (relatively) of every value in that bucket, so of the
exact quantile too. Smaller values (including 0) share one zero bucket and are answered as
0. Merging adds bucket counts, so a merged sketch is *the same* sketch as one built from
all values in one pass, in any order. Memory is one dict entry per bucket in use: about 115
buckets per decade of latency (about 1,000 from 1 ns to an hour); DDSketch's bound on the
number of buckets (collapsing the lowest) is not needed at that size and is left out.

Bulk callers (the log summary) compute the bucket indices of a batch once with
:meth:`LatencySketch.bucket_indices` and hand them to :meth:`LatencySketch.add_many` and
:meth:`LatencySketch.from_buckets`, so that every value costs one logarithm.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, repeat
from operator import add
from typing import Final, Self, final

__all__ = ["MIN_TRACKED", "RELATIVE_ERROR", "LatencySketch"]

#: Largest relative error of :meth:`LatencySketch.quantile` for values >= MIN_TRACKED.
RELATIVE_ERROR: Final = 0.01
#: Values below this (in the sketch's unit, milliseconds here: 1 ns) count as zero.
MIN_TRACKED: Final = 1e-6

_GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
# The index of the zero bucket: just below the bucket of MIN_TRACKED, so that it sorts first.
# Every index is computed as floor(log(x) * _INV_LOG_GAMMA) (bucket_index and
# LatencySketch.bucket_indices), so that both put a value into the same bucket.
_ZERO: Final = math.floor(math.log(MIN_TRACKED) * _INV_LOG_GAMMA) - 1
_ZEROS: Final = repeat(0)  # the default of dict.get, for map()


def _add_counts(buckets: dict[int, int], more: Mapping[int, int]) -> None:
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


def _check_values(values: Sequence[float]) -> None:
    if values and not (min(values) >= 0 and not any(map(math.isnan, values))):
        bad = next(v for v in values if not v >= 0)
        raise ValueError(f"value must be a non-negative number, got {bad!r}")


@final
class LatencySketch:
    """Streaming quantiles with a relative error of at most 1%, in bounded memory.

    Feed it with :meth:`add` or :meth:`add_many`; combine two with :meth:`merge`.
    Quantiles are exact up to :data:`RELATIVE_ERROR` (relative to the exact value at the
    same rank); :attr:`count`, :attr:`min` and :attr:`max` are exact; :attr:`total` is a
    float sum (exact up to rounding, so merges may differ from one pass in the last bits).

    Args:
        values: Initial values (non-negative).
    """

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self, values: Iterable[float] = ()) -> None:
        # A Counter, so that bulk additions count bucket indices into it at C speed.
        self._buckets: Counter[int] = Counter()
        #: Number of values added.
        self.count = 0
        #: Sum of the values.
        self.total = 0.0
        #: Smallest value (``inf`` while empty).
        self.min = math.inf
        #: Largest value (``-inf`` while empty).
        self.max = -math.inf
        if values:
            self.add_many(values if isinstance(values, Sequence) else list(values))

    @staticmethod
    def bucket_indices(values: Iterable[float], smallest: float | None = None) -> list[int]:
        """Return the bucket index of each of ``values`` (non-negative), at C speed.

        Indices are what :meth:`bucket_counts` is keyed by; pass them to :meth:`add_many`
        or count them for :meth:`from_buckets` to save computing them twice. ``smallest``
        is the least of ``values`` if the caller knows it (it saves a pass).
        """
        values = values if isinstance(values, list) else list(values)
        if not values:
            return []
        if smallest is None:
            smallest = min(values)
        if smallest >= MIN_TRACKED:
            return list(map(math.floor, map(_INV_LOG_GAMMA.__mul__, map(math.log, values))))
        return list(map(bucket_index, values))

    @classmethod
    def from_buckets(
        cls,
        counts: Mapping[int, int],
        *,
        total: float,
        min: float,  # noqa: A002 - the attribute's name
        max: float,  # noqa: A002
    ) -> Self:
        """Return the sketch whose :meth:`bucket_counts` are ``counts``.

        ``total``, ``min`` and ``max`` are the sum and the extremes of the values counted
        (not checked against the buckets): the inverse of :meth:`bucket_counts` and those
        attributes, for serialisation and for callers that counted indices themselves.
        """
        sketch = cls()
        _add_counts(sketch._buckets, counts)
        sketch.count = sum(counts.values())
        sketch.total = total
        if sketch.count:
            sketch.min = min
            sketch.max = max
        return sketch

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

    def add_many(self, values: Sequence[float], indices: Sequence[int] | None = None) -> None:
        """Add every one of ``values``, at C speed (the same sketch as :meth:`add` each).

        ``indices``, when given, must be :meth:`bucket_indices` of ``values``: the values
        are then not checked and their logarithms not taken again.

        Raises:
            ValueError: A value is negative or NaN (without ``indices``; nothing is added).
        """
        if not values:
            return
        if indices is None:
            _check_values(values)
            indices = self.bucket_indices(values)
        self._buckets.update(indices)
        self.count += len(values)
        self.total += sum(values)
        self.min = min(self.min, min(values))
        self.max = max(self.max, max(values))

    def merge(self, other: LatencySketch) -> None:
        """Add every value of ``other`` to this sketch (``other`` is unchanged)."""
        _add_counts(self._buckets, other._buckets)
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
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """:meth:`quantile` of each of ``qs``, sorting the buckets once.

        Raises:
            ValueError: A ``q`` is not within ``[0, 1]``, or the sketch is empty.
        """
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
        """The raw bucket counts by index (a copy, for serialisation; see
        :meth:`from_buckets`)."""
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
