from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from trio_micro import rpc

from .services import Empty, TestService


@pytest.fixture
def service() -> TestService:
    return TestService()


@pytest.fixture
async def server(service: TestService) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server([service], host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
async def channel(server: rpc.Server) -> AsyncIterator[rpc.Channel]:
    async with rpc.open_channel(address(server)) as channel:
        yield channel


@pytest.fixture
def stub(channel: rpc.Channel) -> TestService:
    return channel.stub(TestService)


def address(server: rpc.Server) -> str:
    host, port = server.address
    return f"{host}:{port}"


async def cancel_sleep_once_started(service: TestService, stub: TestService) -> None:
    """Call ``sleep``, cancel it once its handler runs, and wait until the handler saw it."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_when_started() -> None:
                await service.started.wait()
                scope.cancel()

            nursery.start_soon(cancel_when_started)
            await stub.sleep(Empty())
    assert scope.cancelled_caught
    with trio.fail_after(5):
        await service.cancelled.wait()


class RecordOutcomes:
    """A server interceptor recording ``(method, peer, code)`` of each call as ``proceed``
    reports its outcome: returning is ``OK``, raising ``RpcError`` is that error's code."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, rpc.Status]] = []

    async def intercept(self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        code = rpc.Status.OK
        try:
            await proceed()
        except rpc.RpcError as exc:
            code = exc.code
            raise
        finally:
            self.outcomes.append((call.method, call.peer, code))
