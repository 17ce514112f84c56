"""A real trio_micro server in a thread, for the asyncio client's tests (127.0.0.1, port 0)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trio

from trio_micro import rpc

from .services import AioTestService, Probe


@dataclass
class ServerThread:
    target: str
    probe: Probe


@pytest.fixture
def server() -> Iterator[ServerThread]:
    probe = Probe()
    started: queue.Queue[tuple[trio.lowlevel.TrioToken, trio.CancelScope, str]] = queue.Queue()

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with rpc.open_server([AioTestService(probe)], host="127.0.0.1", port=0) as srv:
                host, port = srv.address
                started.put((trio.lowlevel.current_trio_token(), scope, f"{host}:{port}"))
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    token, scope, target = started.get(timeout=30)
    try:
        yield ServerThread(target, probe)
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=30)
        assert not thread.is_alive()
