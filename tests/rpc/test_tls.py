"""TLS on a real loopback socket, with a throwaway CA from trustme."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
import trustme
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.protocol import Connection, Role

from .conftest import address
from .services import GetUserRequest, StreamingRequest, TestService


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_server(
    service: TestService, server_context: ssl.SSLContext
) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server(
        [service], host="127.0.0.1", ssl_context=server_context, handshake_timeout=2
    ) as server:
        yield server


async def wait_no_connections(server: rpc.Server) -> None:
    # Polls: the server has no event for "that connection is gone" (bounded by fail_after).
    while server.statistics().connections:  # noqa: ASYNC110
        await trio.sleep(0.001)


def events_named(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == name]


async def check_serves_tls(server: rpc.Server, context: ssl.SSLContext) -> None:
    async with rpc.open_channel(address(server), ssl_context=context) as channel:
        stub = channel.stub(TestService)
        assert (await stub.get_user(GetUserRequest(7))).user_id == 7
        items = [item.index async for item in stub.streaming_output_call(StreamingRequest(5))]
        assert items == [0, 1, 2, 3, 4]


async def test_unary_and_stream_calls_over_tls(
    tls_server: rpc.Server, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        await check_serves_tls(tls_server, client_context)


async def test_server_hostname_is_checked_against_the_certificate(
    tls_server: rpc.Server, client_context: ssl.SSLContext
) -> None:
    host, port = tls_server.address
    async with rpc.open_channel(
        f"{host}:{port}", ssl_context=client_context, server_hostname="localhost"
    ) as channel:
        assert (await channel.stub(TestService).get_user(GetUserRequest(1))).user_id == 1


async def test_client_that_does_not_trust_the_ca_fails_with_unavailable(
    tls_server: rpc.Server,
) -> None:
    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=trustme.CA().cert_pem.bytes().decode())
    with trio.fail_after(10):
        async with rpc.open_channel(address(tls_server), ssl_context=untrusting) as channel:
            with pytest.raises(rpc.RpcError) as info:
                await channel.stub(TestService).get_user(GetUserRequest(1))
    assert info.value.code is rpc.Status.UNAVAILABLE
    assert "TLS" in info.value.message
    assert "certificate" in info.value.message.lower()


async def test_plaintext_client_is_dropped_and_tls_clients_are_still_served(
    tls_server: rpc.Server, client_context: ssl.SSLContext
) -> None:
    with capture_logs() as logs, trio.fail_after(10):
        stream = await trio.open_tcp_stream(*tls_server.address)
        await stream.send_all(Connection(Role.CLIENT).initiate())
        received = b""
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:  # a reset is as good as EOF
            pass
        await stream.aclose()
        assert b"TMRPC" not in received  # the server never spoke the protocol in the clear
        await check_serves_tls(tls_server, client_context)
        await wait_no_connections(tls_server)
    assert events_named(logs, "rpc.connection.tls_failed")


async def test_client_that_never_finishes_the_tls_handshake_is_dropped(
    autojump_clock: trio.testing.MockClock,
    tls_server: rpc.Server,
    client_context: ssl.SSLContext,
) -> None:
    with capture_logs() as logs, trio.fail_after(10):
        stream = await trio.open_tcp_stream(*tls_server.address)
        start = trio.current_time()
        while await stream.receive_some(65536):  # send nothing, not even a ClientHello
            pass
        assert trio.current_time() - start == pytest.approx(2)
        await stream.aclose()
        await check_serves_tls(tls_server, client_context)
        await wait_no_connections(tls_server)
    assert events_named(logs, "rpc.connection.handshake_timeout")
