"""Balancers and outlier ejection, over real servers on 127.0.0.1."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc

from .replicas import Empty, ReplicaService, address, count_errors, wait_until
from .test_channel import free_port


@asynccontextmanager
async def replicas(*services: ReplicaService) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(rpc.open_server([s], host="127.0.0.1", port=0))
            for s in services
        ]
        yield [address(server) for server in servers]


async def wait_ready(channel: rpc.Channel, count: int) -> None:
    with trio.fail_after(10):
        await wait_until(lambda: channel.statistics().ready >= count)


class Fake:
    def __init__(self, outstanding: int) -> None:
        self.endpoint = rpc.Endpoint("h", 1)
        self.outstanding = outstanding


def test_p2c_picks_the_less_loaded_of_two() -> None:
    balancer = rpc.PowerOfTwoChoices(seed=1)
    ready: Sequence[rpc.Subchannel] = [Fake(5), Fake(0)]
    assert {balancer.pick(ready) for _ in range(100)} == {1}


def test_p2c_never_picks_the_busiest_of_three() -> None:
    balancer = rpc.PowerOfTwoChoices(seed=2)
    ready: Sequence[rpc.Subchannel] = [Fake(1), Fake(9), Fake(2)]
    picks = [balancer.pick(ready) for _ in range(300)]
    assert 1 not in picks
    assert set(picks) == {0, 2}


def test_p2c_takes_turns_between_equally_loaded_connections() -> None:
    # Ties go to the connection whose turn it is, so equal loads are spread like round robin.
    balancer = rpc.PowerOfTwoChoices(seed=3)
    ready: Sequence[rpc.Subchannel] = [Fake(4), Fake(4), Fake(4)]
    picks = [balancer.pick(ready) for _ in range(9)]
    start = picks[0]
    assert picks == [(start + i) % 3 for i in range(9)]


def test_p2c_compares_the_turn_with_a_random_other() -> None:
    balancer = rpc.PowerOfTwoChoices(seed=4)
    # The idle connection is the last one: a draw that may return the turn's own index, or
    # that skips the turn's index the wrong way, draws the last index less often than 1/3.
    ready: Sequence[rpc.Subchannel] = [Fake(3), Fake(3), Fake(3), Fake(0)]
    picks = [balancer.pick(ready) for _ in range(4000)]
    # Index 3 wins whenever it is a candidate: on its turn (1 in 4) and when drawn as the
    # other of a busy turn (1 in 3 of the other 3 in 4): 1/4 + 3/4 * 1/3 = 1/2, 2000 picks.
    # A draw among all 4 would give 1/4 + 3/4 * 1/4 = 7/16 (1750 picks); a draw among the
    # first 3 only, 1/4 (1000): both far outside the bounds (the standard deviation is 32).
    assert 1900 < picks.count(3) < 2100
    # A busy connection wins only on its turn against another busy one: 1/4 * 2/3 = 1/6,
    # 667 picks.
    assert all(620 < picks.count(i) < 710 for i in (0, 1, 2))


def test_p2c_with_one_connection_picks_it() -> None:
    ready: Sequence[rpc.Subchannel] = [Fake(7)]
    assert rpc.PowerOfTwoChoices(seed=5).pick(ready) == 0


def test_round_robin_takes_the_connections_in_order_from_the_first() -> None:
    balancer = rpc.RoundRobin()
    ready: Sequence[rpc.Subchannel] = [Fake(0), Fake(0), Fake(0)]
    assert [balancer.pick(ready) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_p2c_with_the_same_seed_picks_the_same() -> None:
    ready: Sequence[rpc.Subchannel] = [Fake(1), Fake(2), Fake(1), Fake(0)]
    first, second = rpc.PowerOfTwoChoices(seed=9), rpc.PowerOfTwoChoices(seed=9)
    assert [first.pick(ready) for _ in range(50)] == [second.pick(ready) for _ in range(50)]


async def spread(target: list[str], balancer: rpc.Balancer, calls: int) -> None:
    async with rpc.open_channel(target, balancer=balancer) as channel:
        await wait_ready(channel, len(target))
        stub = channel.stub(ReplicaService)
        remaining = [calls]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await stub.whoami(Empty())

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(worker)


async def test_p2c_sends_fewer_calls_to_a_slow_replica_than_round_robin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The slow replica's delay is virtual time: under machine load the fast replica is slow
    # too in real time, which made the real-time version of this test flaky.
    fast, slow = ReplicaService("fast"), ReplicaService("slow", delay=0.02)
    async with replicas(fast, slow) as target:
        await spread(target, rpc.RoundRobin(), 200)
        round_robin = slow.calls
        slow.calls = fast.calls = 0
        await spread(target, rpc.PowerOfTwoChoices(seed=7), 200)
        p2c = slow.calls
    assert round_robin == 100  # its turn, every other call
    assert p2c < round_robin / 3


async def test_p2c_is_the_default() -> None:
    async with replicas(ReplicaService()) as target, rpc.open_channel(target) as channel:
        assert isinstance(channel._balancer, rpc.PowerOfTwoChoices)


# ---------------------------------------------------------------- outlier ejection


def test_ejection_time_grows_by_30s_per_ejection_up_to_300s() -> None:
    policy = rpc.OutlierEjection()
    assert [policy.ejection_time(n) for n in (1, 2, 3, 9, 10, 11, 50)] == [
        30,
        60,
        90,
        270,
        300,
        300,
        300,
    ]


@pytest.mark.parametrize(
    ("ejected", "endpoints", "allowed"),
    [(0, 1, False), (0, 2, True), (1, 2, False), (1, 3, False), (1, 4, True), (2, 4, False)],
)
def test_never_more_than_half_ejected(ejected: int, endpoints: int, allowed: bool) -> None:
    assert rpc.OutlierEjection().may_eject(ejected, endpoints) is allowed


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"consecutive_failures": 0}, ValueError, "consecutive_failures must be >= 1, got 0"),
        (
            {"base_ejection_time": math.inf},
            ValueError,
            "base_ejection_time must be a finite number > 0 (seconds), got inf",
        ),
        (
            {"max_ejection_time": math.inf},
            ValueError,
            "max_ejection_time must be a finite number > 0 (seconds), got inf",
        ),
        (
            {"max_ejected_fraction": 1.5},
            ValueError,
            "max_ejected_fraction must be in [0, 1], got 1.5",
        ),
        (
            {"max_ejected_fraction": True},
            TypeError,
            "max_ejected_fraction must be a float, got True",
        ),
    ],
)
def test_ejection_policy_checks_its_values(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        rpc.OutlierEjection(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 1},
        {"max_ejected_fraction": 0.0},
        {"max_ejected_fraction": 1.0},
    ],
)
def test_ejection_policy_accepts_the_bounds(kwargs: dict[str, object]) -> None:
    assert rpc.OutlierEjection(**kwargs)  # type: ignore[arg-type]


async def write_until_ejected(channel: rpc.Channel, bad: str, limit: int = 20) -> int:
    """Make non-idempotent calls until ``bad`` is ejected; return how many failed."""
    failed = 0
    for _ in range(limit):
        failed += await write_many(channel, 1)
        if bad in channel.statistics().ejected:
            return failed
    raise AssertionError(f"{bad} was not ejected after {limit} calls")


async def test_five_unavailable_in_a_row_eject_for_30s_then_60s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    good, bad = ReplicaService("good"), ReplicaService("bad", failing=True)
    async with (
        replicas(good, bad) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 2)
        bad_address = target[1]
        with capture_logs() as logs:
            assert await write_until_ejected(channel, bad_address) == 5
        assert bad.calls == 5
        ejected = [log for log in logs if log["event"] == "rpc.channel.endpoint_ejected"]
        assert ejected[0]["peer"] == bad_address
        assert ejected[0]["duration"] == 30
        # Ejected: every call goes to the good replica.
        stub = channel.stub(ReplicaService)
        for _ in range(20):
            assert (await stub.write(Empty())).name == "good"
        assert bad.calls == 5
        await trio.sleep(29)
        assert channel.statistics().ejected == (bad_address,)
        await trio.sleep(1.5)
        assert channel.statistics().ejected == ()
        # The second ejection lasts twice as long.
        assert await write_until_ejected(channel, bad_address) == 5
        await trio.sleep(59)
        assert channel.statistics().ejected == (bad_address,)
        await trio.sleep(1.5)
        assert channel.statistics().ejected == ()


async def test_ejection_time_stops_growing_at_300s(autojump_clock: trio.testing.MockClock) -> None:
    good, bad = ReplicaService("good"), ReplicaService("bad", failing=True)
    async with (
        replicas(good, bad) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 2)
        durations = []
        for _ in range(12):
            await write_until_ejected(channel, target[1])
            start = trio.current_time()
            await wait_until(lambda: not channel.statistics().ejected, poll=0.25)
            durations.append(trio.current_time() - start)
        expected = [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        assert durations == [pytest.approx(d, abs=0.5) for d in expected]


async def test_a_success_resets_the_failure_count(autojump_clock: trio.testing.MockClock) -> None:
    good = ReplicaService("good")
    flaky = ReplicaService("flaky", failing=True, succeed_every=5)  # 4 failures, 1 success
    async with (
        replicas(good, flaky) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 2)
        failed = await write_many(channel, 60)
        assert flaky.calls == 30
        assert failed == 24
        assert channel.statistics().ejected == ()


async def write_many(channel: rpc.Channel, calls: int) -> int:
    """Make non-idempotent calls; return how many failed (all with UNAVAILABLE)."""
    return await count_errors(channel.stub(ReplicaService).write, calls, rpc.Status.UNAVAILABLE)


async def test_never_more_than_half_of_the_endpoints_are_ejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = [ReplicaService("good")] + [
        ReplicaService(f"bad{i}", failing=True) for i in range(3)
    ]
    async with (
        replicas(*services) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 4)
        await write_many(channel, 60)
        ejected = channel.statistics().ejected
        assert len(ejected) == 2
        assert set(ejected) <= set(target[1:])
        kept = next(
            s for s, a in zip(services, target, strict=True) if a not in ejected and s.failing
        )
        assert kept.calls > 5  # failing too, but kept: half are out already


async def test_connection_failures_eject_an_endpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dead = f"127.0.0.1:{await free_port()}"
    async with (
        replicas(ReplicaService("good")) as target,
        rpc.open_channel([*target, dead]) as channel,
    ):
        with trio.fail_after(60):
            await wait_until(lambda: dead in channel.statistics().ejected, poll=0.5)
        # 5 attempts with the connection backoff between them: full jitter under the
        # bounds 1, 1.6, 2.56 and 4.096 s, at most 9.256 s in all.
        assert trio.current_time() < 9.3
        assert (await channel.stub(ReplicaService).whoami(Empty())).name == "good"


async def test_ejection_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    good, bad = ReplicaService("good"), ReplicaService("bad", failing=True)
    async with (
        replicas(good, bad) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=None) as channel,
    ):
        await wait_ready(channel, 2)
        assert await write_many(channel, 40) == 20
        assert bad.calls == 20
        assert channel.statistics().ejected == ()
