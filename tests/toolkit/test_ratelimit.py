from __future__ import annotations

import bisect
import math
import re

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_micro.toolkit import KeyedRateLimiter, RateLimiter

# -- helpers ---------------------------------------------------------------------------


async def acquire_and_record(
    limiter: RateLimiter, n: int, name: str, log: list[tuple[str, float]]
) -> None:
    await limiter.acquire(n)
    log.append((name, trio.current_time()))


# -- construction and argument checking -------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "error"),
    [
        ("10", TypeError),
        (None, TypeError),
        (True, TypeError),
        (0, ValueError),
        (-1.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
    ],
)
def test_bad_rate_is_rejected_with_the_value(rate: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=re.escape(repr(rate))):
        RateLimiter(rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("burst", "error"),
    [(0, ValueError), (-3, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_burst_is_rejected_with_the_value(burst: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=re.escape(repr(burst))):
        RateLimiter(10, burst)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "error"),
    [(0, ValueError), (-1, ValueError), (4, ValueError), (1.0, TypeError), ("1", TypeError)],
)
async def test_bad_n_is_rejected_before_any_checkpoint(n: object, error: type[Exception]) -> None:
    limiter = RateLimiter(10, burst=3)
    with trio.testing.assert_no_checkpoints(), pytest.raises(error, match=re.escape(repr(n))):
        await limiter.acquire(n)  # type: ignore[arg-type]
    with pytest.raises(error, match=re.escape(repr(n))):
        limiter.acquire_nowait(n)  # type: ignore[arg-type]


def test_n_greater_than_burst_raises_value_error_naming_the_burst() -> None:
    limiter = RateLimiter(10, burst=3)
    with pytest.raises(ValueError, match=r"n must be <= burst \(3\), got 4"):
        limiter.acquire_nowait(4)


def test_limiter_can_be_created_outside_trio() -> None:
    limiter = RateLimiter(5, burst=2)
    assert (limiter.rate, limiter.burst) == (5.0, 2)
    assert repr(limiter) == "RateLimiter(rate=5.0, burst=2)"


# -- basic behaviour --------------------------------------------------------------------


async def test_starts_full_with_burst_tokens() -> None:
    limiter = RateLimiter(1, burst=3)
    for _ in range(3):
        limiter.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()


async def test_acquire_nowait_raises_would_block_when_empty_and_admits_after_refill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(2, burst=1)
    limiter.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()
    await trio.sleep(0.5)
    limiter.acquire_nowait()


async def test_acquire_is_a_checkpoint_even_when_tokens_are_available() -> None:
    limiter = RateLimiter(1, burst=1)
    with trio.testing.assert_checkpoints():
        await limiter.acquire()


async def test_acquire_cancelled_before_it_starts_takes_nothing() -> None:
    limiter = RateLimiter(1, burst=2)
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire(2)
    assert scope.cancelled_caught
    stats = limiter.statistics()
    assert (stats.tokens_available, stats.tokens_admitted) == (2, 0)


async def test_acquire_waits_for_the_refill(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(4, burst=2)
    await limiter.acquire(2)
    start = trio.current_time()
    await limiter.acquire(2)
    assert trio.current_time() - start == 0.5


@pytest.mark.parametrize("burst", [1, 7, 100])
async def test_hammering_client_is_admitted_exactly_rate_times_t_plus_burst(
    autojump_clock: trio.testing.MockClock, burst: int
) -> None:
    rate, seconds = 1000.0, 60.0
    limiter = RateLimiter(rate, burst)
    start = trio.current_time()
    admitted_at: list[float] = []
    while True:
        await limiter.acquire()
        elapsed = trio.current_time() - start
        if elapsed > seconds:
            break
        admitted_at.append(elapsed)
    assert len(admitted_at) == math.floor(rate * seconds) + burst
    # Exact at every whole second too, where accumulated float increments would drift.
    for t in range(1, 61):
        assert bisect.bisect_right(admitted_at, t) == math.floor(rate * t) + burst, t


async def test_late_wakeup_within_burst_loses_no_tokens(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # A real clock wakes sleepers late; tokens accruing meanwhile must not overflow.
    limiter = RateLimiter(10, burst=3)
    limiter.acquire_nowait(3)
    log: list[tuple[str, float]] = []
    nursery.start_soon(acquire_and_record, limiter, 1, "waiter", log)  # due at t=0.1
    await trio.testing.wait_all_tasks_blocked()
    mock_clock.jump(0.25)  # the waiter wakes 0.15 s late
    await trio.testing.wait_all_tasks_blocked()
    assert log == [("waiter", 0.25)]
    limiter.acquire_nowait()  # the token due at t=0.2 is still there
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()  # the one due at t=0.3 is not yet


# -- fairness and cancellation ------------------------------------------------------------


async def test_small_requests_do_not_overtake_an_earlier_big_one(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(10, burst=5)
    limiter.acquire_nowait(5)
    log: list[tuple[str, float]] = []
    nursery.start_soon(acquire_and_record, limiter, 5, "big", log)
    await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        nursery.start_soon(acquire_and_record, limiter, 1, f"small{i}", log)
        await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1)
    assert [name for name, _ in log] == ["big", "small0", "small1", "small2"]
    assert [round(t, 9) for _, t in log] == [0.5, 0.6, 0.7, 0.8]


async def test_cancelled_head_waiter_gives_its_place_and_tokens_back(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=3)
    limiter.acquire_nowait(3)
    log: list[tuple[str, float]] = []
    big_scope = trio.CancelScope()

    async def big() -> None:
        with big_scope:
            await acquire_and_record(limiter, 3, "big", log)

    nursery.start_soon(big)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(acquire_and_record, limiter, 1, "small", log)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1)
    big_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    # The next waiter was re-evaluated at once: one token had accrued at t=1.
    assert log == [("small", 1.0)]
    await trio.sleep(2)
    # No token was lost: at t=3 a never-contended bucket would also hold 2.
    assert limiter.statistics().tokens_available == 2


async def test_cancelled_middle_waiter_leaves_the_others_in_order(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=1)
    limiter.acquire_nowait()
    log: list[tuple[str, float]] = []
    middle_scope = trio.CancelScope()

    async def middle() -> None:
        with middle_scope:
            await acquire_and_record(limiter, 1, "middle", log)

    nursery.start_soon(acquire_and_record, limiter, 1, "first", log)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(middle)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(acquire_and_record, limiter, 1, "last", log)
    await trio.testing.wait_all_tasks_blocked()
    middle_scope.cancel()
    await trio.sleep(3)
    assert log == [("first", 1.0), ("last", 2.0)]


async def test_acquire_nowait_does_not_overtake_waiters(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=2)
    limiter.acquire_nowait(2)
    log: list[tuple[str, float]] = []
    nursery.start_soon(acquire_and_record, limiter, 2, "waiter", log)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1.5)  # 1.5 tokens accrued: enough for acquire_nowait(1), but queued
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait(1)
    await trio.sleep(1)
    assert log == [("waiter", 2.0)]


async def test_acquire_does_not_overtake_waiters_either(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=2)
    limiter.acquire_nowait(2)
    log: list[tuple[str, float]] = []
    nursery.start_soon(acquire_and_record, limiter, 2, "first", log)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1.5)
    await acquire_and_record(limiter, 1, "second", log)
    assert log == [("first", 2.0), ("second", 3.0)]


async def test_statistics_report_tokens_waiters_and_admissions(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(2, burst=4)
    limiter.acquire_nowait(3)
    stats = limiter.statistics()
    assert (stats.rate, stats.burst, stats.tokens_available) == (2.0, 4, 1)
    assert (stats.tasks_waiting, stats.tokens_admitted) == (0, 3)
    nursery.start_soon(limiter.acquire, 4)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(limiter.acquire, 1)
    await trio.testing.wait_all_tasks_blocked()
    assert limiter.statistics().tasks_waiting == 2
    await trio.sleep(2.5)  # the 4 are admitted at t=1.5, the 1 at t=2
    stats = limiter.statistics()
    assert (stats.tasks_waiting, stats.tokens_admitted) == (0, 8)


# -- the bound, as a property ---------------------------------------------------------------

requests_strategy = st.lists(
    st.tuples(
        st.floats(0, 2, allow_nan=False),  # delay before the request
        st.integers(1, 6),  # tokens (capped at burst)
        st.sampled_from(["wait", "nowait", "give-up"]),
    ),
    max_size=25,
)


@given(
    rate=st.floats(0.2, 2000, allow_nan=False),
    burst=st.integers(1, 6),
    requests=requests_strategy,
)
def test_never_admits_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, requests: list[tuple[float, int, str]]
) -> None:
    admitted: list[tuple[float, int]] = []

    async def client(limiter: RateLimiter, n: int, how: str, start: float) -> None:
        if how == "nowait":
            try:
                limiter.acquire_nowait(n)
            except trio.WouldBlock:
                return
        else:
            with trio.move_on_after(0.3 if how == "give-up" else math.inf):
                await limiter.acquire(n)
                admitted.append((trio.current_time() - start, n))
            return
        admitted.append((trio.current_time() - start, n))

    async def main() -> None:
        limiter = RateLimiter(rate, burst)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for delay, n, how in requests:
                await trio.sleep(delay)
                nursery.start_soon(client, limiter, min(n, burst), how, start)
        assert limiter.statistics().tokens_admitted == sum(n for _, n in admitted)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    total = 0
    for elapsed, n in sorted(admitted):
        total += n
        assert total <= burst + rate * elapsed + 1e-6


# -- KeyedRateLimiter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_keys", "error"), [(0, ValueError), (-5, ValueError), ("3", TypeError), (True, TypeError)]
)
def test_keyed_bad_max_keys_is_rejected_with_the_value(
    max_keys: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=repr(max_keys)):
        KeyedRateLimiter(1, max_keys=max_keys)  # type: ignore[arg-type]


def test_keyed_bad_rate_and_burst_are_rejected() -> None:
    with pytest.raises(ValueError, match="nan"):
        KeyedRateLimiter(math.nan)
    with pytest.raises(ValueError, match="0"):
        KeyedRateLimiter(1, burst=0)


async def test_keyed_bad_n_does_not_create_a_key() -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=2)
    with pytest.raises(ValueError, match="3"):
        limiter.acquire_nowait("a", 3)
    with pytest.raises(TypeError, match="'x'"):
        await limiter.acquire("a", "x")  # type: ignore[arg-type]
    assert limiter.statistics().keys == 0


async def test_keyed_keys_have_independent_buckets() -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=1)
    limiter.acquire_nowait("alice")
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("alice")
    limiter.acquire_nowait("bob")
    assert limiter.statistics().tokens_admitted == 2


async def test_keyed_acquire_waits_only_for_its_own_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(2, burst=1)
    await limiter.acquire("alice")
    await limiter.acquire("bob")
    await limiter.acquire("alice")
    assert trio.current_time() == 0.5


async def test_keyed_memory_is_bounded_by_evicting_the_least_recently_used_key() -> None:
    limiter: KeyedRateLimiter[int] = KeyedRateLimiter(1, burst=1, max_keys=3)
    for key in range(10):
        limiter.acquire_nowait(key)
    stats = limiter.statistics()
    assert (stats.keys, stats.max_keys, stats.keys_evicted, stats.keys_forgotten) == (3, 3, 7, 0)


async def test_keyed_evicted_busy_key_restarts_with_a_full_bucket() -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=1, max_keys=1)
    limiter.acquire_nowait("alice")
    limiter.acquire_nowait("bob")  # evicts alice, whose bucket was empty
    limiter.acquire_nowait("alice")  # the documented trade-off: alice starts full again
    assert limiter.statistics().keys_evicted == 2


async def test_keyed_recently_used_key_survives_eviction() -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=1, max_keys=2)
    limiter.acquire_nowait("alice")
    limiter.acquire_nowait("bob")
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("alice")  # touches alice: bob is now least recently used
    limiter.acquire_nowait("carol")  # evicts bob
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("alice")


async def test_keyed_refilled_keys_are_forgotten_lazily(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(10, burst=2)
    limiter.acquire_nowait("alice", 2)
    limiter.acquire_nowait("bob")
    await trio.sleep(0.2)  # both buckets are full again
    limiter.acquire_nowait("carol")
    stats = limiter.statistics()
    assert (stats.keys, stats.keys_forgotten, stats.keys_evicted) == (1, 2, 0)


async def test_keyed_keys_still_refilling_are_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(10, burst=2)
    limiter.acquire_nowait("alice", 2)
    await trio.sleep(0.15)  # 1.5 of 2 tokens back: not full, must be remembered
    limiter.acquire_nowait("bob")
    assert limiter.statistics().keys == 2
    limiter.acquire_nowait("alice")
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("alice")


async def test_keyed_key_with_waiters_is_not_forgotten(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=1)
    limiter.acquire_nowait("alice")
    nursery.start_soon(limiter.acquire, "alice")
    await trio.testing.wait_all_tasks_blocked()
    assert limiter.statistics().tasks_waiting == 1
    limiter.acquire_nowait("bob")
    stats = limiter.statistics()
    assert (stats.keys, stats.keys_forgotten) == (2, 0)
