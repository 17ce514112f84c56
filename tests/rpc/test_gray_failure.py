"""Gray failure (issue #15, defect 6): a replica that stops answering is cut off and ejected.

A replica that hangs (SIGSTOPped, deadlocked) answers nothing, so ``UNAVAILABLE`` never
comes: failure accrual counts deadlines and slow calls too, idempotent calls are cut at the
slow-call threshold and retried elsewhere, and client keepalive is on by default. Real
servers on 127.0.0.1 under an autojump clock: loopback calls take no mock time, so the
slow-call threshold is its floor, ``slow_call_min`` (0.1 s).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import Connection, Role

from . import services
from .replicas import Empty, ReplicaService
from .services import TestService
from .test_balancing import replicas, wait_ready

DEADLINE = 1.0


async def warm_up(channel: rpc.Channel, calls: int = 48) -> None:
    stub = channel.stub(ReplicaService)
    for _ in range(calls):
        await stub.whoami(Empty())
        await stub.write(Empty())


@asynccontextmanager
async def one_of_three_hangs(hung: int) -> AsyncIterator[tuple[list[str], rpc.Channel]]:
    """Three replicas behind a warmed-up channel; replica ``hung`` then stops answering."""
    services = [ReplicaService(f"r{i}") for i in range(3)]
    async with replicas(*services) as target, rpc.open_channel(target) as channel:
        await wait_ready(channel, 3)
        await warm_up(channel)
        services[hung].delay = math.inf  # hangs from now on: no answer, no error
        yield target, channel


async def test_no_idempotent_call_fails_when_one_of_three_replicas_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with one_of_three_hangs(1) as (target, channel):
        stub = channel.stub(ReplicaService)
        failures: list[BaseException] = []
        answers: list[str] = []

        async def caller() -> None:
            for _ in range(30):
                try:
                    with trio.fail_after(DEADLINE):
                        answers.append((await stub.whoami(Empty())).name)
                except (trio.TooSlowError, rpc.RpcError) as exc:
                    failures.append(exc)

        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(caller)
        assert failures == []
        assert len(answers) == 300
        assert "r1" not in answers
        ejected = [entry for entry in logs if entry["event"] == "rpc.channel.endpoint_ejected"]
        assert [entry["peer"] for entry in ejected] == [target[1]]


async def test_a_hung_replica_is_ejected_within_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with one_of_three_hangs(2) as (target, channel):
        stub = channel.stub(ReplicaService)
        start = trio.current_time()
        while target[2] not in channel.statistics().ejected:
            with trio.fail_after(DEADLINE):
                await stub.whoami(Empty())
        assert trio.current_time() - start < 1.0


async def test_deadline_exceeded_results_count_towards_ejection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    good = ReplicaService("good")
    bad = ReplicaService("bad", failing=True, status=rpc.Status.DEADLINE_EXCEEDED)
    async with (
        replicas(good, bad) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 2)
        stub = channel.stub(ReplicaService)
        codes = []
        for _ in range(20):
            try:
                await stub.write(Empty())
            except rpc.RpcError as exc:
                codes.append(exc.code)
        assert channel.statistics().ejected == (target[1],)
        assert codes == [rpc.Status.DEADLINE_EXCEEDED] * 5
        assert bad.calls == 5


async def test_slow_answers_count_towards_ejection_without_failing_the_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Not idempotent, so never cut: the slow answers arrive, but count as failures.
    fast, slow = ReplicaService("fast"), ReplicaService("slow")
    async with (
        replicas(fast, slow) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 2)
        await warm_up(channel)
        slow.delay = 0.5  # 0.5 s against a median of ~0: slow
        stub = channel.stub(ReplicaService)
        names = [(await stub.write(Empty())).name for _ in range(10)]
        assert channel.statistics().ejected == (target[1],)
        assert names.count("slow") == 5


async def test_a_deadline_passed_on_a_hung_replica_counts_towards_ejection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Ejection on, slowness off: only the deadlines the caller saw pass count.
    good, hung = ReplicaService("good"), ReplicaService("hung", delay=math.inf)
    policy = rpc.OutlierEjection(slow_call_factor=math.inf)
    async with (
        replicas(good, hung) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=policy) as channel,
    ):
        await wait_ready(channel, 2)
        stub = channel.stub(ReplicaService)
        timeouts = 0
        for _ in range(10):
            with trio.move_on_after(DEADLINE) as scope:
                await stub.write(Empty())
            timeouts += scope.cancelled_caught
        assert timeouts == 5
        assert channel.statistics().ejected == (target[1],)


def test_latency_tracker_has_no_threshold_before_16_calls() -> None:
    tracker = rpc.LatencyTracker(10.0, 0.1)
    for _ in range(15):
        tracker.add(1.0)
    assert tracker.threshold == math.inf
    tracker.add(1.0)
    assert tracker.threshold == 10.0


def test_latency_tracker_threshold_is_factor_times_the_median() -> None:
    tracker = rpc.LatencyTracker(10.0, 0.001)
    for i in range(64):
        tracker.add(0.01 if i % 4 else 5.0)  # a quarter of outliers move no median
    assert tracker.threshold == pytest.approx(0.1)


def test_latency_tracker_threshold_never_goes_below_the_minimum() -> None:
    tracker = rpc.LatencyTracker(10.0, 0.1)
    for _ in range(32):
        tracker.add(0.0001)
    assert tracker.threshold == 0.1


def test_latency_tracker_forgets_all_but_the_last_64_calls() -> None:
    tracker = rpc.LatencyTracker(2.0, 0.001)
    for _ in range(64):
        tracker.add(1.0)
    for _ in range(64):
        tracker.add(0.01)
    assert tracker.threshold == pytest.approx(0.02)


def test_latency_tracker_threshold_is_the_upper_median() -> None:
    tracker = rpc.LatencyTracker(10.0, 0.001)
    for i in range(16):
        tracker.add(i + 1.0)
    assert tracker.threshold == 90.0  # the 9th smallest of 16


def test_latency_tracker_recomputes_only_every_16_calls() -> None:
    tracker = rpc.LatencyTracker(10.0, 0.001)
    for i in range(16):
        tracker.add(i + 1.0)
    for _ in range(15):
        tracker.add(0.001)  # would move the median at once
        assert tracker.threshold == 90.0


def test_latency_tracker_forgets_the_oldest_call_first() -> None:
    # 64 calls: the 1st tiny, the 17th huge, then 32 of 1 s and 15 of 3 s; 16 more of 3 s
    # push out the 1st to 16th. Left: the huge one, 32 of 1 s, 31 of 3 s: the median is
    # 3 s. Keeping the 1st instead of the 17th would make it 1 s; a window of 65 too.
    tracker = rpc.LatencyTracker(2.0, 0.001)
    for latency in [0.5] + [1.0] * 15 + [1000.0] + [1.0] * 32 + [3.0] * 15 + [3.0] * 16:
        tracker.add(latency)
    assert tracker.threshold == 6.0


def test_slow_call_factor_may_be_one_or_infinite() -> None:
    assert rpc.OutlierEjection(slow_call_factor=1).slow_call_factor == 1
    assert rpc.OutlierEjection(slow_call_factor=math.inf).slow_call_factor == math.inf


def test_slow_call_factor_is_named_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        rpc.OutlierEjection(slow_call_factor=0)
    assert str(info.value) == "slow_call_factor must be a number > 0, got 0"


def test_slow_call_min_must_be_finite() -> None:
    with pytest.raises(ValueError) as info:
        rpc.OutlierEjection(slow_call_min=math.inf)
    assert str(info.value) == "slow_call_min must be a finite number > 0 (seconds), got inf"


@pytest.mark.parametrize("factor", [0.5, 0, -1, float("nan")])
def test_slow_call_factor_below_one_is_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="slow_call_factor"):
        rpc.OutlierEjection(slow_call_factor=factor)


def test_slow_call_min_must_be_positive_seconds() -> None:
    with pytest.raises(ValueError, match="slow_call_min"):
        rpc.OutlierEjection(slow_call_min=0)


async def test_client_keepalive_is_on_by_default(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async def silent_server(stream: trio.SocketStream) -> None:
        conn = Connection(Role.SERVER)
        async with stream:
            await stream.send_all(conn.initiate())
            while data := await stream.receive_some(65536):
                conn.receive_data(data)  # PINGs included: never answered

    listeners: Sequence[trio.SocketListener] = await nursery.start(trio.serve_tcp, silent_server, 0)
    port = listeners[0].socket.getsockname()[1]
    async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
        start = trio.current_time()
        with pytest.raises(rpc.RpcError) as info:
            await channel.stub(TestService).sleep(services.Empty())
        assert "keepalive" in info.value.message
        # 30 s without receiving anything, then 20 s for the PONG.
        assert trio.current_time() - start == pytest.approx(50, abs=0.5)
    nursery.cancel_scope.cancel()
