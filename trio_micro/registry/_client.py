"""The client of the registry server: a :class:`~trio_micro.registry.Registry` over RPC.

``register`` takes a lease from the server and renews it every ``ttl / 3`` seconds; when
the server no longer knows the lease (it expired while the server was unreachable, or the
server restarted with empty state) the client registers again (``registry.lease.lost``).
``watch`` reads the server's ``watch`` stream and reopens it with backoff when it breaks,
keeping the last set meanwhile; ``watch_status`` (what a channel uses:
:class:`rpc.StatusResolver <trio_micro.rpc.StatusResolver>`) also yields
``rpc.ResolverStatus.unreachable("registry unreachable at HOST:PORT: ...")`` for each
failed attempt, so that the channel's calls fail fast saying so (with ``UNAUTHENTICATED``
or ``PERMISSION_DENIED`` instead of ``UNAVAILABLE`` when the registry refuses the
lookup: ``protect_lookups``). RPC ``UNAVAILABLE`` becomes
:class:`~trio_micro.registry.RegistryUnavailableError`, any other failure
:class:`~trio_micro.registry.RegistryBackendError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from typing import Any, Final, TypeVar, cast, final

import trio

from trio_micro import rpc
from trio_micro.toolkit import Backoff

from ._server import (
    LeaseRequest,
    RegisterRequest,
    RegistryService,
    ServiceRequest,
    token_metadata,
)
from ._types import (
    Endpoint,
    Registration,
    RegistryBackendError,
    RegistryError,
    RegistryUnavailableError,
    check_registration,
    check_service,
    claim_registration,
    log,
    log_changes,
    run_alongside,
)

__all__ = ["RegistryClient", "open_registry_client"]

T = TypeVar("T")

# How long exiting a registration may spend deregistering (shielded from cancellation).
_DEREGISTER_TIMEOUT: Final = 5.0
# A registry that answers a watch with these refuses this client (--protect-lookups):
# the channel's calls fail with the same code, not UNAVAILABLE (the watch is retried).
_REFUSALS: Final = (rpc.Status.UNAUTHENTICATED, rpc.Status.PERMISSION_DENIED)
# Backoff of watch reconnects (seconds).
_WATCH_BACKOFF_INITIAL: Final = 0.1
_WATCH_BACKOFF_MAX: Final = 5.0


def _translate(exc: rpc.RpcError, what: str) -> RegistryError:
    if exc.code in (rpc.Status.UNAVAILABLE, rpc.Status.DEADLINE_EXCEEDED):
        return RegistryUnavailableError(f"{what}: {exc}")
    return RegistryBackendError(f"{what}: {exc}", code=int(exc.code))


@final
class RegistryClient:
    """A :class:`~trio_micro.registry.Registry` backed by a registry server.

    Made by :func:`open_registry_client`; valid inside its ``async with``.
    """

    def __init__(self, target: str, stub: RegistryService) -> None:
        self._target = target
        self._stub = stub
        self._active: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"RegistryClient({self._target!r})"

    async def _call(self, what: str, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except rpc.RpcError as exc:
            raise _translate(exc, f"{what} at registry {self._target}") from exc

    def register(
        self,
        service: str,
        address: str,
        *,
        ttl: float = 10.0,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Registration]:
        """Register ``address`` as a replica of ``service`` while the ``async with`` runs.

        See :meth:`Registry.register`. Entering is one RPC; the renewal task
        (``trio_micro.registry.keepalive``) runs in a nursery owned by the context manager
        and never raises: it logs and retries, and registers again if the server lost the
        lease. Exiting deregisters, shielded from cancellation for up to 5 s. Exceptions
        from the body come out unwrapped (see :meth:`Registry.register`).

        Raises:
            TypeError / ValueError: Bad arguments (raised by this call, before entering).
            DuplicateRegistrationError: On entry, when this client already holds an open
                registration of ``service`` at ``address``.
            RegistryUnavailableError: On entry, when the server can't be reached.
            RegistryBackendError: On entry, when the server refuses the registration.
        """
        return self._register(*check_registration(service, address, ttl, metadata))

    async def _grant(self, service: str, endpoint: Endpoint, ttl: float) -> int:
        request = RegisterRequest(service, endpoint.address, ttl, dict(endpoint.metadata))
        grant = await self._call(f"registering {service!r}", self._stub.register(request))
        return grant.lease_id

    @asynccontextmanager
    async def _register(
        self, service: str, endpoint: Endpoint, ttl: float
    ) -> AsyncIterator[Registration]:
        await trio.lowlevel.checkpoint()
        with claim_registration(self._active, service, endpoint, owner=repr(self)):
            lease = [await self._grant(service, endpoint, ttl)]
            registration = Registration(service, endpoint, ttl)
            log.info(
                "registry.endpoint.registered",
                service=service,
                address=endpoint.address,
                ttl=ttl,
                lease_id=lease[0],
                backend="registry",
            )
            try:
                async with run_alongside(
                    self._keep_alive, registration, lease, name="trio_micro.registry.keepalive"
                ):
                    yield registration
            finally:
                if not registration._abandoned:
                    await self._deregister(registration, lease[0])

    async def _deregister(self, registration: Registration, lease_id: int) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_DEREGISTER_TIMEOUT) as scope:
            try:
                await self._call("deregistering", self._stub.deregister(LeaseRequest(lease_id)))
            except RegistryError as exc:
                log.warning(
                    "registry.deregister.failed",
                    service=registration.service,
                    address=registration.address,
                    error=str(exc),
                )
                return
        if scope.cancelled_caught:
            log.warning(
                "registry.deregister.failed",
                service=registration.service,
                address=registration.address,
                error="timed out",
            )
            return
        log.info(
            "registry.endpoint.deregistered",
            service=registration.service,
            address=registration.address,
            backend="registry",
        )

    async def _keep_alive(self, registration: Registration, lease: list[int]) -> None:
        interval = registration.ttl / 3
        delay = interval
        with registration._renewal_scope:
            while True:
                await trio.sleep(delay)
                delay = interval
                try:
                    await self._stub.keep_alive(LeaseRequest(lease[0]))
                except rpc.RpcError as exc:
                    if exc.code is not rpc.Status.NOT_FOUND:
                        delay = min(interval, 0.5)
                        log.warning(
                            "registry.lease.renew_failed",
                            service=registration.service,
                            address=registration.address,
                            error=str(exc),
                            retry_in=delay,
                        )
                        continue
                    log.warning(
                        "registry.lease.lost",
                        service=registration.service,
                        address=registration.address,
                        lease_id=lease[0],
                    )
                    try:
                        lease[0] = await self._grant(
                            registration.service, registration.endpoint, registration.ttl
                        )
                    except RegistryError as again:
                        delay = min(interval, 0.5)
                        log.warning(
                            "registry.lease.renew_failed",
                            service=registration.service,
                            address=registration.address,
                            error=str(again),
                            retry_in=delay,
                        )

    async def resolve(self, service: str) -> list[Endpoint]:
        """Return the live endpoints of ``service``, sorted by address (``[]`` if none).

        One RPC (retried by the channel on ``UNAVAILABLE``, within the caller's deadline).

        Raises:
            TypeError / ValueError: Bad service name.
            RegistryUnavailableError: The server can't be reached.
            RegistryBackendError: The server answered with an error.
        """
        service = check_service(service)
        answer = await self._call(
            f"resolving {service!r}", self._stub.resolve(ServiceRequest(service))
        )
        return [Endpoint(record.address, record.metadata) for record in answer.endpoints]

    def watch(self, service: str) -> AsyncGenerator[list[Endpoint], None]:
        """Iterate over the endpoint sets of ``service``: the current one, then each change.

        See :meth:`Registry.watch`. When the stream breaks (server restart, network) it is
        reopened with backoff (``registry.watch.retry``), keeping the last set; a set that
        equals the last one is not yielded again. No task, no nursery.

        Raises:
            TypeError / ValueError: Bad service name (on the first iteration).
        """
        return cast("AsyncGenerator[list[Endpoint], None]", self._watch(service, False))

    def watch_status(
        self, service: str
    ) -> AsyncGenerator[list[Endpoint] | rpc.ResolverStatus, None]:
        """As :meth:`watch`, and an ``rpc.ResolverStatus.unreachable(...)`` (``registry
        unreachable at HOST:PORT: why``) each time opening the stream fails or it breaks.

        What a channel follows (:class:`rpc.StatusResolver`).
        """
        return self._watch(service, True)

    async def _watch(
        self, service: str, statuses: bool
    ) -> AsyncGenerator[list[Endpoint] | rpc.ResolverStatus, None]:
        service = check_service(service)
        await trio.lowlevel.checkpoint()
        last: list[Endpoint] | None = None
        backoff = Backoff(initial=_WATCH_BACKOFF_INITIAL, maximum=_WATCH_BACKOFF_MAX)
        while True:
            error: str
            code, refusal = rpc.Status.UNAVAILABLE, ""
            try:
                stream: Any = self._stub.watch(ServiceRequest(service, known=bool(last)))
                async with aclosing(stream) as items:
                    async for item in items:
                        backoff.reset()
                        current = [Endpoint(r.address, r.metadata) for r in item.endpoints]
                        if current != last:
                            log_changes(service, last, current)
                            last = current
                            yield list(current)
                error = "the watch stream ended"
            except rpc.RpcError as exc:
                if exc.code is rpc.Status.INVALID_ARGUMENT:
                    raise RegistryBackendError(str(exc), code=int(exc.code)) from exc
                error = str(exc)
                if exc.code in _REFUSALS:
                    code, refusal = exc.code, exc.message or exc.code.name
            wait = backoff.next_delay()
            log.info("registry.watch.retry", service=service, error=error, retry_in=round(wait, 3))
            if statuses:
                yield rpc.ResolverStatus.unreachable(
                    f"registry unreachable at {self._target}: {error}"
                    if not refusal
                    else f"the registry at {self._target} refused the lookup: {refusal}",
                    code,
                )
            await trio.sleep(wait)


@asynccontextmanager
async def open_registry_client(
    target: str, *, token: str | None = None, **channel_options: Any
) -> AsyncIterator[RegistryClient]:
    """Connect to a registry server for the body of ``async with``.

    ::

        async with registry.open_registry_client("127.0.0.1:7000") as reg:
            async with reg.register("users", "127.0.0.1:50051"):
                ...

    The connection is opened in the background; nothing waits for it on entry.

    Args:
        target: The server's ``"host:port"``.
        token: The registry's shared token, sent with every call (see
            :func:`open_registry_server`); ``None``: none. A server that wants one and
            gets none or a wrong one refuses ``register`` with ``UNAUTHENTICATED``
            (:class:`RegistryBackendError`).
        channel_options: Passed to :func:`rpc.open_channel` (``ssl_context``, ...).

    Raises:
        TypeError / ValueError: A bad target, token (not shown) or option.
        BaseException: What the body raised, unwrapped, as from :func:`rpc.open_channel`.
    """
    metadata = token_metadata(token)
    async with rpc.open_channel(target, **channel_options) as channel:
        yield RegistryClient(target, channel.stub(RegistryService, metadata=metadata))
