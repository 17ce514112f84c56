"""The registry server: service discovery as a service on trio_micro's own RPC.

The embedded default for one machine: ``trio-micro registry --port N``, or
:func:`open_registry_server` / :func:`serve_registry` inside a program; clients use
:func:`~trio_micro.registry.open_registry_client`.

Theory of operation
-------------------
State is two maps: ``lease_id -> _Lease`` (service, endpoint, TTL, expiry on trio's clock)
and ``service -> address -> lease_id`` (who owns each entry). ``register`` grants a fresh
lease and makes it the owner of the entry, replacing any earlier owner: a restarted replica
takes its address over at once instead of waiting for its dead lease to expire (the same
rule as etcd, design §8). The old lease stays valid but owns nothing, so its
``deregister`` or expiry can't remove the new entry. ``keep_alive`` pushes a lease's expiry
to ``now + ttl``; an unknown or expired lease answers ``NOT_FOUND`` and the client
registers again -- that is also how state lost in a server restart comes back (lease ids
are random 63-bit numbers, so a restarted server does not hand out ids that clients still
hold).

As in :class:`~trio_micro.registry.MemoryRegistry`, expiry is lazy: whoever looks
(``register``, ``resolve``, a watcher) drops expired entries first, and watchers park on a
per-service :class:`trio.Event` with a deadline at the earliest expiry, so there is no
background task and expiry is exact under ``MockClock``.

Wire API (service ``trio_micro.registry``): ``register`` (not idempotent), ``keep_alive``,
``deregister``, ``resolve`` (idempotent, so clients retry them) and ``watch``, a
server-stream of endpoint sets: the current one, then one per change.

Log events (``registry.server.*``, distinct from the client's ``registry.endpoint.*``):
``registry.server.started``, ``registry.server.registered``,
``registry.server.deregistered``, ``registry.server.expired``.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, final

import msgspec
import trio

from trio_micro import rpc

from ._types import (
    Endpoint,
    check_service,
    check_ttl,
    endpoint_list,
    log,
)

__all__ = [
    "RegistryServer",
    "RegistryService",
    "open_registry_server",
    "serve_registry",
]

#: The registry's wire name.
SERVICE_NAME: Final = "trio_micro.registry"


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


def _invalid(exc: Exception) -> rpc.RpcError:
    return rpc.RpcError(rpc.Status.INVALID_ARGUMENT, str(exc))


def _records(endpoints: list[Endpoint]) -> EndpointSet:
    return EndpointSet([EndpointRecord(e.address, dict(e.metadata)) for e in endpoints])


class RegistryService(rpc.Service, name=SERVICE_NAME):
    """The registry's RPC service; serve it with :func:`open_registry_server`.

    One instance holds one registry's state; it may be served by one server at a time.
    """

    def __init__(self) -> None:
        self._leases: dict[int, _Lease] = {}
        self._entries: dict[str, dict[str, int]] = {}
        self._changed: dict[str, trio.Event] = {}
        # Lease ids are random so that a restarted server never takes a lease id a client
        # still holds from before the restart for one of its own.
        self._ids = random.Random()
        self._closed = False

    def close(self) -> None:
        """End every ``watch`` stream (clients reopen them elsewhere or later).

        Called when the server shuts down: watches never end by themselves, so a graceful
        shutdown would otherwise wait its whole grace period for them.
        """
        self._closed = True
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    # ------------------------------------------------------------------ state

    def _notify(self, service: str) -> None:
        event = self._changed.pop(service, None)
        if event is not None:
            event.set()

    def _live(self, service: str) -> dict[str, int]:
        """The service's entries after dropping the expired ones."""
        entries = self._entries.get(service, {})
        now = trio.current_time()
        expired = [
            address
            for address, lease_id in entries.items()
            if (lease := self._leases.get(lease_id)) is None or lease.expires_at <= now
        ]
        for address in expired:
            self._leases.pop(entries.pop(address), None)
            log.info("registry.server.expired", service=service, address=address)
        if expired:
            self._notify(service)
        return entries

    def _snapshot(self, service: str) -> list[Endpoint]:
        live = self._live(service)
        return endpoint_list(
            {address: self._leases[lease_id].endpoint for address, lease_id in live.items()}
        )

    def _next_expiry(self, service: str) -> float:
        leases = (self._leases.get(i) for i in self._entries.get(service, {}).values())
        return min((lease.expires_at for lease in leases if lease is not None), default=math.inf)

    def _sweep(self) -> None:
        """Forget expired leases that own no entry (replaced ones)."""
        now = trio.current_time()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            lease = self._leases[lease_id]
            if self._entries.get(lease.service, {}).get(lease.endpoint.address) != lease_id:
                del self._leases[lease_id]

    # ------------------------------------------------------------------ methods

    @rpc.unary
    async def register(self, req: RegisterRequest) -> LeaseGrant:
        try:
            service = check_service(req.service)
            endpoint = Endpoint(req.address, req.metadata)
            ttl = check_ttl(req.ttl)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        self._sweep()
        self._live(service)
        lease_id = self._ids.getrandbits(63)
        while lease_id in self._leases or not lease_id:
            lease_id = self._ids.getrandbits(63)
        lease = _Lease(lease_id, service, endpoint, ttl, trio.current_time() + ttl)
        self._leases[lease.lease_id] = lease
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
        lease = self._leases.get(req.lease_id)
        now = trio.current_time()
        if lease is None or lease.expires_at <= now:
            if lease is not None:
                self._live(lease.service)  # drop it and tell the watchers
                self._leases.pop(req.lease_id, None)
            raise rpc.RpcError(rpc.Status.NOT_FOUND, f"no lease {req.lease_id!r}")
        lease.expires_at = now + lease.ttl
        return KeepAliveResponse(lease.ttl)

    @rpc.unary(idempotent=True)
    async def deregister(self, req: LeaseRequest) -> Empty:
        lease = self._leases.pop(req.lease_id, None)
        if lease is not None:
            entries = self._entries.get(lease.service, {})
            address = lease.endpoint.address
            if entries.get(address) == lease.lease_id:
                del entries[address]
                log.info("registry.server.deregistered", service=lease.service, address=address)
                self._notify(lease.service)
        return Empty()

    @rpc.unary(idempotent=True)
    async def resolve(self, req: ServiceRequest) -> EndpointSet:
        try:
            service = check_service(req.service)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        return _records(self._snapshot(service))

    @rpc.server_stream
    async def watch(self, req: ServiceRequest) -> AsyncIterator[EndpointSet]:
        try:
            service = check_service(req.service)
        except (TypeError, ValueError) as exc:
            raise _invalid(exc) from None
        last: list[Endpoint] | None = None
        while not self._closed:
            changed = self._changed.setdefault(service, trio.Event())
            current = self._snapshot(service)
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
    *, host: str | None = "127.0.0.1", port: int = 0, **server_options: Any
) -> AsyncIterator[RegistryServer]:
    """Run a registry server for the body of ``async with``.

    ::

        async with registry.open_registry_server(port=7000) as srv:
            async with registry.open_registry_client(srv.target) as reg:
                ...

    Args:
        host: What to bind (default loopback: the registry trusts its clients).
        port: The TCP port; 0 picks a free one (see :attr:`RegistryServer.address`).
        server_options: Passed to :func:`rpc.open_server` (``ssl_context``, limits, ...).

    Raises:
        OSError: Binding failed.
        BaseException: What the body raised, unwrapped, as from :func:`rpc.open_server`.
    """
    service = RegistryService()
    async with rpc.open_server([service], host=host, port=port, **server_options) as server:
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
