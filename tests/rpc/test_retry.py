"""Retries of idempotent calls: attempts, deadline, budget; never for other methods."""

from __future__ import annotations

import math
import random
import re

import pytest
import trio
import trio.testing

from trio_micro import Backoff, rpc
from trio_micro.rpc._retry import RetryBudget

from .replicas import Empty, ReplicaService
from .test_balancing import replicas, wait_ready


async def test_idempotent_call_is_retried_on_unavailable_up_to_5_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = ReplicaService("bad", failing=True)
    async with replicas(bad) as target, rpc.open_channel(target) as channel:
        with pytest.raises(rpc.RpcError) as info:
            await channel.stub(ReplicaService).whoami(Empty())
        assert info.value.code is rpc.Status.UNAVAILABLE
        assert bad.calls == 5
        assert channel.statistics().retries == 4


async def test_non_idempotent_call_is_never_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = ReplicaService("bad", failing=True)
    async with replicas(bad) as target, rpc.open_channel(target) as channel:
        with pytest.raises(rpc.RpcError):
            await channel.stub(ReplicaService).write(Empty())
        assert bad.calls == 1
        assert channel.statistics().retries == 0


async def test_other_errors_are_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    service = ReplicaService(failing=True, status=rpc.Status.NOT_FOUND)
    async with replicas(service) as target, rpc.open_channel(target) as channel:
        with pytest.raises(rpc.RpcError, match="NOT_FOUND"):
            await channel.stub(ReplicaService).whoami(Empty())
        assert service.calls == 1


async def test_retry_goes_to_another_replica(autojump_clock: trio.testing.MockClock) -> None:
    good, bad = ReplicaService("good"), ReplicaService("bad", failing=True)
    async with (
        replicas(good, bad) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=None) as channel,
    ):
        await wait_ready(channel, 2)
        stub = channel.stub(ReplicaService)
        names = [(await stub.whoami(Empty())).name for _ in range(20)]
        assert names == ["good"] * 20
        assert bad.calls == channel.statistics().retries > 0


async def test_retries_never_go_past_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    bad = ReplicaService("bad", failing=True)
    slow_backoff = rpc.RetryPolicy(initial_backoff=10, max_backoff=10)
    async with replicas(bad) as target, rpc.open_channel(target, retry=slow_backoff) as channel:
        stub = channel.stub(ReplicaService)
        for _ in range(20):
            start = trio.current_time()
            with trio.fail_after(1):  # the call's own UNAVAILABLE comes first, never TooSlow
                with pytest.raises(rpc.RpcError) as info:
                    await stub.whoami(Empty())
            assert info.value.code is rpc.Status.UNAVAILABLE
            assert trio.current_time() - start < 1
        # Backoff is drawn from [0, 10): most retries would have slept past the deadline.
        assert bad.calls < 20 * 5


async def test_retry_budget_caps_retries_at_20_percent_of_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = ReplicaService("bad", failing=True)
    # A window longer than the test (which sleeps through backoffs) and a floor of 10.
    policy = rpc.RetryPolicy(budget_ttl=1000, budget_min_per_second=0.01)
    async with (
        replicas(bad) as target,
        rpc.open_channel(target, retry=policy, outlier_ejection=None) as channel,
    ):
        stub = channel.stub(ReplicaService)
        calls = 200
        for _ in range(calls):
            with pytest.raises(rpc.RpcError):
                await stub.whoami(Empty())
        stats = channel.statistics()
        # Every call wanted 4 retries: the budget gave all it had, 0.2 per call + 10.
        assert stats.retries == 0.2 * calls + 10
        assert stats.retries_throttled > 0
        assert bad.calls == calls + stats.retries


async def test_default_budget_retries_a_burst_of_failures_on_a_busy_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The demo's SIGKILL: every call in flight on one replica fails at once. The old
    # default (a bucket of 10 tokens) refused all but 10 of these retries.
    good, flaky = ReplicaService("good"), ReplicaService("flaky")
    async with (
        replicas(good, flaky) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=None) as channel,
    ):
        await wait_ready(channel, 2)
        stub = channel.stub(ReplicaService)
        for _ in range(1000):
            await stub.whoami(Empty())
        flaky.failing = True
        names: list[str] = []

        async def call() -> None:
            names.append((await stub.whoami(Empty())).name)

        async with trio.open_nursery() as nursery:
            for _ in range(300):
                nursery.start_soon(call)
        stats = channel.statistics()
        assert names == ["good"] * 300
        assert stats.retries == flaky.calls - 500 > 100  # more than the floor alone allows
        assert stats.retries_throttled == 0


def _budget(**kwargs: float) -> RetryBudget:
    return RetryBudget(rpc.RetryPolicy(**kwargs))  # type: ignore[arg-type]


def _withdraw_all(budget: RetryBudget) -> int:
    """Take every retry the budget allows now; return how many."""
    allowed = 0
    while budget.withdraw():
        allowed += 1
    return allowed


async def test_budget_allows_one_retry_per_five_calls_in_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = _budget(budget_min_per_second=0)  # 0.2 per call over 10 s, no floor
    for _ in range(500):  # 500 calls spread over 9 s
        budget.deposit()
        autojump_clock.jump(0.018)
    assert _withdraw_all(budget) == 100
    assert (budget.retries, budget.throttled) == (100, 1)


async def test_budget_calls_and_retries_leave_the_window_after_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = _budget(budget_min_per_second=0)
    for _ in range(50):
        budget.deposit()
    assert _withdraw_all(budget) == 10
    autojump_clock.jump(9.5)
    assert not budget.withdraw()  # the calls and the retries still count
    autojump_clock.jump(0.5)  # 10 s after them: all gone
    assert not budget.withdraw()
    for _ in range(5):
        budget.deposit()
    assert _withdraw_all(budget) == 1  # the 10 old retries no longer count
    assert (budget.retries, budget.throttled) == (11, 4)


async def test_budget_retries_count_until_they_leave_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = _budget(budget_min_per_second=0, budget_ttl=10)
    for _ in range(50):
        budget.deposit()
    assert _withdraw_all(budget) == 10
    autojump_clock.jump(5)
    for _ in range(50):
        budget.deposit()
    assert _withdraw_all(budget) == 10  # 100 calls in the window, 10 retries already
    autojump_clock.jump(5)  # the first 50 calls and their 10 retries left
    assert _withdraw_all(budget) == 0  # 50 calls, 10 retries: nothing left


async def test_budget_floor_allows_retries_without_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = _budget(budget_min_per_second=2, budget_ttl=10)  # 20 retries per 10 s
    assert _withdraw_all(budget) == 20
    autojump_clock.jump(9.5)
    assert not budget.withdraw()
    autojump_clock.jump(0.5)
    assert _withdraw_all(budget) == 20
    assert (budget.retries, budget.throttled) == (40, 3)


async def test_budget_ratio_and_floor_add_up(autojump_clock: trio.testing.MockClock) -> None:
    budget = _budget()  # the defaults: 0.2 per call in the last 10 s + 10/s * 10 s
    for _ in range(1000):
        budget.deposit()
    assert _withdraw_all(budget) == 0.2 * 1000 + 100


async def test_budget_ratio_alone_rounds_exactly(autojump_clock: trio.testing.MockClock) -> None:
    budget = _budget(budget_ratio=0.29, budget_min_per_second=0)
    for _ in range(100):
        budget.deposit()
    assert _withdraw_all(budget) == 29  # 0.29 * 100 is 28.999999999999996 in floats


async def test_budget_keeps_a_failing_cluster_to_20_percent_more_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A minute of every call failing, at a rate that changes every few seconds, each
    # failure retried while the budget allows: retries never pass 20 % of calls.
    budget = _budget(budget_min_per_second=0)
    rng = random.Random(4)
    calls = 0
    for _ in range(60_000):  # 1 ms steps
        for _ in range(rng.choice((0, 0, 1, 3))):
            budget.deposit()
            calls += 1
            budget.withdraw()
        autojump_clock.jump(0.001)
        assert budget.retries <= 0.2 * calls
    assert budget.retries >= 0.199 * calls  # and not much less


def test_budget_takes_a_clock() -> None:
    now = [0.0]
    budget = RetryBudget(rpc.RetryPolicy(budget_min_per_second=0.1), clock=lambda: now[0])
    assert budget.withdraw()  # the floor: 0.1/s over 10 s
    assert not budget.withdraw()
    now[0] = 10.0
    assert budget.withdraw()


def test_budget_without_a_clock_needs_a_trio_run() -> None:
    with pytest.raises(RuntimeError):
        RetryBudget(rpc.RetryPolicy())


def test_full_jitter_backoff_stays_under_its_bound() -> None:
    policy = rpc.RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5)
    for retry, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # jittered over the whole range


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"initial_backoff": 0}, ValueError),
        ({"max_backoff": "1"}, TypeError),
        ({"initial_backoff": math.inf}, ValueError),
        ({"max_backoff": math.inf}, ValueError),
        ({"multiplier": 0}, ValueError),
        ({"budget_ratio": -1}, ValueError),
        ({"budget_ratio": math.nan}, ValueError),
        ({"budget_ratio": True}, TypeError),
        ({"budget_ttl": 0}, ValueError),
        ({"budget_ttl": -10}, ValueError),
        ({"budget_ttl": math.inf}, ValueError),
        ({"budget_ttl": "10"}, TypeError),
        ({"budget_min_per_second": -1}, ValueError),
        ({"budget_min_per_second": math.inf}, ValueError),
        ({"budget_min_per_second": False}, TypeError),
        ({"budget_min_per_second": None}, TypeError),
    ],
)
def test_retry_policy_checks_its_values(kwargs: dict[str, object], error: type[Exception]) -> None:
    [(name, value)] = kwargs.items()
    with pytest.raises(error, match=f"{name} must be .*, got {re.escape(repr(value))}"):
        rpc.RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_policy_accepts_a_single_attempt() -> None:
    assert rpc.RetryPolicy(max_attempts=1).max_attempts == 1


def test_backoff_is_the_toolkit_backoff_of_the_policy_fields() -> None:
    # Not the Backoff defaults (0.1, 2, 5), and the same seeded generator: the same delays.
    policy = rpc.RetryPolicy(initial_backoff=0.5, multiplier=3, max_backoff=100)
    assert [policy.backoff(n, random.Random(n)) for n in range(1, 6)] == [
        Backoff(initial=0.5, multiplier=3, maximum=100, rng=random.Random(n)).delay(n)
        for n in range(1, 6)
    ]


async def test_budget_counts_leave_the_window_once_after_skipped_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two retries per call, no floor, one slot per second: slots 1 and 2 are skipped, and
    # when slot 11 starts only slot 3's calls are left in the window.
    budget = _budget(budget_ratio=2, budget_min_per_second=0, budget_ttl=10)
    for _ in range(10):
        budget.deposit()
    autojump_clock.jump(3)
    for _ in range(10):
        budget.deposit()
    autojump_clock.jump(8.5)
    assert _withdraw_all(budget) == 20


async def test_budget_after_an_idle_window_counts_from_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = _budget(budget_ratio=1, budget_min_per_second=0, budget_ttl=10)
    budget.deposit()
    autojump_clock.jump(25)  # everything left the window
    for _ in range(10):
        budget.deposit()
    autojump_clock.jump(1)
    assert _withdraw_all(budget) == 10


def test_retry_policy_accepts_no_ratio_or_no_floor() -> None:
    assert rpc.RetryPolicy(budget_ratio=0).budget_ratio == 0
    assert rpc.RetryPolicy(budget_min_per_second=0).budget_min_per_second == 0


async def test_retry_none_turns_retries_off(autojump_clock: trio.testing.MockClock) -> None:
    bad = ReplicaService("bad", failing=True)
    async with replicas(bad) as target, rpc.open_channel(target, retry=None) as channel:
        with pytest.raises(rpc.RpcError):
            await channel.stub(ReplicaService).whoami(Empty())
        assert bad.calls == 1
