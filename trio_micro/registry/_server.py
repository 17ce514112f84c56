"""The registry server: service discovery as a service on trio_micro's own RPC.

The embedded default for one machine: ``trio-micro registry --port N``, or
:func:`open_registry_server` / :func:`serve_registry` inside a program; clients use
:func:`~trio_micro.registry.open_registry_client`.

Theory of operation
-------------------
State is two maps: ``lease_id -> _Lease`` (service, endpoint, TTL, expiry on trio's clock)
and ``service -> address -> lease_id`` (who owns each entry). A lease owns exactly one
entry. ``register`` grants a fresh lease and makes it the owner of the entry; an earlier
owner's lease is *revoked* (``registry.server.replaced``): a restarted replica takes its
address over at once instead of waiting for its dead lease to expire (the same rule as
etcd, design §8), and a live owner learns of it, because its next ``keep_alive`` answers
``NOT_FOUND`` and its client registers again (``registry.lease.lost``). So another
registrant of the same address (a misconfigured ``--advertise``, or a hostile
``register`` then ``deregister``) can take an entry away for at most one renewal interval
(``ttl / 3``), never for good. ``keep_alive`` pushes a lease's expiry to ``now + ttl``; an
unknown or expired lease answers ``NOT_FOUND`` and the client registers again -- that is
also how state lost in a server restart comes back (lease ids are random 63-bit numbers,
so a restarted server does not hand out ids that clients still hold).

TTLs are at most :data:`~trio_micro.registry.MAX_TTL` (longer: ``INVALID_ARGUMENT``), and
a server holds at most :data:`MAX_LEASES` leases (more: ``RESOURCE_EXHAUSTED``), so its
state is bounded whatever its clients do.

Expiry is lazy, as in :class:`~trio_micro.registry.MemoryRegistry`: every method first
pops the leases whose expiry has passed from a heap keyed by expiry (one item per lease;
a renewed lease's item is pushed back with its new expiry when it surfaces), so a call
costs O(log n) per expired lease instead of a sweep of all n leases. Watchers park on a
per-service :class:`trio.Event` with a deadline at the service's earliest expiry, so there
is no background task and expiry is exact under ``MockClock``.

Who may register (design §8, issue #15): by default anyone who can reach the server --
bind it to loopback or a private network, or use mutual TLS. With ``token=`` and/or
``allow_identities=`` it serves only authorised writers: ``register``, ``keep_alive`` and
``deregister`` need the shared token in the call's ``authorization`` metadata (``Bearer
TOKEN``, compared with :func:`hmac.compare_digest`) *or* a verified client certificate
(mutual TLS) whose common name or one of whose SANs is in ``allow_identities``. A call with
neither credential, or a wrong token, gets ``UNAUTHENTICATED`` (gRPC: the request lacks
valid credentials); a verified certificate whose identity is not allowed, and no valid
token, gets ``PERMISSION_DENIED`` (gRPC: the caller is known but not permitted). The check
runs before anything else, so an unauthorised ``register(address=victim)`` evicts nobody.
``resolve`` and ``watch`` stay open unless ``protect_lookups=True``. The token is never
logged, nor put in an error message.

Wire API (service ``trio_micro.registry``): ``register`` (not idempotent), ``keep_alive``,
``deregister``, ``resolve`` (idempotent, so clients retry them) and ``watch``, a
server-stream of endpoint sets: the current one, then one per change.

After a restart the server knows nothing until the replicas' clients register again (each
does at its next renewal, at most ``ttl / 3`` later, or as soon as the server answers its
retries). For ``warmup`` seconds from the first call it serves (default
:data:`DEFAULT_WARMUP`), a ``watch`` reopened by a client that knew endpoints of the service
(``known``) and finding none holds its first answer until an entry appears or the warm-up
ends, so that the client keeps its last set meanwhile instead of being told the service
has no endpoints, which fail-fast channels would turn into ``UNAVAILABLE`` for the calls of
that window. A first-time watcher is answered at once, so an unknown service still fails
fast.

Log events (``registry.server.*``, distinct from the client's ``registry.endpoint.*``):
``registry.server.started``, ``registry.server.registered``,
``registry.server.deregistered``, ``registry.server.replaced``, ``registry.server.expired``.
"""

from __future__ import annotations

import heapq
import hmac
import math
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, final

import msgspec
import trio

from trio_micro import rpc
from trio_micro._validate import check_number

from ._types import (
    Endpoint,
    check_service,
    check_ttl,
    endpoint_list,
    log,
)

__all__ = [
    "DEFAULT_WARMUP",
    "RegistryServer",
    "RegistryService",
    "open_registry_server",
    "serve_registry",
]

#: The registry's wire name.
SERVICE_NAME: Final = "trio_micro.registry"

#: Seconds after a (re)start during which a reopened ``watch`` waits for the service's
#: replicas to register again (:class:`RegistryService`'s ``warmup``): a renewal interval
#: (``ttl / 3``) of replicas with the default TTL of 10 s, with room to spare.
DEFAULT_WARMUP: Final = 5.0

#: The most leases one server holds; a ``register`` beyond it gets ``RESOURCE_EXHAUSTED``,
#: so the server's state is bounded whatever its clients do.
MAX_LEASES: Final = 100_000

#: The metadata key that carries the registry token, as ``Bearer TOKEN``.
AUTHORIZATION: Final = "authorization"
_BEARER: Final = "Bearer "


def check_token(token: str | None) -> bytes | None:
    """The registry token as bytes (``None``: no token); a bad one raises, without showing it.

    Raises:
        TypeError: Not a str.
        ValueError: Empty, or with whitespace or control characters (it travels in
            metadata as ``Bearer TOKEN``; a token file's trailing newline is the caller's
            to strip).
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a str or None, got a {type(token).__name__}")
    if not token or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("token must be non-empty, printable and without whitespace")
    return token.encode()


def token_metadata(token: str | None) -> dict[str, str]:
    """The call metadata that presents ``token`` to a registry server (``{}`` for none)."""
    check_token(token)
    return {} if token is None else {AUTHORIZATION: _BEARER + token}


class RegisterRequest(msgspec.Struct):
    service: str
    address: str
    ttl: float
    metadata: dict[str, str] = {}


class LeaseGrant(msgspec.Struct):
    lease_id: int
    ttl: float


class LeaseRequest(msgspec.Struct):
    lease_id: int


class KeepAliveResponse(msgspec.Struct):
    ttl: float


class Empty(msgspec.Struct):
    pass


class ServiceRequest(msgspec.Struct):
    service: str
    # watch only: the client knew endpoints of the service before this stream (it is
    # reopening a broken one); see RegistryService.watch. Older clients send no field.
    known: bool = False


class EndpointRecord(msgspec.Struct, array_like=True):
    address: str
    metadata: dict[str, str]


class EndpointSet(msgspec.Struct):
    endpoints: list[EndpointRecord]


@dataclass(slots=True)
class _Lease:
    lease_id: int
    service: str
    endpoint: Endpoint
    ttl: float
    expires_at: float

    @property
    def address(self) -> str:
        return self.endpoint.address


def _invalid(exc: Exception) -> rpc.RpcError:
    return rpc.RpcError(rpc.Status.INVALID_ARGUMENT, str(exc))


def _records(endpoints: list[Endpoint]) -> EndpointSet:
    return EndpointSet([EndpointRecord(e.address, dict(e.metadata)) for e in endpoints])


class RegistryService(rpc.Service, name=SERVICE_NAME):
    """The registry's RPC service; serve it with :func:`open_registry_server`.

    One instance holds one registry's state; it may be served by one server at a time.

    Args:
        token: The shared token writers must present (see the module docs); ``None``: none.
        allow_identities: Client-certificate names (common name or SAN value) that may
            write without the token (mutual TLS).
        protect_lookups: ``resolve`` and ``watch`` need the same credentials too.
        warmup: Seconds, from the first call served, during which a reopened ``watch`` of a
            service with no entries waits for one (see the module docs); 0: none.

    Raises:
        TypeError / ValueError: A bad token (the message does not show it), identity or
            warmup.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        allow_identities: Iterable[str] = (),
        protect_lookups: bool = False,
        warmup: float = DEFAULT_WARMUP,
    ) -> None:
        self._token = check_token(token)
        self._warmup = check_number("warmup", warmup, unit="seconds", zero=True)
        # When the warm-up ends, on trio's clock: set by the first call served.
        self._warm_until: float | None = None
        identities = frozenset(allow_identities)
        for name in identities:
            if not isinstance(name, str) or not name:
                raise TypeError(f"allow_identities must hold non-empty strs, got {name!r}")
        self._identities = identities
        self._guarded = self._token is not None or bool(identities)
        self._protect_lookups = bool(protect_lookups) and self._guarded
        self._leases: dict[int, _Lease] = {}
        self._entries: dict[str, dict[str, int]] = {}
        self._changed: dict[str, trio.Event] = {}
        # (expiry, lease_id), one item per lease: the expiry it had when pushed, so an item
        # may be early (the lease was renewed since) or stale (the lease is gone).
        self._expiries: list[tuple[float, int]] = []
        # Lease ids are random so that a restarted server never takes a lease id a client
        # still holds from before the restart for one of its own.
        self._ids = random.Random()
        self._closed = False

    def _warming(self) -> float:
        """When the warm-up ends (the first call served starts it). Not a checkpoint."""
        if self._warm_until is None:
            self._warm_until = trio.current_time() + self._warmup
        return self._warm_until

    def close(self) -> None:
        """End every ``watch`` stream (clients reopen them elsewhere or later).

        Called when the server shuts down: watches never end by themselves, so a graceful
        shutdown would otherwise wait its whole grace period for them.
        """
        self._closed = True
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    # ------------------------------------------------------------------ credentials

    def _authorise(self) -> None:
        """Raise ``UNAUTHENTICATED`` / ``PERMISSION_DENIED`` unless the current call
        carries the token or an allowed client certificate; nothing when unguarded."""
        if not self._guarded:
            return
        call = rpc.current_call()
        presented = call.metadata.get(AUTHORIZATION, "")
        # Both sides as bytes: compare_digest takes only ASCII strs.
        if (
            self._token is not None
            and presented.startswith(_BEARER)
            and hmac.compare_digest(presented[len(_BEARER) :].encode(), self._token)
        ):
            return
        identity = call.peer_identity
        if identity is not None and self._identities:
            names = {identity.common_name, *(value for _, value in identity.sans)}
            if not self._identities.isdisjoint(names):
                return
            if not presented:
                raise rpc.RpcError(
                    rpc.Status.PERMISSION_DENIED,
                    f"client certificate {str(identity)!r} may not write to this registry",
                )
        if presented:
            raise rpc.RpcError(rpc.Status.UNAUTHENTICATED, "wrong registry token")
        raise rpc.RpcError(
            rpc.Status.UNAUTHENTICATED,
            "this registry needs a token (authorization metadata) or an allowed client certificate",
        )

    # ------------------------------------------------------------------ state

    def _notify(self, service: str) -> None:
        event = self._changed.pop(service, None)
        if event is not None:
            event.set()

    def _expire(self) -> None:
        """Drop the leases whose expiry has passed, and their entries; O(log n) each."""
        heap = self._expiries
        now = trio.current_time()
        while heap and heap[0][0] <= now:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None:
                continue  # deregistered or replaced: its item dies here
            if lease.expires_at > now:
                heapq.heappush(heap, (lease.expires_at, lease_id))  # renewed since
                continue
            self._drop(lease)
            log.info("registry.server.expired", service=lease.service, address=lease.address)
        if len(heap) > 2 * len(self._leases) + 64:
            # Items of deregistered leases wait for their time; don't let churn pile them up.
            self._expiries = [(lease.expires_at, i) for i, lease in self._leases.items()]
            heapq.heapify(self._expiries)

    def _drop(self, lease: _Lease) -> None:
        """Forget ``lease`` and remove its entry (if it still owns it), telling watchers."""
        self._leases.pop(lease.lease_id, None)
        entries = self._entries.get(lease.service, {})
        if entries.get(lease.address) == lease.lease_id:
            del entries[lease.address]
            if not entries:
                self._entries.pop(lease.service, None)
            self._notify(lease.service)

    def _snapshot(self, service: str) -> list[Endpoint]:
        self._expire()
        live = self._entries.get(service, {})
        return endpoint_list(
            {address: self._leases[lease_id].endpoint for address, lease_id in live.items()}
        )

    def _next_expiry(self, service: str) -> float:
        leases = (self._leases.get(i) for i in self._entries.get(service, {}).values())
        return min((lease.expires_at for lease in leases if lease is not None), default=math.inf)

    # ------------------------------------------------------------------ methods

    @rpc.unary
    async def register(self, req: RegisterRequest) -> LeaseGrant:
        self._authorise()
        try:
            service = check_service(req.service)
            endpoint = Endpoint(req.address, req.metadata)
            ttl = check_ttl(req.ttl)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        self._expire()
        previous = self._entries.get(service, {}).get(endpoint.address)
        if previous is None and len(self._leases) >= MAX_LEASES:
            raise rpc.RpcError(
                rpc.Status.RESOURCE_EXHAUSTED, f"the registry holds {MAX_LEASES} leases already"
            )
        if previous is not None:
            # The new registrant owns the entry now; the old lease ends, so that its holder,
            # if alive, learns at its next keep_alive (NOT_FOUND) and registers again.
            self._drop(self._leases[previous])
            log.warning(
                "registry.server.replaced",
                service=service,
                address=endpoint.address,
                lease_id=previous,
            )
        lease_id = self._ids.getrandbits(63)
        while lease_id in self._leases or not lease_id:
            lease_id = self._ids.getrandbits(63)
        lease = _Lease(lease_id, service, endpoint, ttl, trio.current_time() + ttl)
        self._leases[lease.lease_id] = lease
        heapq.heappush(self._expiries, (lease.expires_at, lease.lease_id))
        self._entries.setdefault(service, {})[endpoint.address] = lease.lease_id
        log.info(
            "registry.server.registered",
            service=service,
            address=endpoint.address,
            ttl=ttl,
            lease_id=lease.lease_id,
        )
        self._notify(service)
        return LeaseGrant(lease.lease_id, ttl)

    @rpc.unary(idempotent=True)
    async def keep_alive(self, req: LeaseRequest) -> KeepAliveResponse:
        self._authorise()
        self._expire()
        lease = self._leases.get(req.lease_id)
        if lease is None:
            # Expired, deregistered, replaced by another registrant, or a server restart.
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no lease {req.lease_id!r}")
        lease.expires_at = trio.current_time() + lease.ttl
        return KeepAliveResponse(lease.ttl)

    @rpc.unary(idempotent=True)
    async def deregister(self, req: LeaseRequest) -> Empty:
        self._authorise()
        self._expire()
        lease = self._leases.get(req.lease_id)
        if lease is not None:
            self._drop(lease)  # a lease owns its entry, so this removes nobody else's
            log.info("registry.server.deregistered", service=lease.service, address=lease.address)
        return Empty()

    @rpc.unary(idempotent=True)
    async def resolve(self, req: ServiceRequest) -> EndpointSet:
        if self._protect_lookups:
            self._authorise()
        try:
            service = check_service(req.service)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        return _records(self._snapshot(service))

    @rpc.server_stream
    async def watch(self, req: ServiceRequest) -> AsyncIterator[EndpointSet]:
        if self._protect_lookups:
            self._authorise()
        try:
            service = check_service(req.service)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        last: list[Endpoint] | None = None
        hold = req.known and trio.current_time() < self._warming()
        while not self._closed:
            changed = self._changed.setdefault(service, trio.Event())
            current = self._snapshot(service)
            if hold and not current and trio.current_time() < self._warming():
                # Restarted: the client keeps its last set while its replicas register again.
                with trio.move_on_at(self._warming()):
                    await changed.wait()
                continue
            hold = False
            if current != last:
                last = current
                yield _records(current)
                continue  # things may have changed while the item was being sent
            with trio.move_on_at(self._next_expiry(service)):
                await changed.wait()


@final
class RegistryServer:
    """A running registry server, as yielded by :func:`open_registry_server`.

    Attributes:
        service: The :class:`RegistryService` holding the state.
        server: The underlying :class:`rpc.Server`.
    """

    def __init__(self, service: RegistryService, server: rpc.Server) -> None:
        self.service = service
        self.server = server

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        host, port = self.server.address[:2]
        return host, port

    @property
    def target(self) -> str:
        """``"host:port"`` for :func:`~trio_micro.registry.open_registry_client`."""
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def __repr__(self) -> str:
        return f"<RegistryServer {self.target}>"


@asynccontextmanager
async def open_registry_server(
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow_identities: Iterable[str] = (),
    protect_lookups: bool = False,
    warmup: float = DEFAULT_WARMUP,
    **server_options: Any,
) -> AsyncIterator[RegistryServer]:
    """Run a registry server for the body of ``async with``.

    ::

        async with registry.open_registry_server(port=7000) as srv:
            async with registry.open_registry_client(srv.target) as reg:
                ...

    Args:
        host: What to bind (default loopback: the registry trusts its clients).
        port: The TCP port; 0 picks a free one (see :attr:`RegistryServer.address`).
        token / allow_identities / protect_lookups: Who may write (and read), as for
            :class:`RegistryService`; by default anyone.
        warmup: As for :class:`RegistryService`; it starts when the server listens.
        server_options: Passed to :func:`rpc.open_server` (``ssl_context``, limits, ...).

    Raises:
        TypeError / ValueError: A bad token, identity or warmup (before anything binds).
        OSError: Binding failed.
        BaseException: What the body raised, unwrapped, as from :func:`rpc.open_server`.
    """
    service = RegistryService(
        token=token,
        allow_identities=allow_identities,
        protect_lookups=protect_lookups,
        warmup=warmup,
    )
    async with rpc.open_server([service], host=host, port=port, **server_options) as server:
        service._warming()  # the warm-up runs from now
        registry_server = RegistryServer(service, server)
        log.info("registry.server.started", address=registry_server.target)
        try:
            yield registry_server
        finally:
            service.close()


async def serve_registry(
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[RegistryServer] = trio.TASK_STATUS_IGNORED,
    **server_options: Any,
) -> None:
    """Run a registry server until cancelled; for ``nursery.start``.

    ``task_status.started`` receives the :class:`RegistryServer` once it listens.
    Arguments as for :func:`open_registry_server`.
    """
    async with open_registry_server(host=host, port=port, **server_options) as server:
        task_status.started(server)
        await trio.sleep_forever()
