"""A hand-driven protocol client, for what a misbehaving or silent peer does."""

from __future__ import annotations

import msgspec
import trio

from trio_micro import rpc
from trio_micro.protocol import CallType, Connection, ConnectionClosed, Error, Event, Hello, Role

from .services import Empty


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = Connection(Role.CLIENT)
        self.events: list[Event] = []

    @classmethod
    async def connect(cls, server: rpc.Server, *, handshake: bool = True) -> RawClient:
        client = cls(await trio.open_tcp_stream(*server.address))
        if handshake:
            await client.stream.send_all(client.conn.initiate())
            await client.receive_until(Hello)
        return client

    async def receive(self) -> list[Event]:
        events = self.conn.receive_data(await self.stream.receive_some(65536))
        self.events += events
        return events

    async def receive_until(self, kind: type) -> Event:
        while True:
            for event in await self.receive():
                if isinstance(event, kind):
                    return event
                assert not isinstance(event, ConnectionClosed), self.events

    async def call_with_deadline(
        self, method: str, timeout_ms: int, *, call_type: CallType = CallType.UNARY
    ) -> tuple[Error, float]:
        """Call ``method`` (stream 1, an empty request) with ``timeout_ms``; return the ERROR
        that ends the call and the seconds it took to come."""
        payload = msgspec.msgpack.encode(Empty())
        request = self.conn.send_request(
            1, method, payload, call_type=call_type, timeout_ms=timeout_ms
        )
        await self.stream.send_all(request)
        start = trio.current_time()
        error = await self.receive_until(Error)
        assert isinstance(error, Error)
        return error, trio.current_time() - start

    async def receive_until_closed(self) -> list[Event]:
        while not any(isinstance(e, ConnectionClosed) for e in await self.receive()):
            pass
        return self.events

    async def aclose(self) -> None:
        await self.stream.aclose()
