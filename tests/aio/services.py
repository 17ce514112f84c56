"""The service the asyncio client's tests call (served by trio in a thread)."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator

import msgspec
import trio

from trio_micro import rpc


class Ask(msgspec.Struct):
    value: int = 0
    size: int = 0


class Answer(msgspec.Struct):
    value: int
    deadline_ms: float = -1.0  # what the server's handler had left; -1: no deadline
    metadata: dict[str, str] = {}
    payload: bytes = b""


class Probe:
    """What the handlers saw, set from the server's thread and read from the test's."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()


class AioTestService(rpc.Service, name="aio.Test"):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    @rpc.unary
    async def echo(self, req: Ask) -> Answer:
        call = rpc.current_call()
        left = -1.0
        if call is not None and call.deadline != math.inf:
            left = (call.deadline - trio.current_time()) * 1000
        metadata = dict(call.metadata) if call is not None else {}
        return Answer(req.value, left, metadata, b"x" * req.size)

    @rpc.unary
    async def fail(self, req: Ask) -> Answer:
        raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no {req.value}", {"field": "value"})

    @rpc.unary
    async def slow(self, req: Ask) -> Answer:
        self.probe.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.probe.cancelled.set()
        raise AssertionError("unreachable")  # pragma: no cover

    @rpc.server_stream
    async def count(self, req: Ask) -> AsyncIterator[Answer]:
        self.probe.started.set()
        try:
            for i in range(req.value):
                yield Answer(i)
            if req.size:  # then wait for the client to go away
                await trio.sleep_forever()
        finally:
            self.probe.cancelled.set()

    @rpc.server_stream
    async def count_then_fail(self, req: Ask) -> AsyncIterator[Answer]:
        for i in range(req.value):
            yield Answer(i)
        raise rpc.RpcError(rpc.Status.ABORTED, "stopped")
