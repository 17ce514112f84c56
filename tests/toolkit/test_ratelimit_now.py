"""``acquire_nowait(..., now=t)``: a time the caller already has, instead of the clock.

Every call below passes ``now``: the decisions come from it, whatever trio's clock says.
"""

from __future__ import annotations

import math
import re

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_micro.toolkit import KeyedRateLimiter, RateLimiter


def take(limiter: RateLimiter | KeyedRateLimiter[str], now: object) -> None:
    if isinstance(limiter, RateLimiter):
        limiter.acquire_nowait(now=now)  # type: ignore[arg-type]
    else:
        limiter.acquire_nowait("k", now=now)  # type: ignore[arg-type]


def admits(limiter: RateLimiter, now: float, n: int = 1) -> bool:
    try:
        limiter.acquire_nowait(n, now=now)
    except trio.WouldBlock:
        return False
    return True


LIMITERS = [
    pytest.param(lambda: RateLimiter(1, burst=2), id="RateLimiter"),
    pytest.param(lambda: KeyedRateLimiter[str](1, burst=2), id="KeyedRateLimiter"),
]


@pytest.mark.parametrize("make", LIMITERS)
@pytest.mark.parametrize("now", ["1.5", True, [1.0], 1j])
async def test_now_of_a_wrong_type_is_rejected_with_the_value(make: object, now: object) -> None:
    limiter = make()  # type: ignore[operator]
    with pytest.raises(
        TypeError, match=rf"^now must be an int or float .*, got {re.escape(repr(now))}$"
    ):
        take(limiter, now)


@pytest.mark.parametrize("make", LIMITERS)
@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf, 10**400])
async def test_now_that_is_not_finite_is_rejected_and_takes_nothing(
    make: object, now: object
) -> None:
    limiter = make()  # type: ignore[operator]
    message = rf"^now must be a finite number .*, got {re.escape(repr(now))}$"
    with pytest.raises(ValueError, match=message):
        take(limiter, now)
    assert limiter.statistics().tokens_admitted == 0


async def test_an_int_now_is_the_same_time_as_the_float() -> None:
    limiter = RateLimiter(1, burst=1)
    limiter.acquire_nowait(now=10)
    assert not admits(limiter, 10.5)
    assert admits(limiter, 11)


async def test_now_decides_instead_of_the_clock(mock_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(1, burst=1)
    assert trio.current_time() == 0  # a clock that stands still
    assert admits(limiter, 100.0)
    assert not admits(limiter, 100.5)
    assert admits(limiter, 101.0)


async def test_now_equal_to_the_previous_one_finds_no_new_token() -> None:
    limiter = RateLimiter(4, burst=2)
    assert admits(limiter, 3.0)
    assert admits(limiter, 3.0)
    assert not admits(limiter, 3.0)
    assert admits(limiter, 3.25)  # the next token, 1 / rate later


async def test_now_going_backwards_never_refills_the_bucket() -> None:
    limiter = RateLimiter(1, burst=1)
    assert admits(limiter, 10.0)
    # Earlier than the refill at 10: the bucket was full back then, but that is no token now.
    assert not admits(limiter, 5.0)
    assert not admits(limiter, 9.999)
    # And the refused early calls moved nothing: the next token is still due at 11.
    assert not admits(limiter, 10.999)
    assert admits(limiter, 11.0)


async def test_now_going_backwards_finds_fewer_tokens_not_more() -> None:
    limiter = RateLimiter(1, burst=3)
    assert admits(limiter, 10.0)  # 2 tokens left at 10
    # At 9 the same bucket would have held one token fewer: one is admitted, not two.
    assert admits(limiter, 9.0)
    assert not admits(limiter, 9.0)
    assert admits(limiter, 10.0)  # the last of the 3 taken since the refill at 10


async def test_a_stale_now_does_not_forget_a_key_that_has_not_refilled() -> None:
    limiter = KeyedRateLimiter[str](1, burst=1)
    limiter.acquire_nowait("a", now=10.0)
    limiter.acquire_nowait("b", now=10.0)
    limiter.acquire_nowait("c", now=10.5)  # stale for "a": its bucket is full at 11
    assert limiter.statistics().keys_forgotten == 0
    limiter.acquire_nowait("d", now=11.0)
    assert limiter.statistics().keys_forgotten == 2  # "a" and "b", full again at 11
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("c", now=10.9)


@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 8),
    # Sixteenths of a second: exact in a float, and far from rounding against 1 / rate.
    times=st.lists(st.integers(0, 16 * 20), min_size=1, max_size=40),
)
def test_in_any_order_of_now_a_window_admits_at_most_burst_plus_rate_times_its_length(
    rate: int, burst: int, times: list[int]
) -> None:
    limiter = RateLimiter(rate, burst=burst)
    admitted: list[int] = []
    for t in times:
        try:
            limiter.acquire_nowait(now=t / 16)
        except trio.WouldBlock:
            continue
        admitted.append(t)
    # The bound of a monotonic clock, over the times given, for every window of them.
    moments = sorted(set(admitted))
    for i, start in enumerate(moments):
        for end in moments[i:]:
            inside = sum(start <= t <= end for t in admitted)
            assert inside <= burst + math.floor(rate * (end - start) / 16)
