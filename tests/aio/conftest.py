"""A real trio_micro server in a thread, for the asyncio client's tests (127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import trio

from trio_micro import rpc

from .services import AioTestService, Probe

T = TypeVar("T")
BOUND = 30.0  # no test may hang; a real failure shows long before this


def run(
    fn: Callable[[], Awaitable[T]],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """``asyncio.run(fn())`` (on ``loop_factory``'s loop if given), bounded by BOUND s."""

    async def bounded() -> T:
        async with asyncio.timeout(BOUND):
            return await fn()

    if loop_factory is None:
        return asyncio.run(bounded())
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


@dataclass
class ServerThread:
    target: str
    probe: Probe
    token: trio.lowlevel.TrioToken
    scope: trio.CancelScope
    thread: threading.Thread

    def stop(self) -> None:
        """Shut the server down (gracefully, as on a normal exit) and wait for it."""
        if self.thread.is_alive():
            trio.from_thread.run_sync(self.scope.cancel, trio_token=self.token)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def start_server(
    port: int = 0, *, extra: Sequence[rpc.Service] = (), **options: Any
) -> ServerThread:
    """A trio_micro server in a thread of its own (its own trio run), serving ``extra`` too."""
    probe = Probe()
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope, str]] = queue.Queue()

    async def main() -> None:
        service = AioTestService(probe)
        async with rpc.open_server(
            [service, *extra], host="127.0.0.1", port=port, **options
        ) as srv:
            host, bound = srv.address
            with trio.CancelScope() as scope:
                started.put((trio.lowlevel.current_trio_token(), scope, f"{host}:{bound}"))
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    token, scope, target = started.get(timeout=30)
    return ServerThread(target, probe, token, scope, thread)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = start_server()
    try:
        yield running
    finally:
        running.stop()
