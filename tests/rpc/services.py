"""Services used by the RPC tests (module level, so annotations resolve)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import trio

from trio_micro import rpc


class Empty(msgspec.Struct):
    pass


class SimpleRequest(msgspec.Struct):
    payload: bytes = b""
    response_size: int = -1  # -1: echo the payload; else answer this many zero bytes
    status_code: int = 0
    status_message: str = ""


class SimpleResponse(msgspec.Struct):
    payload: bytes


class StreamingRequest(msgspec.Struct):
    count: int
    size: int = 0


class StreamItem(msgspec.Struct):
    index: int
    payload: bytes = b""


class GetUserRequest(msgspec.Struct):
    user_id: int


class User(msgspec.Struct):
    user_id: int
    name: str
    source: str = "test"


class CallInfo(msgspec.Struct):
    service: str
    method: str
    peer: str
    metadata: dict[str, str]
    has_deadline: bool


class TestService(rpc.Service, name="grpc.testing.TestService"):
    """gRPC's interop test service, the parts that fit server-streaming-only RPC."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.release = trio.Event()
        self.running = 0
        self.max_running = 0
        self.produced = 0
        self.calls = 0

    @rpc.unary
    async def empty_call(self, req: Empty) -> Empty:
        self.calls += 1
        return Empty()

    @rpc.unary
    async def unary_call(self, req: SimpleRequest) -> SimpleResponse:
        if req.status_code:
            raise rpc.RpcError(rpc.Status(req.status_code), req.status_message)
        if req.response_size >= 0:
            return SimpleResponse(bytes(req.response_size))
        return SimpleResponse(req.payload)

    @rpc.server_stream
    async def streaming_output_call(self, req: StreamingRequest) -> AsyncIterator[StreamItem]:
        # Stopped early, the generator sees Cancelled if it was awaiting, or GeneratorExit
        # if it was suspended at `yield` (waiting for credit): `finally` covers both.
        finished = False
        try:
            for index in range(req.count):
                self.produced += 1
                yield StreamItem(index, bytes(req.size))
                if index == 0:
                    self.started.set()
            finished = True
        finally:
            if not finished:
                self.cancelled.set()

    @rpc.unary
    async def sleep(self, req: Empty) -> Empty:
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    @rpc.unary
    async def hold(self, req: Empty) -> Empty:
        """Runs until `release` is set; counts concurrent calls."""
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return Empty()

    @rpc.unary
    async def call_info(self, req: Empty) -> CallInfo:
        call = rpc.current_call()
        return CallInfo(
            call.service,
            call.method,
            call.peer,
            dict(call.metadata),
            call.deadline != float("inf"),
        )

    @rpc.unary
    async def crash(self, req: Empty) -> Empty:
        raise ValueError("secret database password in this message")

    @rpc.unary(idempotent=True)
    async def get_user(self, req: GetUserRequest) -> User:
        return User(req.user_id, f"user{req.user_id}")


class RelayService(rpc.Service, name="relay"):
    """Calls `next_hop` (another relay, or TestService.sleep) and records cancellation."""

    __test__ = False

    def __init__(self) -> None:
        self.next_relay: RelayService | None = None
        self.next_sleeper: TestService | None = None
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.deadline = float("nan")

    @rpc.unary
    async def relay(self, req: Empty) -> Empty:
        self.started.set()
        self.deadline = rpc.current_call().deadline
        try:
            if self.next_relay is not None:
                return await self.next_relay.relay(req)
            assert self.next_sleeper is not None
            return await self.next_sleeper.sleep(req)
        except trio.Cancelled:
            self.cancelled.set()
            raise
