"""Authorize calls by client certificate: mutual TLS plus an interceptor (issue 14).

The server requires a client certificate signed by its CA (``rpc.server_ssl_context(...,
client_ca=...)``); the TLS handshake fails for anyone else. :class:`AllowByIdentity` then
decides, per method, which verified identities may call it, reading
``call.peer_identity`` (the certificate's subject and SANs) and refusing the others with
``PERMISSION_DENIED``. The handshake authenticates; the interceptor authorizes.

Run it (a throwaway CA from trustme, a server and two clients in one process)::

    python -m examples.mtls_authz
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import msgspec
import trio

from trio_micro import rpc


class AllowByIdentity:
    """A server interceptor that lets a call through when the client certificate's common
    name, or one of its URI SANs (e.g. a SPIFFE id), is allowed for the method.

    Args:
        allowed: ``{"service/method": identities}``; ``"service/*"`` covers every method
            of a service. A method not listed is refused to everyone.
    """

    def __init__(self, allowed: Mapping[str, frozenset[str] | set[str]]) -> None:
        self._allowed = {key: frozenset(names) for key, names in allowed.items()}

    def identities_for(self, service: str, method: str) -> frozenset[str]:
        """Who may call ``service/method``."""
        return self._allowed.get(f"{service}/{method}", frozenset()) | self._allowed.get(
            f"{service}/*", frozenset()
        )

    async def intercept(self, call: rpc.ServerCall, proceed: Callable[[], Awaitable[None]]) -> None:
        identity = call.peer_identity
        if identity is None:
            raise rpc.RpcError(rpc.Status.UNAUTHENTICATED, "a client certificate is required")
        names = {identity.common_name, *identity.san_values("URI")} - {None}
        if not names & self.identities_for(call.service, call.method):
            raise rpc.RpcError(
                rpc.Status.PERMISSION_DENIED,
                f"{identity} may not call {call.service}/{call.method}",
            )
        await proceed()


class Invoice(msgspec.Struct):
    invoice_id: int


class Ack(msgspec.Struct):
    ok: bool


class BillingService(rpc.Service, name="billing"):
    @rpc.unary
    async def pay(self, req: Invoice) -> Ack:
        return Ack(ok=True)

    @rpc.unary
    async def refund(self, req: Invoice) -> Ack:
        return Ack(ok=True)


async def main(directory: Path) -> None:
    import trustme  # a test dependency: only for this demonstration's throwaway CA

    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    files = {}
    for name, cert in {
        "server": ca.issue_cert("127.0.0.1", common_name="billing-server"),
        "shop": ca.issue_cert("shop.internal", common_name="shop"),
        "auditor": ca.issue_cert("auditor.internal", common_name="auditor"),
    }.items():
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        files[name] = (str(cert_file), str(key_file))

    authz = AllowByIdentity({"billing/pay": {"shop"}, "billing/*": {"auditor"}})
    server_context = rpc.server_ssl_context(*files["server"], client_ca=str(ca_file))
    async with rpc.open_server(
        [BillingService()],
        host="127.0.0.1",
        port=0,
        ssl_context=server_context,
        interceptors=[authz],
    ) as server:
        target = f"127.0.0.1:{server.address[1]}"
        for client in ("shop", "auditor"):
            cert_file, key_file = files[client]
            context = rpc.client_ssl_context(ca=str(ca_file), certfile=cert_file, keyfile=key_file)
            async with rpc.open_channel(target, ssl_context=context) as channel:
                billing = channel.stub(BillingService)
                for method in (billing.pay, billing.refund):
                    try:
                        await method(Invoice(7))
                        print(f"{client}: {method.__name__} allowed")
                    except rpc.RpcError as exc:
                        print(f"{client}: {method.__name__} refused: {exc.code.name}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))
