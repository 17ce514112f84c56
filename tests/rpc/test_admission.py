"""Admission control: max_inflight and the rate-limit interceptor refuse at once, clients
retry the refused calls elsewhere, and hostile keys keep memory bounded."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.rpc._admission import _LOGS_PER_SECOND, RefusalLog
from trio_micro.rpc._context import ServerCall

from .conftest import address
from .replicas import Empty as ReplicaEmpty
from .replicas import Name, ReplicaService
from .replicas import address as replica_address
from .services import Empty, TestService


async def test_a_call_beyond_max_inflight_is_refused_at_once_with_a_hint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = TestService()
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0, max_inflight=1) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        stub = channel.stub(TestService)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stub.hold, Empty())
            await service.started.wait()
            start = trio.current_time()
            with capture_logs() as logs, pytest.raises(rpc.RpcError) as info:
                await stub.empty_call(Empty())
            assert trio.current_time() == start  # no waiting at all
            service.release.set()
        assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
        assert info.value.details == {"refused": "max_inflight"}
        assert server.statistics().refused_calls == 1
        [refused] = [e for e in logs if e["event"] == "rpc.call.refused"]
        assert refused["reason"] == "max_inflight"
        assert refused["key"] == "127.0.0.1"
        # Capacity came back with the call that ended.
        await stub.empty_call(Empty())


async def test_health_calls_are_admitted_at_max_inflight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = TestService()
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0, max_inflight=1) as server,
        rpc.open_channel(address(server), retry=None) as channel,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(channel.stub(TestService).hold, Empty())
        await service.started.wait()
        answer = await channel.stub(rpc.HealthService).check(rpc.HealthCheckRequest())
        assert answer.status is rpc.HealthStatus.SERVING
        service.release.set()


async def test_health_watches_do_not_count_against_max_inflight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        rpc.open_server([TestService()], host="127.0.0.1", port=0, max_inflight=1) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        stream = channel.stub(rpc.HealthService).watch(rpc.HealthCheckRequest())
        async with stream:
            await stream.__anext__()
            assert server.statistics().health_watches == 1
            await channel.stub(TestService).empty_call(Empty())


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10"])
async def test_max_inflight_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_inflight"):
        await rpc.serve([TestService()], port=0, max_inflight=bad)  # type: ignore[arg-type]


class Busy(ReplicaService, name="replica"):
    """A replica whose every call is refused as if at max_inflight."""

    __test__ = False

    def __init__(self, name: str) -> None:
        super().__init__(name)

    async def _answer(self) -> Name:
        self.calls += 1
        raise rpc.RpcError(rpc.Status.RESOURCE_EXHAUSTED, "busy", {"refused": "max_inflight"})


async def test_a_refused_call_is_retried_on_another_endpoint_even_if_not_idempotent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    busy, good = Busy("busy"), ReplicaService("good")
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(rpc.open_server([s], host="127.0.0.1", port=0))
            for s in (busy, good)
        ]
        channel = await stack.enter_async_context(
            rpc.open_channel([replica_address(s) for s in servers])
        )
        stub = channel.stub(ReplicaService)
        for _ in range(20):
            assert (await stub.write(ReplicaEmpty())).name == "good"
        assert busy.calls > 0  # some calls went there first and were retried
        assert channel.statistics().retries == busy.calls


async def test_a_refused_call_is_not_retried_without_a_retry_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    busy = Busy("busy")
    async with (
        rpc.open_server([busy], host="127.0.0.1", port=0) as server,
        rpc.open_channel(replica_address(server), retry=None) as channel,
    ):
        with pytest.raises(rpc.RpcError, match="RESOURCE_EXHAUSTED"):
            await channel.stub(ReplicaService).whoami(ReplicaEmpty())
        assert busy.calls == 1


async def test_a_refused_call_on_the_only_endpoint_backs_off_until_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    busy = Busy("busy")
    async with (
        rpc.open_server([busy], host="127.0.0.1", port=0) as server,
        rpc.open_channel(replica_address(server)) as channel,
    ):
        start = trio.current_time()
        with pytest.raises(rpc.RpcError, match="RESOURCE_EXHAUSTED"):
            await channel.stub(ReplicaService).write(ReplicaEmpty())
        assert busy.calls == rpc.RetryPolicy().max_attempts
        assert trio.current_time() > start  # it waited between attempts


# ---------------------------------------------------------------------- rate limit


async def test_rate_limit_refuses_a_caller_beyond_its_burst_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = rpc.RateLimitInterceptor(10, burst=2)
    async with (
        rpc.open_server(
            [TestService()], host="127.0.0.1", port=0, interceptors=[limiter]
        ) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        stub = channel.stub(TestService)
        await stub.empty_call(Empty())
        await stub.empty_call(Empty())
        with capture_logs() as logs, pytest.raises(rpc.RpcError) as info:
            await stub.empty_call(Empty())
        assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
        assert info.value.details == {"refused": "rate_limit", "retry-after-ms": "100"}
        await trio.sleep(0.1)
        await stub.empty_call(Empty())  # a token came back
    assert limiter.statistics().refused == 1
    assert limiter.statistics().admitted == 3
    [refused] = [e for e in logs if e["event"] == "rpc.call.refused"]
    assert refused["key"] == "127.0.0.1"


async def test_rate_limit_by_metadata_key_limits_each_key_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = rpc.RateLimitInterceptor(1, burst=1, key="metadata:x-api-key")
    async with (
        rpc.open_server(
            [TestService()], host="127.0.0.1", port=0, interceptors=[limiter]
        ) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        a = channel.stub(TestService, metadata={"x-api-key": "a"})
        b = channel.stub(TestService, metadata={"x-api-key": "b"})
        await a.empty_call(Empty())
        await b.empty_call(Empty())
        with pytest.raises(rpc.RpcError, match="rate limit"):
            await a.empty_call(Empty())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {}),
        ((1,), {"burst": 0}),
        ((1,), {"key": "header:x"}),
        ((1,), {"key": "metadata:"}),
        ((1,), {"key": 5}),
        (("1",), {}),
    ],
)
def test_rate_limit_interceptor_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises((TypeError, ValueError)):
        rpc.RateLimitInterceptor(*args, **kwargs)  # type: ignore[arg-type]


def _call(key: str, peer: str = "10.0.0.1:5", received: float | None = None) -> ServerCall:
    return ServerCall(
        "svc",
        "m",
        "unary",
        peer,
        {"k": key},
        float("inf"),
        1,
        trio.CancelScope(),
        "",
        None,
        received,
    )


class _Stamps:
    """An interceptor noting each call's ``received`` and the clock when it runs."""

    def __init__(self) -> None:
        self.seen: list[tuple[float | None, float]] = []

    def intercept(
        self, call: ServerCall, proceed: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        self.seen.append((call.received, trio.current_time()))
        return proceed()


async def test_the_server_stamps_each_call_with_the_time_it_read_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stamps = _Stamps()
    async with (
        rpc.open_server([TestService()], host="127.0.0.1", port=0, interceptors=[stamps]) as server,
        rpc.open_channel(address(server), retry=None) as channel,
    ):
        await trio.sleep(5)
        sent = trio.current_time()
        await channel.stub(TestService).empty_call(Empty())
    [(received, intercepted)] = stamps.seen
    assert received is not None
    assert sent <= received <= intercepted


async def test_rate_limit_takes_the_time_the_call_was_read_not_the_clock(
    mock_clock: trio.testing.MockClock,
) -> None:
    limiter = rpc.RateLimitInterceptor(1, burst=1)
    assert trio.current_time() == 0  # a clock that stands still
    await limiter.intercept(_call("", received=100.0), _proceed)
    with pytest.raises(rpc.RpcError, match="rate limit"):
        await limiter.intercept(_call("", received=100.5), _proceed)
    await limiter.intercept(_call("", received=101.0), _proceed)
    # Read earlier than the refill at 101 (another connection's call, dispatched late).
    with pytest.raises(rpc.RpcError, match="rate limit"):
        await limiter.intercept(_call("", received=100.9), _proceed)


def test_a_refusal_stamped_in_an_earlier_second_counts_in_the_latest() -> None:
    refusals = RefusalLog("rate_limit")
    with capture_logs() as logs:
        for _ in range(_LOGS_PER_SECOND):
            refusals.refused("10.0.0.1:5", "svc/m", "k", 7.2)
        # A call read in the second before: it must not open a new second's budget.
        refusals.refused("10.0.0.1:5", "svc/m", "k", 6.9)
        refusals.refused("10.0.0.1:5", "svc/m", "k", 8.0)
    assert len(logs) == _LOGS_PER_SECOND + 1
    assert logs[-1]["suppressed"] == 1


async def test_rate_limit_by_peer_keys_each_call_by_its_own_host(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The host of the last peer seen is remembered: calls of two connections interleaved
    # must still each be keyed by their own host (and two ports of one host share one).
    limiter = rpc.RateLimitInterceptor(1, burst=1)
    await limiter.intercept(_call("", "10.0.0.1:5"), _proceed)
    await limiter.intercept(_call("", "10.0.0.2:6"), _proceed)
    await limiter.intercept(_call("", "[::1]:7"), _proceed)
    with pytest.raises(rpc.RpcError, match="rate limit"):
        await limiter.intercept(_call("", "10.0.0.1:8"), _proceed)
    with pytest.raises(rpc.RpcError, match="rate limit"):
        await limiter.intercept(_call("", "10.0.0.2:6"), _proceed)
    assert sorted(limiter._limiter._buckets) == ["10.0.0.1", "10.0.0.2", "[::1]"]


async def _proceed() -> None:
    pass


@contextmanager
def untraced() -> Iterator[None]:
    """Suspend this thread's trace function (coverage's, under ``make test``) for a loop
    that other tests cover line by line: what the loop checks is memory, not coverage."""
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        yield
    finally:
        sys.settrace(tracer)


async def test_a_million_distinct_hostile_keys_keep_memory_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = rpc.RateLimitInterceptor(1, burst=1, key="metadata:k", max_keys=1000)
    # One call whose key changes: building a million calls (each with a cancel scope) would
    # cost more than the limiter, which sees nothing but the metadata value.
    call = _call("")
    metadata = call.metadata
    huge = "x" * 8000  # as large as the default max_metadata_size lets a value be
    with untraced():  # a million traced iterations cost a minute under coverage
        for i in range(950_000):
            metadata["k"] = str(i)
            await limiter.intercept(call, _proceed)
        tracemalloc.start()  # traced for the last 50,000 keys only: it is slow
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for i in range(950_000, 1_000_000):
                metadata["k"] = f"{huge}{i}" if i % 2 else str(i)
                await limiter.intercept(call, _proceed)
            del metadata["k"]  # the last huge value is the test's, not the limiter's
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
    stats = limiter.statistics()
    assert stats.keys == 1000
    assert stats.admitted == 1_000_000
    # The 1,000 tracked buckets were all replaced (about 400 KB); keeping even the 25,000
    # huge keys' 8 KB values would be 200 MB.
    assert grown < 1_000_000
    assert max(len(key) for key in limiter._limiter._buckets) <= 64
