"""Retries of idempotent calls: attempts, deadline, budget; never for other methods."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_micro import rpc
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
    async with replicas(bad) as target, rpc.open_channel(target, outlier_ejection=None) as channel:
        stub = channel.stub(ReplicaService)
        calls = 200
        for _ in range(calls):
            with pytest.raises(rpc.RpcError):
                await stub.whoami(Empty())
        stats = channel.statistics()
        # The bucket starts with 10 tokens, then every call adds 0.2.
        assert stats.retries <= 10 + 0.2 * calls
        assert stats.retries >= 0.2 * calls
        assert stats.retries_throttled > 0
        assert bad.calls == calls + stats.retries


def test_retry_budget_over_many_calls() -> None:
    budget = RetryBudget(rpc.RetryPolicy(budget_ratio=0.2, budget_tokens=10))
    for _ in range(10_000):
        budget.deposit()
        while budget.withdraw():
            pass
    assert 2000 <= budget.retries <= 2000 + 10


def test_full_jitter_backoff_stays_under_its_bound() -> None:
    policy = rpc.RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5)
    for retry, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # jittered over the whole range


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_backoff": 0}, {"budget_ratio": -1}, {"max_backoff": "1"}],
)
def test_retry_policy_checks_its_values(kwargs: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        rpc.RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_retry_none_turns_retries_off(autojump_clock: trio.testing.MockClock) -> None:
    bad = ReplicaService("bad", failing=True)
    async with replicas(bad) as target, rpc.open_channel(target, retry=None) as channel:
        with pytest.raises(rpc.RpcError):
            await channel.stub(ReplicaService).whoami(Empty())
        assert bad.calls == 1
