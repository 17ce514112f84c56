"""The service the asyncio client's tests call (served by trio in a thread)."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator
from typing import NoReturn

import msgspec
import trio

from trio_micro import rpc


class Ask(msgspec.Struct):
    value: int = 0
    size: int = 0
    blob: bytes = b""  # a request this large; ``count`` sends it back in each item


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


def deadline_left_ms() -> float:
    """What the running handler's call has left of its deadline, in ms; -1: no deadline."""
    call = rpc.current_call()
    if call is None or call.deadline == math.inf:
        return -1.0
    return (call.deadline - trio.current_time()) * 1000


class AioTestService(rpc.Service, name="aio.Test"):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    @rpc.unary
    async def echo(self, req: Ask) -> Answer:
        call = rpc.current_call()
        metadata = dict(call.metadata) if call is not None else {}
        return Answer(req.value, deadline_left_ms(), metadata, b"x" * req.size)

    @rpc.unary
    async def fail(self, req: Ask) -> Answer:
        raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no {req.value}", {"field": "value"})

    async def _until_cancelled(self) -> NoReturn:
        self.probe.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.probe.cancelled.set()

    @rpc.unary
    async def slow(self, req: Ask) -> Answer:
        await self._until_cancelled()

    @rpc.server_stream
    async def count(self, req: Ask) -> AsyncIterator[Answer]:
        self.probe.started.set()
        try:
            for i in range(req.value):
                yield Answer(i, payload=req.blob)
            if req.size:  # then wait for the client to go away
                await trio.sleep_forever()
        finally:
            self.probe.cancelled.set()

    @rpc.server_stream
    async def count_then_fail(self, req: Ask) -> AsyncIterator[Answer]:
        for i in range(req.value):
            yield Answer(i)
        raise rpc.RpcError(rpc.Status.ABORTED, "stopped")

    @rpc.client_stream
    async def total(self, requests: rpc.RequestStream[Ask]) -> Answer:
        """The sum of the values; a negative value fails the call (ABORTED)."""
        total = 0
        async for req in requests:
            if req.value < 0:
                raise rpc.RpcError(rpc.Status.ABORTED, f"stopped at {total}")
            total += req.value
        return Answer(total, deadline_left_ms())

    @rpc.client_stream
    async def hold(self, requests: rpc.RequestStream[Ask]) -> Answer:
        """Reads nothing (the client's credit runs out) until the client goes away."""
        await self._until_cancelled()

    @rpc.client_stream
    async def first(self, requests: rpc.RequestStream[Ask]) -> Answer:
        """Answers with the first request, leaving the rest unread."""
        return Answer((await requests.receive()).value)

    @rpc.bidi_stream
    async def chat(
        self, requests: rpc.RequestStream[Ask], responses: rpc.ResponseSender[Answer]
    ) -> None:
        """Answers each request with ``size or 1`` answers of its value; a negative value
        fails the call (ABORTED)."""
        self.probe.started.set()
        try:
            async for req in requests:
                if req.value < 0:
                    raise rpc.RpcError(rpc.Status.ABORTED, "stopped")
                for _ in range(req.size or 1):
                    await responses.send(Answer(req.value, deadline_left_ms()))
        finally:
            self.probe.cancelled.set()
