"""Reusable byte buffers: `BufferPool`, a bounded ``sync.Pool`` for ``bytearray``.

Theory of operation
-------------------
Buffers come in power-of-two *size classes*. ``acquire(size)`` picks the smallest class
that fits (a binary search) and pops a retained buffer of that class, or allocates a
new one; a request bigger than the largest class gets a fresh, unpooled buffer of
exactly ``size`` bytes. ``release(buf)`` files the buffer under its class if the
retained total stays within ``max_retained_bytes``, otherwise drops it for the garbage
collector. So memory held by the pool is bounded no matter how callers behave.

Each class's free list is a dict ``id(buf) -> buf`` used as a LIFO stack
(``popitem()``): the most recently released, cache-warm buffer is reused first, and a
buffer released twice in a row is detected in O(1) without scanning.

Everything is synchronous (no checkpoints, no locks): use a pool from the tasks of one
thread, e.g. one ``trio.run``. It is not thread-safe.

Whether pooling pays depends on the size: small ``bytearray`` allocation is cheaper
than the bookkeeping, large ones are not; ``benchmarks/bench_limits.py`` measures it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import final

from .._validate import check_int

__all__ = ["BufferPool", "BufferPoolStatistics"]

_KiB = 1024
_MiB = 1024 * _KiB

# 1 KiB, 2 KiB, ..., 4 MiB (the largest RPC frame by default).
_DEFAULT_SIZE_CLASSES: tuple[int, ...] = tuple(1 << shift for shift in range(10, 23))
_DEFAULT_MAX_RETAINED_BYTES = 16 * _MiB


def _check_size_classes(size_classes: object) -> tuple[int, ...]:
    if isinstance(size_classes, str | bytes) or not isinstance(size_classes, Iterable):
        raise TypeError(f"size_classes must be an iterable of ints, got {size_classes!r}")
    classes = tuple(size_classes)
    if not classes:
        raise ValueError(f"size_classes must not be empty, got {size_classes!r}")
    for index, size in enumerate(classes):
        name = f"size_classes[{index}]"
        if check_int(name, size, minimum=1) & (size - 1):  # more than one bit set
            raise ValueError(f"{name} must be a power of two, got {size!r}")
    if any(a >= b for a, b in itertools.pairwise(classes)):
        raise ValueError(f"size_classes must be strictly increasing, got {size_classes!r}")
    return classes


@final
@dataclass(frozen=True, slots=True)
class BufferPoolStatistics:
    """A snapshot of a `BufferPool`.

    Attributes:
        hits: ``acquire`` calls served with a retained buffer.
        misses: ``acquire`` calls that allocated a buffer of a size class.
        unpooled: ``acquire`` calls bigger than the largest class (fresh, exact size).
        retained_buffers: Buffers held by the pool now.
        retained_bytes: Bytes held by the pool now (``<= max_retained_bytes``).
        max_retained_bytes: The cap on ``retained_bytes``.
        dropped: ``release`` calls whose buffer was not kept: over the cap, or not of a
            size class (unpooled or foreign buffers).
    """

    hits: int
    misses: int
    unpooled: int
    retained_buffers: int
    retained_bytes: int
    max_retained_bytes: int
    dropped: int


@final
class BufferPool:
    """A bounded pool of reusable ``bytearray`` buffers in power-of-two size classes.

    ::

        pool = BufferPool()
        with pool.buffer(frame_size) as buf:
            view = memoryview(buf)[:frame_size]
            ...

    Buffers handed out are at least the requested size (the whole class) and hold
    stale bytes from their previous user: slice to the length you need and never
    send bytes you did not write. After ``release`` the caller must keep no reference
    or ``memoryview`` to the buffer: the pool cannot see those, and the next user
    would share the memory.

    Every method is synchronous and never a checkpoint. Not thread-safe.

    Args:
        size_classes: Strictly increasing powers of two; the default is 1 KiB ... 4 MiB.
        max_retained_bytes: Most bytes the pool keeps for reuse (default 16 MiB);
            ``0`` disables retention.

    Raises:
        TypeError: If ``size_classes`` is not an iterable of ints, or
            ``max_retained_bytes`` is not an int.
        ValueError: If a size class is not a power of two >= 1, the classes are empty
            or not strictly increasing, or ``max_retained_bytes`` < 0.
    """

    __slots__ = (
        "_class_index",
        "_classes",
        "_dropped",
        "_free",
        "_hits",
        "_max_retained",
        "_misses",
        "_retained_bytes",
        "_unpooled",
    )

    def __init__(
        self,
        *,
        size_classes: Iterable[int] = _DEFAULT_SIZE_CLASSES,
        max_retained_bytes: int = _DEFAULT_MAX_RETAINED_BYTES,
    ) -> None:
        self._classes = _check_size_classes(size_classes)
        self._max_retained = check_int("max_retained_bytes", max_retained_bytes, minimum=0)
        self._class_index = {size: i for i, size in enumerate(self._classes)}
        # Per class: id(buf) -> buf, used as a LIFO stack; see the module docstring.
        self._free: list[dict[int, bytearray]] = [{} for _ in self._classes]
        self._retained_bytes = 0
        self._hits = 0
        self._misses = 0
        self._unpooled = 0
        self._dropped = 0

    def __repr__(self) -> str:
        return (
            f"BufferPool(size_classes={self._classes!r}, max_retained_bytes={self._max_retained!r})"
        )

    @property
    def size_classes(self) -> tuple[int, ...]:
        """The size classes, smallest first."""
        return self._classes

    def acquire(self, size: int) -> bytearray:
        """Return a buffer of at least ``size`` bytes.

        The buffer's length is that of the smallest size class that fits (reused if
        one is retained, else newly allocated), or exactly ``size`` if it exceeds the
        largest class. Contents are unspecified. Not a checkpoint.

        Args:
            size: Bytes needed, >= 0.

        Returns:
            A ``bytearray`` owned by the caller until it is passed to `release`.

        Raises:
            TypeError: If ``size`` is not an int.
            ValueError: If ``size`` < 0.
        """
        if type(size) is not int or size < 0:
            check_int("size", size, minimum=0)  # raises, or accepts an int subclass
        classes = self._classes
        index = bisect.bisect_left(classes, size)
        if index == len(classes):
            self._unpooled += 1
            return bytearray(size)
        free = self._free[index]
        if free:
            buf = free.popitem()[1]
            self._retained_bytes -= len(buf)
            self._hits += 1
            return buf
        self._misses += 1
        return bytearray(classes[index])

    def release(self, buf: bytearray) -> None:
        """Give ``buf`` back for reuse; the caller must not touch it afterwards.

        A buffer whose length is a size class is retained if that keeps the pool
        within ``max_retained_bytes``, otherwise dropped. Any other ``bytearray`` (an
        unpooled one from `acquire`, or a foreign one) is harmlessly dropped, so it is
        always fine to release what `acquire` returned. Not a checkpoint.

        Args:
            buf: A buffer, normally from `acquire`.

        Raises:
            TypeError: If ``buf`` is not a ``bytearray``.
            ValueError: If ``buf`` is already retained by the pool (released twice with
                no ``acquire`` in between). A double release after the buffer was
                handed out again cannot be detected: it is the caller's bug.
        """
        if type(buf) is not bytearray and not isinstance(buf, bytearray):
            raise TypeError(f"buf must be a bytearray, got {type(buf).__name__} {buf!r:.60}")
        size = len(buf)
        index = self._class_index.get(size)
        if index is None:
            self._dropped += 1
            return
        free = self._free[index]
        key = id(buf)
        if key in free:
            raise ValueError(f"buffer released twice: {size}-byte bytearray at {key:#x}")
        if self._retained_bytes + size > self._max_retained:
            self._dropped += 1
            return
        free[key] = buf
        self._retained_bytes += size

    @contextmanager
    def buffer(self, size: int) -> Iterator[bytearray]:
        """Lend a buffer for the ``with`` block: ``with pool.buffer(size) as buf:``.

        The buffer is released when the block exits, also on an exception; do not
        release it yourself inside the block. Not a checkpoint.

        Args:
            size: Bytes needed, >= 0.

        Raises:
            TypeError: If ``size`` is not an int.
            ValueError: If ``size`` < 0.
        """
        buf = self.acquire(size)
        try:
            yield buf
        finally:
            self.release(buf)

    def clear(self) -> None:
        """Drop every retained buffer (e.g. after a traffic spike). Not a checkpoint."""
        for free in self._free:
            free.clear()
        self._retained_bytes = 0

    def statistics(self) -> BufferPoolStatistics:
        """Return a snapshot; see `BufferPoolStatistics`. Not a checkpoint."""
        return BufferPoolStatistics(
            hits=self._hits,
            misses=self._misses,
            unpooled=self._unpooled,
            retained_buffers=sum(len(free) for free in self._free),
            retained_bytes=self._retained_bytes,
            max_retained_bytes=self._max_retained,
            dropped=self._dropped,
        )
