"""max_inflight shared fairly: near the limit a connection holding its share is refused
first, a quiet connection still finds a slot, and one connection alone may use it all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.rpc._admission import Admission

from .conftest import address
from .services import Empty, TestService
from .test_bad_input import eventually

LIMIT = 8  # reserve 1: the eighth slot goes only to a connection below its share


async def _until(done: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        await eventually(done)


@asynccontextmanager
async def _served(service: TestService) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server([service], host="127.0.0.1", port=0, max_inflight=LIMIT) as server:
        yield server


async def _hold(nursery: trio.Nursery, stub: TestService, service: TestService, count: int) -> None:
    """Start ``count`` more held calls on ``stub``'s connection; return once they run."""
    target = service.running + count
    for _ in range(count):
        nursery.start_soon(stub.hold, Empty())
    await _until(lambda: service.running == target)


async def _refusal(stub: TestService) -> rpc.RpcError:
    with pytest.raises(rpc.RpcError) as info:
        await stub.empty_call(Empty())
    assert info.value.code is rpc.Status.RESOURCE_EXHAUSTED
    return info.value


def _admission(server: rpc.Server) -> Admission:
    return server._admission


@dataclass
class Scene:
    """A server at max_inflight=LIMIT, a greedy and a quiet connection to it, a nursery
    for held calls (released at the end)."""

    service: TestService
    server: rpc.Server
    greedy_channel: rpc.Channel
    greedy: TestService
    quiet: TestService
    nursery: trio.Nursery


@asynccontextmanager
async def _scene() -> AsyncIterator[Scene]:
    service = TestService()
    async with (
        _served(service) as server,
        rpc.open_channel(address(server), retry=None) as greedy_channel,
        rpc.open_channel(address(server), retry=None) as quiet_channel,
        trio.open_nursery() as nursery,
    ):
        greedy = greedy_channel.stub(TestService)
        quiet = quiet_channel.stub(TestService)
        yield Scene(service, server, greedy_channel, greedy, quiet, nursery)
        service.release.set()


@pytest.mark.parametrize(
    ("limit", "threshold"), [(None, float("inf")), (1, 1), (2, 1), (8, 7), (9, 7), (64, 56)]
)
def test_the_reserve_is_the_top_eighth_of_the_limit(limit: int | None, threshold: float) -> None:
    assert Admission(limit, None).threshold == threshold


async def test_one_connection_alone_may_hold_the_whole_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:  # the quiet connection has called nothing
        await _hold(scene.nursery, scene.greedy, scene.service, LIMIT)
        refused = await _refusal(scene.greedy)
        assert refused.details == {"refused": "max_inflight"}  # full, not over its share


async def _at_the_threshold(scene: Scene) -> None:
    """The quiet connection holds one call, the greedy one the rest up to the threshold."""
    await _hold(scene.nursery, scene.quiet, scene.service, 1)
    await _hold(scene.nursery, scene.greedy, scene.service, LIMIT - 2)


async def test_a_greedy_connection_cannot_take_the_reserve_from_a_quiet_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        await _at_the_threshold(scene)
        with capture_logs() as logs:
            refused = await _refusal(scene.greedy)
        # Two connections: a share of 4 each; the greedy one holds 6.
        assert refused.details == {"refused": "max_inflight", "fair-share": "4"}
        [line] = [e for e in logs if e["event"] == "rpc.call.refused"]
        assert (line["fair_share"], line["connection_calls"], line["contenders"]) == (4, 6, 2)
        await _hold(scene.nursery, scene.quiet, scene.service, 1)  # the reserve: below its share
        assert scene.service.running == LIMIT


async def test_a_quiet_connection_between_calls_keeps_its_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        service, nursery, greedy, quiet = scene.service, scene.nursery, scene.greedy, scene.quiet
        await quiet.empty_call(Empty())  # over: it holds nothing now
        await _hold(nursery, greedy, service, LIMIT - 1)
        assert (await _refusal(greedy)).details["fair-share"] == "4"
        await quiet.empty_call(Empty())


async def test_a_connection_refused_at_the_full_server_gets_the_next_free_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        refused = await _refused_at_the_full_server(scene)
        assert refused.details == {"refused": "max_inflight"}
        # One slot has freed up: the greedy connection may not take it back...
        assert (await _refusal(scene.greedy)).details["fair-share"] == "4"
        # ... and the refused one, counted as a contender, finds it.
        await scene.quiet.empty_call(Empty())


async def _refused_at_the_full_server(scene: Scene) -> rpc.RpcError:
    """The greedy connection fills the server alone, the quiet one is refused, then one
    of the greedy one's calls ends; return the refusal."""
    await _hold(scene.nursery, scene.greedy, scene.service, LIMIT - 1)
    one = await scene.nursery.start(_cancellable_hold, scene.greedy)
    await _until(lambda: scene.service.running == LIMIT)  # alone, it holds every slot
    refused = await _refusal(scene.quiet)
    await _hold_cancelled(one, scene.service)
    return refused


async def _cancellable_hold(
    stub: TestService, *, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    """A held call whose cancel scope is handed back (cancel it to cancel the call)."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await stub.hold(Empty())


async def _hold_cancelled(scope: trio.CancelScope, service: TestService) -> None:
    running = service.running
    scope.cancel()
    await _until(lambda: service.running == running - 1)


async def test_a_refused_connection_stops_counting_after_recent_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        await _refused_at_the_full_server(scene)
        await trio.sleep(Admission.RECENT_SECONDS)
        await _hold(scene.nursery, scene.greedy, scene.service, 1)  # alone again: all of it


async def test_counts_return_to_zero_when_calls_end_or_are_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        service, admission = scene.service, _admission(scene.server)
        await _hold(scene.nursery, scene.greedy, service, 3)
        cancelled = await scene.nursery.start(_cancellable_hold, scene.quiet)
        await _until(lambda: service.running == 4)
        assert (admission.inflight, admission.busy) == (4, 2)
        await _hold_cancelled(cancelled, service)
        await _until(lambda: admission.busy == 1)
        service.release.set()
        await _until(lambda: admission.inflight == 0)
        assert admission.busy == 0


async def _greedy_client(
    target: str, service: TestService, *, task_status: trio.TaskStatus[None]
) -> None:
    """Hold every slot on a connection of its own, until cancelled: then it drops."""
    async with rpc.open_channel(target, retry=None) as channel, trio.open_nursery() as nursery:
        await _hold(nursery, channel.stub(TestService), service, LIMIT)
        task_status.started()
        await trio.sleep_forever()


async def test_a_dropped_connection_leaves_no_count_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = TestService()
    async with _served(service) as server:
        admission = _admission(server)
        async with trio.open_nursery() as nursery:
            await nursery.start(_greedy_client, address(server), service)
            async with rpc.open_channel(address(server), retry=None) as refused_channel:
                await _refusal(refused_channel.stub(TestService))
                assert len(admission.recent) == 1
            await _until(lambda: not admission.recent)  # forgotten as its connection ended
            nursery.cancel_scope.cancel()  # the greedy client goes away, calls and all
        await _until(lambda: admission.inflight == 0)
        assert admission.busy == 0
        assert service.running == 0
        await _until(lambda: not admission.recent)


async def test_health_is_admitted_to_a_connection_over_its_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _scene() as scene:
        await _at_the_threshold(scene)
        await _refusal(scene.greedy)
        health = scene.greedy_channel.stub(rpc.HealthService)
        answer = await health.check(rpc.HealthCheckRequest())
        assert answer.status is rpc.HealthStatus.SERVING
