from __future__ import annotations

import re

import pytest
import trio
import trio.lowlevel
import trio.testing

from trio_micro.toolkit import BufferPool

KiB = 1024


def small_pool(max_retained_bytes: int = 64 * KiB) -> BufferPool:
    return BufferPool(
        size_classes=(1 * KiB, 4 * KiB, 16 * KiB), max_retained_bytes=max_retained_bytes
    )


@pytest.mark.parametrize(
    ("size", "length"),
    [(0, 1 * KiB), (1, 1 * KiB), (1 * KiB, 1 * KiB), (1 * KiB + 1, 4 * KiB), (16 * KiB, 16 * KiB)],
)
def test_acquire_returns_the_smallest_fitting_class(size: int, length: int) -> None:
    buf = small_pool().acquire(size)
    assert type(buf) is bytearray
    assert len(buf) == length


def test_acquire_beyond_the_largest_class_returns_an_exact_unpooled_buffer() -> None:
    pool = small_pool()
    buf = pool.acquire(16 * KiB + 1)
    assert len(buf) == 16 * KiB + 1
    pool.release(buf)  # harmless: dropped
    stats = pool.statistics()
    assert (stats.unpooled, stats.retained_buffers, stats.dropped) == (1, 0, 1)


def test_released_buffer_is_reused() -> None:
    pool = small_pool()
    buf = pool.acquire(100)
    pool.release(buf)
    assert pool.acquire(1000) is buf
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.retained_bytes) == (1, 1, 0)


def test_most_recently_released_buffer_is_reused_first() -> None:
    pool = small_pool()
    first, second = pool.acquire(10), pool.acquire(10)
    pool.release(first)
    pool.release(second)
    assert pool.acquire(10) is second


def test_retained_bytes_never_exceed_the_cap() -> None:
    pool = small_pool(max_retained_bytes=10 * KiB)
    buffers = [pool.acquire(4 * KiB) for _ in range(4)]
    for buf in buffers:
        pool.release(buf)
    stats = pool.statistics()
    assert (stats.retained_buffers, stats.retained_bytes, stats.dropped) == (2, 8 * KiB, 2)
    assert stats.max_retained_bytes == 10 * KiB


def test_zero_cap_retains_nothing() -> None:
    pool = small_pool(max_retained_bytes=0)
    pool.release(pool.acquire(1))
    assert pool.statistics().retained_bytes == 0


def test_foreign_sized_buffer_is_dropped_harmlessly() -> None:
    pool = small_pool()
    pool.release(bytearray(1000))
    stats = pool.statistics()
    assert (stats.retained_buffers, stats.dropped) == (0, 1)


def test_foreign_buffer_of_a_class_size_is_accepted() -> None:
    pool = small_pool()
    foreign = bytearray(4 * KiB)
    pool.release(foreign)
    assert pool.acquire(2 * KiB) is foreign


def test_releasing_the_same_buffer_twice_is_detected() -> None:
    pool = small_pool()
    buf = pool.acquire(1)
    pool.release(buf)
    with pytest.raises(ValueError, match="released twice"):
        pool.release(buf)
    assert pool.statistics().retained_buffers == 1


def test_release_of_a_non_bytearray_is_a_type_error() -> None:
    pool = small_pool()
    with pytest.raises(TypeError, match="bytes"):
        pool.release(bytes(1 * KiB))  # type: ignore[arg-type]


def test_buffer_context_manager_releases_on_exit() -> None:
    pool = small_pool()
    with pool.buffer(10) as buf:
        buf[:5] = b"hello"
    assert pool.statistics().retained_buffers == 1
    assert pool.acquire(10) is buf


def test_buffer_context_manager_releases_on_error() -> None:
    pool = small_pool()
    with pytest.raises(RuntimeError), pool.buffer(10):
        raise RuntimeError("boom")
    assert pool.statistics().retained_buffers == 1


def test_clear_drops_every_retained_buffer() -> None:
    pool = small_pool()
    for size in (1, 2 * KiB, 10 * KiB):
        pool.release(pool.acquire(size))
    pool.clear()
    stats = pool.statistics()
    assert (stats.retained_buffers, stats.retained_bytes) == (0, 0)


def test_statistics_count_hits_misses_and_retained_bytes() -> None:
    pool = small_pool()
    a, b = pool.acquire(1), pool.acquire(3 * KiB)
    pool.release(a)
    pool.release(b)
    pool.acquire(2)
    stats = pool.statistics()
    assert (stats.hits, stats.misses, stats.unpooled, stats.dropped) == (1, 2, 0, 0)
    assert (stats.retained_buffers, stats.retained_bytes) == (1, 4 * KiB)


def test_default_classes_are_powers_of_two_from_1_kib_to_4_mib() -> None:
    pool = BufferPool()
    assert pool.size_classes[0] == 1 * KiB
    assert pool.size_classes[-1] == 4 * 1024 * KiB
    assert all(b == 2 * a for a, b in zip(pool.size_classes, pool.size_classes[1:], strict=False))


async def test_pool_is_shared_safely_by_trio_tasks() -> None:
    pool = small_pool()

    async def worker(tag: int) -> None:
        for _ in range(20):
            with pool.buffer(100) as buf:
                buf[0] = tag
                await trio.lowlevel.checkpoint()  # others use the pool meanwhile
                assert buf[0] == tag  # nobody else was handed our buffer

    async with trio.open_nursery() as nursery:
        for tag in range(10):
            nursery.start_soon(worker, tag)
    stats = pool.statistics()
    assert stats.hits + stats.misses == 200
    assert stats.retained_buffers == 10


@pytest.mark.parametrize(
    ("size", "error"), [(-1, ValueError), (1.5, TypeError), ("8", TypeError), (True, TypeError)]
)
def test_bad_size_is_rejected_with_the_value(size: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=re.escape(repr(size))):
        small_pool().acquire(size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size_classes", "error", "shown"),
    [
        ((), ValueError, "()"),
        ((1000,), ValueError, "1000"),
        ((0,), ValueError, "0"),
        ((-4,), ValueError, "-4"),
        ((4096, 1024), ValueError, "(4096, 1024)"),
        ((1024, 1024), ValueError, "(1024, 1024)"),
        ((1024.0,), TypeError, "1024.0"),
        ("1024", TypeError, "'1024'"),
        (1024, TypeError, "1024"),
    ],
)
def test_bad_size_classes_are_rejected_with_the_value(
    size_classes: object, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error, match=re.escape(shown)):
        BufferPool(size_classes=size_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cap", "error"), [(-1, ValueError), (1.5, TypeError), (None, TypeError)])
def test_bad_max_retained_bytes_is_rejected_with_the_value(
    cap: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=re.escape(repr(cap))):
        BufferPool(max_retained_bytes=cap)  # type: ignore[arg-type]
