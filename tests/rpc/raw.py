"""A hand-driven protocol client, for what a misbehaving or silent peer does."""

from __future__ import annotations

import trio

from trio_micro import rpc
from trio_micro.protocol import Connection, ConnectionClosed, Event, Hello, Role


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

    async def receive_until_closed(self) -> list[Event]:
        while not any(isinstance(e, ConnectionClosed) for e in await self.receive()):
            pass
        return self.events

    async def aclose(self) -> None:
        await self.stream.aclose()
