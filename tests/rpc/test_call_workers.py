"""The server runs calls in reused worker tasks: nothing of one call may reach the next."""

from __future__ import annotations

import contextvars
import math

import msgspec
import trio

from trio_micro import rpc

from .conftest import address, cancel_sleep_once_started
from .services import Empty, TestService

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("test_seen", default="")


class Deadline(msgspec.Struct):
    effective: float
    seen: str


class Probe(rpc.Service, name="probe"):
    @rpc.unary
    async def look(self, req: Empty) -> Deadline:
        """Report the handler's effective deadline and what an earlier call set, then set."""
        await trio.lowlevel.checkpoint()  # cancelled here if the call's scope were
        seen = _seen.get()
        _seen.set("set by an earlier call")
        return Deadline(trio.current_effective_deadline(), seen)


def call_workers() -> list[trio.lowlevel.Task]:
    found = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.name.startswith("trio_micro.rpc._server.call:"):
            found.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


async def test_a_deadline_ends_with_its_call() -> None:
    async with (
        rpc.open_server([Probe()], host="127.0.0.1") as server,
        rpc.open_channel(address(server)) as channel,
    ):
        probe = channel.stub(Probe)
        with trio.move_on_after(60):
            first = await probe.look(Empty())
        second = await probe.look(Empty())  # on the same worker: calls are sequential
    assert math.isfinite(first.effective)
    assert second.effective == math.inf


async def test_context_variables_set_by_a_call_do_not_reach_the_next() -> None:
    async with (
        rpc.open_server([Probe()], host="127.0.0.1") as server,
        rpc.open_channel(address(server)) as channel,
    ):
        probe = channel.stub(Probe)
        seen = [(await probe.look(Empty())).seen for _ in range(3)]
    assert seen == ["", "", ""]


async def test_a_reused_worker_is_named_for_its_current_call(
    service: TestService, stub: TestService
) -> None:
    await stub.empty_call(Empty())
    [parked] = call_workers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stub.hold, Empty())
        with trio.fail_after(5):
            await service.started.wait()
        [worker] = call_workers()
        assert worker is parked  # reused, not a new task
        assert worker.name.endswith("/hold")
        service.release.set()


async def test_a_cancelled_call_does_not_cancel_the_next_one(
    service: TestService, stub: TestService
) -> None:
    await cancel_sleep_once_started(service, stub)
    service.release.set()
    assert await stub.hold(Empty()) == Empty()  # hold checkpoints: a stale scope would fire


async def test_idle_workers_are_trimmed_when_the_calls_end(
    service: TestService, server: rpc.Server
) -> None:
    calls = 200
    async with rpc.open_channel(address(server)) as channel:
        stub = channel.stub(TestService)
        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(stub.hold, Empty())
            with trio.fail_after(10):
                while service.running < calls:  # noqa: ASYNC110 - no event for "all running"
                    await trio.sleep(0.001)
            assert len(call_workers()) == calls
            service.release.set()
        with trio.fail_after(5):
            while server.statistics().active_calls:  # noqa: ASYNC110
                await trio.sleep(0.001)
            await trio.testing.wait_all_tasks_blocked()
        assert 0 < len(call_workers()) <= 17  # 16 kept, and the last call's own
    with trio.fail_after(5):
        while call_workers():  # noqa: ASYNC110 - the connection's close ends its workers
            await trio.sleep(0.001)
