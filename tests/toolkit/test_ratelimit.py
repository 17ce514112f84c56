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
from trio_micro.toolkit._ratelimit import pacer

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
    message = rf"^rate must be .* \(tokens per second\), got {re.escape(repr(rate))}$"
    with pytest.raises(error, match=message):
        RateLimiter(rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("burst", "error"),
    [(0, ValueError), (-3, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_burst_is_rejected_with_the_value(burst: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=rf"^burst must be .*, got {re.escape(repr(burst))}$"):
        RateLimiter(10, burst)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "error"),
    [(0, ValueError), (-1, ValueError), (4, ValueError), (1.0, TypeError), ("1", TypeError)],
)
async def test_bad_n_is_rejected_before_any_checkpoint(n: object, error: type[Exception]) -> None:
    limiter = RateLimiter(10, burst=3)
    message = rf"^n must be .*, got {re.escape(repr(n))}$"
    with trio.testing.assert_no_checkpoints(), pytest.raises(error, match=message):
        await limiter.acquire(n)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        limiter.acquire_nowait(n)  # type: ignore[arg-type]


def test_n_greater_than_burst_raises_value_error_naming_the_burst() -> None:
    limiter = RateLimiter(10, burst=3)
    with pytest.raises(ValueError, match=r"n must be <= burst \(3\), got 4"):
        limiter.acquire_nowait(4)


def test_burst_defaults_to_one() -> None:
    assert RateLimiter(5).burst == 1


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


async def test_acquire_nowait_admits_a_token_at_the_instant_it_accrues(
    mock_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(4, burst=2)
    limiter.acquire_nowait(2)
    mock_clock.jump(0.25)  # exactly one token back, the bucket not yet full
    limiter.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()


def move_clock_to(clock: trio.testing.MockClock, t: float) -> None:
    """Set the mock clock to exactly ``t`` (one jump can round: ``a + (t - a) != t``)."""
    if trio.current_time() < t / 2:
        clock.jump(0.75 * t - trio.current_time())
    # Now t/2 <= current <= t, so t - current is exact (Sterbenz) and so is the sum.
    clock.jump(t - trio.current_time())
    assert trio.current_time() == t


async def test_a_bucket_drained_the_instant_it_is_full_refills_from_that_instant(
    mock_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(7, burst=5)
    limiter.acquire_nowait(5)
    move_clock_to(mock_clock, 5 / 7)  # full again, exactly
    limiter.acquire_nowait()
    # One float step before 5/7 + 1/7, when it is full again: measured from t=0 instead
    # (6/7, which rounds down to this very instant) the bucket would look full already.
    move_clock_to(mock_clock, 0.8571428571428571)
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait(5)


@pytest.mark.parametrize(
    ("rate", "burst", "drained_at", "taken", "now", "available"),
    [
        # floor((now - anchor) * rate) is one token short of the exact predicate...
        (10, 3, 0.4, 2, 0.5, 2),
        (10, 2, 0.4, 2, 0.5, 1),
        # ... or one token over it (0.1 is a little more than a tenth).
        (0.1, 3, 0.0, 3, 29.999999999999996, 2),
        (0.1, 4, 0.0, 3, 29.999999999999996, 3),
        (0.2, 1, 0.24284200151794577, 1, 5.242842001517945, 0),
    ],
)
async def test_tokens_available_is_what_acquire_nowait_would_admit(
    mock_clock: trio.testing.MockClock,
    rate: float,
    burst: int,
    drained_at: float,
    taken: int,
    now: float,
    available: int,
) -> None:
    limiter = RateLimiter(rate, burst)
    move_clock_to(mock_clock, drained_at)
    limiter.acquire_nowait(taken)
    move_clock_to(mock_clock, now)
    assert limiter.statistics().tokens_available == available
    for _ in range(available):
        limiter.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait()


async def test_tokens_available_is_zero_while_the_head_waiter_holds_a_reservation(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=1)
    limiter.acquire_nowait()
    nursery.start_soon(limiter.acquire, 1)  # reserves the token due at t=1
    await trio.testing.wait_all_tasks_blocked()
    assert limiter.statistics().tokens_available == 0


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


async def test_head_waiter_giving_up_as_the_bucket_fills_leaves_the_next_a_full_bucket(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=2)
    limiter.acquire_nowait(2)
    log: list[tuple[str, float]] = []

    async def impatient() -> None:
        # Its deadline is also the instant its tokens are due, and the bucket's refill.
        with trio.move_on_at(2):
            await acquire_and_record(limiter, 2, "impatient", log)

    nursery.start_soon(impatient)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(acquire_and_record, limiter, 1, "next", log)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(2.5)
    assert log == [("next", 2.0)]
    stats = limiter.statistics()  # at t=2.5: the one token left, plus half a token
    assert (stats.tokens_available, stats.tokens_admitted) == (1, 3)


async def test_woken_waiter_whose_tokens_are_ready_is_admitted_without_another_wait(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=2)
    limiter.acquire_nowait(2)
    log: list[tuple[str, float]] = []
    next_scope = trio.CancelScope()

    async def impatient() -> None:
        with trio.move_on_at(2):
            await limiter.acquire(2)
        # Its give-up has just handed the turn (and a full bucket) to the next waiter.
        next_scope.cancel()

    async def next_waiter() -> None:
        with next_scope:
            await acquire_and_record(limiter, 1, "next", log)

    nursery.start_soon(impatient)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(next_waiter)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(2.5)
    assert log == [("next", 2.0)]
    assert limiter.statistics().tokens_admitted == 3


async def test_waiter_that_gives_up_and_asks_again_goes_behind_the_others(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    limiter = RateLimiter(1, burst=3)
    limiter.acquire_nowait(3)
    log: list[tuple[str, float]] = []

    async def fickle() -> None:
        with trio.move_on_after(1):
            await limiter.acquire(2)  # due at t=2
        await acquire_and_record(limiter, 1, "fickle", log)  # at once, still at t=1

    nursery.start_soon(fickle)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(acquire_and_record, limiter, 1, "patient", log)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(3)
    # The 2 tokens came back whole: one is due at t=1 and is the patient one's.
    assert log == [("patient", 1.0), ("fickle", 2.0)]


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


# -- pacer: what run_all / amap await for max_per_second ------------------------------------


def test_pacer_of_none_is_none() -> None:
    assert pacer(None) is None


@pytest.mark.parametrize(("rate", "error"), [("4", TypeError), (0, ValueError)])
def test_pacer_rejects_a_bad_rate_naming_max_per_second(
    rate: object, error: type[Exception]
) -> None:
    message = rf"^max_per_second must be .* \(jobs per second\), got {re.escape(repr(rate))}$"
    with pytest.raises(error, match=message):
        pacer(rate)


async def test_pacer_admits_one_job_per_interval_with_no_burst(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pace = pacer(4)
    assert pace is not None
    starts = []
    for _ in range(3):
        await pace()
        starts.append(trio.current_time())
    assert starts == [0.0, 0.25, 0.5]


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
    with pytest.raises(error, match=rf"^max_keys must be .*, got {re.escape(repr(max_keys))}$"):
        KeyedRateLimiter(1, max_keys=max_keys)  # type: ignore[arg-type]


def test_keyed_bad_rate_and_burst_are_rejected() -> None:
    with pytest.raises(ValueError, match="nan"):
        KeyedRateLimiter(math.nan)
    with pytest.raises(ValueError, match=r"^burst must be >= 1, got 0$"):
        KeyedRateLimiter(1, burst=0)


async def test_keyed_statistics_report_the_rate_and_the_default_bounds() -> None:
    stats = KeyedRateLimiter(2.5).statistics()
    assert (stats.rate, stats.burst, stats.max_keys) == (2.5, 1, 10_000)


@pytest.mark.parametrize(
    ("n", "error"), [(0, ValueError), (3, ValueError), (1.0, TypeError), ("1", TypeError)]
)
async def test_keyed_bad_n_is_rejected_by_acquire_nowait(n: object, error: type[Exception]) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=2)
    with pytest.raises(error, match=rf"^n must be .*, got {re.escape(repr(n))}$"):
        limiter.acquire_nowait("a", n)  # type: ignore[arg-type]


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


async def test_keyed_acquire_counts_the_tokens_it_admits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=3)
    await limiter.acquire("alice", 2)
    await limiter.acquire("alice", 3)
    assert limiter.statistics().tokens_admitted == 5


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


async def test_keyed_forgetting_drops_the_oldest_key_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(1, burst=1)
    limiter.acquire_nowait("alice")
    await trio.sleep(0.5)
    limiter.acquire_nowait("bob")
    await trio.sleep(0.5)  # alice, the oldest, is full again; bob is not
    limiter.acquire_nowait("carol")  # forgets alice, keeps bob
    stats = limiter.statistics()
    assert (stats.keys, stats.keys_forgotten) == (2, 1)
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait("bob")


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


class ClockThatJumpsOnce(trio.abc.Clock):
    """A frozen clock that moves ``jump`` seconds right after its next read, once armed."""

    def __init__(self) -> None:
        self._now = 0.0
        self.jump = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        now = self._now
        self._now += self.jump
        self.jump = 0.0
        return now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called when every task is blocked: jump to the next deadline, like autojump.
        if deadline == math.inf:
            return 86400.0
        self._now = max(self._now, deadline)
        return 0.0


def test_acquire_whose_tokens_accrue_just_after_the_fast_path_still_checkpoints() -> None:
    # The fast path reads the clock one token short; the reservation, one read later,
    # finds the token there, so the call never sleeps: its only schedule point is the last.
    clock = ClockThatJumpsOnce()

    async def main() -> None:
        limiter = RateLimiter(1, burst=1)
        await limiter.acquire()
        clock.jump = 1.0
        with trio.testing.assert_checkpoints():
            await limiter.acquire()
        assert (trio.current_time(), limiter.statistics().tokens_admitted) == (1.0, 2)

    trio.run(main, clock=clock)
