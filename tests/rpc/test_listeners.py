"""rpc.open_tcp_listeners and serve(listeners=...): a port shared with SO_REUSEPORT, and one
server on several ports, on real loopback sockets."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from trio_micro import rpc

from .services import Empty, TestService

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is not available"
)


async def test_two_servers_share_a_port_and_the_kernel_spreads_connections() -> None:
    first = await rpc.open_tcp_listeners(0, host="127.0.0.1", reuse_port=True)
    port = first[0].socket.getsockname()[1]
    second = await rpc.open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
    services = [TestService(), TestService()]
    async with (
        rpc.open_server([services[0]], listeners=first) as a,
        rpc.open_server([services[1]], listeners=second) as b,
    ):
        assert a.address[1] == b.address[1] == port
        with trio.fail_after(30):
            for _ in range(40):  # a new connection each time: the kernel picks the server
                async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
                    await channel.stub(TestService).empty_call(Empty())
    # 40 connections all on one server by chance: about 2 in 10**12.
    assert sorted(s.calls for s in services)[0] > 0
    assert sum(s.calls for s in services) == 40


async def test_a_port_held_without_reuse_port_is_refused() -> None:
    (held,) = await rpc.open_tcp_listeners(0, host="127.0.0.1")
    port = held.socket.getsockname()[1]
    try:
        with pytest.raises(OSError) as info:
            await rpc.open_tcp_listeners(port, host="127.0.0.1", reuse_port=True)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        await held.aclose()


async def test_one_server_serves_on_every_listener_it_is_given() -> None:
    own = await rpc.open_tcp_listeners(0, host="127.0.0.1")
    shared = await rpc.open_tcp_listeners(0, host="127.0.0.1", reuse_port=True)
    service = TestService()
    async with rpc.open_server([service], listeners=[*shared, *own]) as server:
        ports = [address[1] for address in server.addresses]
        assert len(set(ports)) == 2
        for port in ports:
            async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
                await channel.stub(TestService).empty_call(Empty())
    assert service.calls == 2


async def test_listeners_and_a_port_together_are_refused() -> None:
    listeners = await rpc.open_tcp_listeners(0, host="127.0.0.1")
    try:
        with pytest.raises(ValueError, match="either listeners or host/port"):
            await rpc.serve([TestService()], port=8080, listeners=listeners)
    finally:
        for listener in listeners:
            await listener.aclose()


@pytest.mark.parametrize("listeners", [[], ["127.0.0.1:80"], "127.0.0.1:80"])
async def test_listeners_of_the_wrong_kind_are_refused(listeners: object) -> None:
    with pytest.raises(TypeError, match="listeners must be a non-empty sequence"):
        await rpc.serve([TestService()], listeners=listeners)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"port": -1}, ValueError), ({"port": 70000}, ValueError), ({"port": "80"}, TypeError)],
)
async def test_bad_listener_arguments_are_refused(kwargs: dict[str, object], error: type) -> None:
    port = kwargs.pop("port")
    with pytest.raises(error):
        await rpc.open_tcp_listeners(port, reuse_port=True)  # type: ignore[arg-type]
