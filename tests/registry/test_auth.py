"""Who may write to a registry server (issue #15): a shared token, or an allowed client
certificate; everyone else is refused before anything changes. Real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    Endpoint,
    MemoryRegistry,
    RegistryBackendError,
    RegistryClient,
    RegistryService,
    check_token,
    open_registry_client,
    open_registry_server,
)
from trio_micro.registry._server import LeaseRequest, ServiceRequest, token_metadata

from ..cli.test_tls import Pki
from ..rpc.replicas import Empty, ReplicaService, address

TOKEN = "s3cret-token_0123456789"
VICTIM = "10.0.0.1:50051"
WAIT = 10.0


@asynccontextmanager
async def client(target: str, **options: Any) -> AsyncIterator[RegistryClient]:
    # One attempt per call: refusals are not retried anyway, and a failure shows at once.
    async with open_registry_client(target, **options) as reg:
        yield reg


async def refusal(reg: RegistryClient, address: str = VICTIM) -> RegistryBackendError:
    with pytest.raises(RegistryBackendError) as caught, trio.fail_after(WAIT):
        async with reg.register("users", address):
            pass
    return caught.value


@pytest.mark.parametrize(
    "server_token", [TOKEN, None], ids=["the right token", "a server without a token"]
)
async def test_a_replica_with_the_token_registers(server_token: str | None) -> None:
    async with (
        open_registry_server(token=server_token) as server,
        client(server.target, token=TOKEN) as reg,
    ):
        with trio.fail_after(WAIT):
            async with reg.register("users", VICTIM):
                assert await reg.resolve("users") == [Endpoint(VICTIM)]


async def test_a_wrong_token_is_unauthenticated() -> None:
    async with (
        open_registry_server(token=TOKEN) as server,
        client(server.target, token="not-the-token") as reg,
    ):
        error = await refusal(reg)
    assert error.code == int(rpc.Status.UNAUTHENTICATED)
    assert str(error).endswith(": wrong registry token")


async def test_no_token_is_unauthenticated() -> None:
    async with open_registry_server(token=TOKEN) as server, client(server.target) as reg:
        error = await refusal(reg)
    assert error.code == int(rpc.Status.UNAUTHENTICATED)
    assert str(error).endswith(
        ": this registry needs a token (authorization metadata) or an allowed client certificate"
    )


async def test_a_hostile_register_without_the_token_evicts_nobody() -> None:
    async with (
        open_registry_server(token=TOKEN) as server,
        client(server.target, token=TOKEN) as owner,
        client(server.target) as hostile,
    ):
        with trio.fail_after(WAIT):
            async with owner.register("users", VICTIM):
                error = await refusal(hostile)
                assert error.code == int(rpc.Status.UNAUTHENTICATED)
                assert await hostile.resolve("users") == [Endpoint(VICTIM)]


async def test_keep_alive_and_deregister_need_the_token_too() -> None:
    async with (
        open_registry_server(token=TOKEN) as server,
        rpc.open_channel(server.target) as channel,
    ):
        stub = channel.stub(RegistryService)
        with trio.fail_after(WAIT):
            for call in (stub.keep_alive, stub.deregister):
                with pytest.raises(rpc.RpcError) as caught:
                    await call(LeaseRequest(1))
                assert caught.value.code is rpc.Status.UNAUTHENTICATED


async def test_lookups_stay_open_without_the_token() -> None:
    async with open_registry_server(token=TOKEN) as server, client(server.target) as reg:
        with trio.fail_after(WAIT):
            assert await reg.resolve("users") == []


async def test_protected_lookups_need_the_token() -> None:
    async with (
        open_registry_server(token=TOKEN, protect_lookups=True) as server,
        rpc.open_channel(server.target) as channel,
        client(server.target, token=TOKEN) as reg,
    ):
        stub = channel.stub(RegistryService)
        with trio.fail_after(WAIT):
            with pytest.raises(rpc.RpcError) as caught:
                await stub.resolve(ServiceRequest("users"))
            assert caught.value.code is rpc.Status.UNAUTHENTICATED
            assert await reg.resolve("users") == []


async def test_the_token_is_never_logged() -> None:
    with capture_logs() as logs:
        async with (
            open_registry_server(token=TOKEN) as server,
            client(server.target, token=TOKEN + "x") as reg,
        ):
            error = await refusal(reg)
    assert TOKEN not in str(error)
    assert logs
    assert all(TOKEN not in repr(entry) for entry in logs)


@pytest.mark.parametrize(
    ("token", "exception"),
    [
        (b"secret", TypeError),
        ("", ValueError),
        ("two secret", ValueError),
        ("secret\n", ValueError),
    ],
)
def test_a_bad_token_is_refused_without_showing_it(
    token: str | bytes, exception: type[Exception]
) -> None:
    with pytest.raises(exception) as caught:
        check_token(token)  # type: ignore[arg-type]
    assert "secret" not in str(caught.value)


# --- mutual TLS: an allowed client certificate instead of the token -----------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_options(pki: Pki) -> dict[str, Any]:
    context = rpc.client_ssl_context(ca=pki.ca, certfile=pki.client_cert, keyfile=pki.client_key)
    return {"ssl_context": context}


async def test_an_allowed_client_certificate_registers_without_the_token(pki: Pki) -> None:
    async with (
        open_registry_server(
            token=TOKEN, allow_identities=["client"], ssl_context=pki.server_context()
        ) as server,
        client(server.target, **tls_options(pki)) as reg,
    ):
        with trio.fail_after(WAIT):
            async with reg.register("users", VICTIM):
                assert await reg.resolve("users") == [Endpoint(VICTIM)]


async def test_a_client_certificate_not_allowed_is_permission_denied(pki: Pki) -> None:
    async with (
        open_registry_server(allow_identities=["billing"], ssl_context=pki.server_context()) as srv,
        client(srv.target, **tls_options(pki)) as reg,
    ):
        error = await refusal(reg)
    assert error.code == int(rpc.Status.PERMISSION_DENIED)
    assert "CN=client" in str(error)


# --- a registry:// target over TLS: the channel's context reaches the registry too --------


async def test_a_registry_target_reaches_a_tls_registry_with_the_channel_context(
    pki: Pki,
) -> None:
    context = tls_options(pki)["ssl_context"]
    async with (
        open_registry_server(ssl_context=pki.server_context()) as server,
        rpc.open_server(
            [ReplicaService("tls")], host="127.0.0.1", port=0, ssl_context=pki.server_context()
        ) as replica_server,
        client(server.target, ssl_context=context) as reg,
        reg.register("replica", address(replica_server)),
        rpc.open_channel(
            f"registry://{server.target}/replica", ssl_context=context, wait_for_ready=True
        ) as channel,
    ):
        with trio.fail_after(WAIT):
            assert (await channel.stub(ReplicaService).whoami(Empty())).name == "tls"


async def test_a_scheme_that_cannot_use_tls_is_refused_with_an_ssl_context(pki: Pki) -> None:
    @asynccontextmanager
    async def plain_only(authority: str) -> AsyncIterator[MemoryRegistry]:  # pragma: no cover
        yield MemoryRegistry()

    rpc.register_resolver("plainonly", plain_only)
    with pytest.raises(ValueError, match="plainonly:// resolver can't use TLS"):
        async with rpc.open_channel("plainonly://h:1/svc", **tls_options(pki)):
            pass  # pragma: no cover


# --- the token and identity arguments, exactly --------------------------------------------


@pytest.mark.parametrize(
    ("token", "error", "message"),
    [
        (5, TypeError, "token must be a str or None, got a int"),
        ("", ValueError, "token must be non-empty, printable and without whitespace"),
        ("a b", ValueError, "token must be non-empty, printable and without whitespace"),
    ],
)
def test_a_bad_token_is_refused_with_its_exact_message(
    token: object, error: type[Exception], message: str
) -> None:
    for check in (check_token, token_metadata):
        with pytest.raises(error) as caught:
            check(token)  # type: ignore[arg-type]
        assert str(caught.value) == message


def test_token_metadata_presents_the_token_as_bearer() -> None:
    assert token_metadata(TOKEN) == {"authorization": f"Bearer {TOKEN}"}
    assert token_metadata(None) == {}


@pytest.mark.parametrize("name", [5, ""])
def test_a_bad_identity_is_refused_naming_it(name: object) -> None:
    with pytest.raises(TypeError) as caught:
        RegistryService(allow_identities=[name])  # type: ignore[list-item]
    assert str(caught.value) == f"allow_identities must hold non-empty strs, got {name!r}"


async def test_lookups_of_a_guarded_service_are_open_by_default() -> None:
    service = RegistryService(token=TOKEN)  # protect_lookups left to its default
    async with (
        rpc.open_server([service], host="127.0.0.1", port=0) as server,
        rpc.open_channel(address(server)) as channel,
    ):
        with trio.fail_after(WAIT):
            answer = await channel.stub(RegistryService).resolve(ServiceRequest("users"))
    assert answer.endpoints == []


async def test_an_identity_list_without_a_client_certificate_asks_for_the_token() -> None:
    # No TLS at all: the call has no peer identity, and the allow list can't apply.
    async with (
        open_registry_server(allow_identities=["billing"]) as server,
        client(server.target) as reg,
    ):
        error = await refusal(reg)
    assert error.code == int(rpc.Status.UNAUTHENTICATED)
