"""Mutual TLS on a real loopback socket, with throwaway CAs from trustme: the server
requires and verifies client certificates, and handlers see the verified identity."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trio
import trustme
from structlog.testing import capture_logs

from trio_micro import rpc

from .conftest import address


class Identity(msgspec.Struct):
    common_name: str | None
    sans: list[tuple[str, str]]


class WhoAmI(rpc.Service, name="whoami"):
    @rpc.unary
    async def whoami(self, req: Identity) -> Identity:
        identity = rpc.current_call().peer_identity
        if identity is None:
            return Identity(None, [])
        return Identity(identity.common_name, list(identity.sans))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("mtls")
    cert = ca.issue_cert("127.0.0.1", common_name="server")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    return rpc.server_ssl_context(
        str(directory / "server.pem"),
        str(directory / "server.key"),
        client_ca=str(directory / "ca.pem"),
    )


def client_context(trusted: trustme.CA, cert: trustme.LeafCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    trusted.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


@pytest.fixture
async def mtls_server(server_context: ssl.SSLContext) -> AsyncIterator[rpc.Server]:
    async with rpc.open_server(
        [WhoAmI()], host="127.0.0.1", ssl_context=server_context, handshake_timeout=5
    ) as server:
        yield server


async def whoami(server: rpc.Server, context: ssl.SSLContext | None) -> Identity:
    with trio.fail_after(10):
        async with rpc.open_channel(address(server), ssl_context=context) as channel:
            return await channel.stub(WhoAmI).whoami(Identity(None, []))


async def refused(
    server: rpc.Server, context: ssl.SSLContext | None, event: str = "rpc.connection.tls_failed"
) -> tuple[rpc.RpcError, list[dict[str, object]]]:
    """Call and fail; wait until the server has logged ``event`` about the connection."""
    with capture_logs() as logs:
        with pytest.raises(rpc.RpcError) as info:
            await whoami(server, context)
        with trio.fail_after(10):
            # Polls: the server has no event for "that connection is gone".
            while server.statistics().connections:  # noqa: ASYNC110
                await trio.sleep(0.001)
    assert [log for log in logs if log["event"] == event]
    return info.value, logs


async def test_a_client_with_a_good_certificate_is_served_and_its_identity_seen(
    mtls_server: rpc.Server, ca: trustme.CA
) -> None:
    cert = ca.issue_cert("billing.internal", "billing@example.com", common_name="billing")
    identity = await whoami(mtls_server, client_context(ca, cert))
    assert identity.common_name == "billing"
    assert ("DNS", "billing.internal") in identity.sans
    assert ("email", "billing@example.com") in identity.sans


async def test_a_client_without_a_certificate_is_refused(
    mtls_server: rpc.Server, ca: trustme.CA
) -> None:
    error, _ = await refused(mtls_server, client_context(ca, None))
    assert error.code is rpc.Status.UNAVAILABLE


async def test_a_client_certificate_from_another_ca_is_refused(
    mtls_server: rpc.Server, ca: trustme.CA
) -> None:
    other = trustme.CA().issue_cert("billing.internal", common_name="billing")
    error, logs = await refused(mtls_server, client_context(ca, other))
    assert error.code is rpc.Status.UNAVAILABLE
    failed = [log for log in logs if log["event"] == "rpc.connection.tls_failed"]
    assert "certificate" in str(failed[0]["reason"]).lower()


async def test_an_expired_client_certificate_is_refused(
    mtls_server: rpc.Server, ca: trustme.CA
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        "billing.internal",
        common_name="billing",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    error, logs = await refused(mtls_server, client_context(ca, expired))
    assert error.code is rpc.Status.UNAVAILABLE
    failed = [log for log in logs if log["event"] == "rpc.connection.tls_failed"]
    assert "expired" in str(failed[0]["reason"]).lower()


async def test_without_client_certificates_required_the_identity_is_none(
    ca: trustme.CA, tmp_path: Path
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    context = rpc.server_ssl_context(str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
    async with rpc.open_server([WhoAmI()], host="127.0.0.1", ssl_context=context) as server:
        identity = await whoami(server, client_context(ca, None))
    assert identity == Identity(None, [])


async def test_a_plaintext_client_on_a_tls_port_gets_a_clear_unavailable(
    mtls_server: rpc.Server,
) -> None:
    error, _ = await refused(mtls_server, None)
    assert error.code is rpc.Status.UNAVAILABLE
    assert "does the server require TLS?" in error.message


async def test_a_tls_client_on_a_plaintext_port_gets_a_clear_unavailable(
    ca: trustme.CA,
) -> None:
    async with rpc.open_server([WhoAmI()], host="127.0.0.1") as server:
        error, _ = await refused(server, client_context(ca, None), "rpc.connection.protocol_error")
    assert error.code is rpc.Status.UNAVAILABLE
    assert "is the server serving TLS?" in error.message
