"""A registry on etcd v3, spoken through etcd's JSON gateway with httpx (for many machines).

Theory of operation
-------------------
Keys are ``<prefix>/<service>/<address>``; a value is the JSON object
``{"address": ..., "metadata": {...}}``. The gateway wants keys and values in base64 and
sends 64-bit integers as strings.

*Registering* grants a lease (``/v3/lease/grant``; etcd counts whole seconds and raises a
TTL below its minimum, 2 s by default) and puts the key with it (``/v3/kv/put``). A task in
the ``register`` context manager's nursery renews the lease (``/v3/lease/keepalive``) every
``ttl / 3`` seconds. When a renewal fails (etcd down, connection reset) it retries with
exponential backoff, never waiting longer than ``ttl / 3``; when a renewal reports the lease
gone (``TTL`` 0: it expired during an outage, or etcd lost its data), it logs
``registry.lease.lost`` and grants a new lease and puts the key again, so registrations come
back by themselves after etcd returns. A lease owns its key: after each successful renewal
the task reads the key (``keys_only``) and checks it is still attached to its lease; when
another registrant put the same address with its own lease (and perhaps revoked it, which
deleted the key), it logs ``registry.lease.lost`` and puts the key again with its lease,
so a takeover lasts at most ``ttl / 3``. Exiting revokes the lease (``/v3/lease/revoke``),
which deletes the key only if it still belongs to this lease: when another process
registered the same address since, its entry stays. A process that dies without exiting
leaves a lease nobody renews, and etcd deletes the key when the TTL runs out.

*Watching* lists the service's keys (``/v3/kv/range``) at revision ``R``, then reads a
watch stream from ``R + 1`` (``/v3/watch``) and applies its PUT and DELETE events, so no
change between the list and the watch is missed. The stream is read directly in the
``watch`` async generator with httpx's streaming response: no task and no nursery is held
across a ``yield`` (trio forbids that in async generators), so ``watch`` can be a plain
async iterator. When the watch is cancelled by etcd (``canceled``, typically because ``R + 1``
was compacted away while the consumer held an item), when the stream breaks, or when the
new watch reports a store revision below ``R`` (etcd came back without its data), the
generator lists again and starts a new watch; failures are retried with exponential backoff
(0.1 s doubling to 5 s, full jitter: :class:`~trio_micro.toolkit.Backoff`), keeping the
last known set meanwhile. The watch is opened when the consumer asks for the item after a
list, so a consumer that holds items long makes compaction more likely, not events lost.
Not detected: an etcd that lost its data *and* has already passed revision ``R`` again
when the watch is opened (a window of one request when the consumer iterates promptly).

*One-shot calls* (``resolve``, entering ``register``) make one attempt and raise
:class:`RegistryUnavailableError` when etcd can't be reached: nothing would tell the caller
that a retry loop was waiting on a wrong URL. Every httpx exception is translated at one
boundary (:meth:`EtcdRegistry._post` and the watch loop) and chained with ``from``.

About 750 lines in one module: the lease loop, the list-then-watch loop and the one httpx
boundary all speak the gateway's encoding (base64 keys, string integers) through the same
few helpers; a split along registering/watching would export those helpers between two
modules of one class. A candidate seam if it grows: the watch loop (``_watch_*``) alone.
"""

from __future__ import annotations

import base64
import math
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, cast, final
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from trio_micro import rpc
from trio_micro.protocol import DECODE_ERRORS
from trio_micro.toolkit import Backoff

from ._types import (
    Endpoint,
    Registration,
    RegistryBackendError,
    RegistryError,
    RegistryUnavailableError,
    check_address,
    check_registration,
    check_service,
    claim_registration,
    endpoint_list,
    log,
    log_changes,
    run_alongside,
)

__all__ = ["EtcdRegistry", "open_etcd_registry"]

DEFAULT_PREFIX: Final = "/trio_micro/services"
#: Connect, read and write timeouts of one-shot requests (seconds of real time).
_REQUEST_TIMEOUT: Final = httpx.Timeout(5.0)
#: A watch stream is quiet while nothing changes: no read timeout.
_WATCH_TIMEOUT: Final = httpx.Timeout(5.0, read=None)
#: How long exiting ``register`` may spend revoking the lease, even when cancelled.
_REVOKE_TIMEOUT: Final = 5.0
# gRPC codes that mean "try again later" rather than "you asked for something wrong".
_TRANSIENT_CODES: Final = frozenset({4, 10, 14})  # DEADLINE_EXCEEDED, ABORTED, UNAVAILABLE


# --- the gateway's JSON (int64 fields arrive as strings: decoded with strict=False) ---


class _Header(msgspec.Struct):
    revision: int = 0


class _KeyValue(msgspec.Struct):
    key: str
    value: str = ""
    lease: int = 0


class _Event(msgspec.Struct):
    kv: _KeyValue
    type: str = "PUT"


class _RangeResponse(msgspec.Struct):
    header: _Header
    kvs: list[_KeyValue] = msgspec.field(default_factory=list)


class _GrantResponse(msgspec.Struct):
    lease_id: int = msgspec.field(name="ID")
    ttl: int = msgspec.field(default=0, name="TTL")


class _KeepAliveResult(msgspec.Struct):
    ttl: int = msgspec.field(default=0, name="TTL")


class _Status(msgspec.Struct):
    code: int = 0
    message: str = ""


class _KeepAliveMessage(msgspec.Struct):
    result: _KeepAliveResult | None = None
    error: _Status | None = None


class _WatchResult(msgspec.Struct):
    header: _Header = msgspec.field(default_factory=_Header)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    events: list[_Event] = msgspec.field(default_factory=list)


class _WatchMessage(msgspec.Struct):
    result: _WatchResult | None = None
    error: _Status | None = None


class _ErrorBody(msgspec.Struct):
    message: str = ""
    code: int | None = None


class _Record(msgspec.Struct):
    """The value stored under each key."""

    address: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix`` (etcd's range_end)."""
    # Our prefixes end in "/", never in 0xff, so incrementing the last byte is enough.
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(slots=True)
class _Lease:
    lease_id: int
    ttl: int


@final
class EtcdRegistry:
    """A :class:`~trio_micro.registry.Registry` on etcd v3 (its JSON gateway, over httpx).

    The registry owns an :class:`httpx.AsyncClient` unless given one, and must be closed:
    use ``async with EtcdRegistry(url) as reg:`` or :func:`open_etcd_registry`, or call
    :meth:`aclose`. Creating it does no I/O and may happen outside ``trio.run``.

    Args:
        url: The etcd client URL, e.g. ``"http://127.0.0.1:2379"``.
        prefix: The key prefix under which services are kept (no trailing ``/``).
        client: An httpx client to use instead of a new one, e.g. for auth settings; it
            is not closed by :meth:`aclose`. The registry's own client ignores proxy
            environment variables (``trust_env=False``).
        ssl_context: For an ``https://`` URL: verify etcd with this client-side context
            (e.g. :func:`rpc.client_ssl_context(ca=...) <trio_micro.rpc.client_ssl_context>`,
            with ``certfile`` for etcd's ``--client-cert-auth``). Without it, https uses
            the system's CAs.

    Raises:
        TypeError / ValueError: ``url`` is not an ``http(s)://host[:port]`` URL, a bad
            ``prefix``, or ``ssl_context`` with an ``http://`` URL or with ``client``.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        client: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str like 'http://127.0.0.1:2379', got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like 'http://127.0.0.1:2379', got {url!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}")
        if not prefix.strip("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must be non-empty and not end in '/', got {prefix!r}")
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"client must be an httpx.AsyncClient or None, got {client!r}")
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
            if parts.scheme != "https" or client is not None:
                raise ValueError(
                    f"ssl_context needs an https:// url and no client, got {url!r}"
                    + (" and a client" if client is not None else "")
                )
        self._url = url.rstrip("/")
        self._prefix = prefix
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=_REQUEST_TIMEOUT, trust_env=False, verify=ssl_context or True
        )
        self._active: set[tuple[str, str]] = set()
        self._closed = False

    @property
    def url(self) -> str:
        """The etcd client URL (without a trailing ``/``)."""
        return self._url

    @property
    def prefix(self) -> str:
        """The key prefix."""
        return self._prefix

    def __repr__(self) -> str:
        return f"EtcdRegistry({self._url!r}, prefix={self._prefix!r})"

    async def aclose(self) -> None:
        """Close the registry (and its httpx client, if it made it). Idempotent.

        A checkpoint. Later calls raise :class:`trio.ClosedResourceError`.
        """
        self._closed = True
        if self._owns_client:
            await self._client.aclose()
        else:
            await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- keys and the one HTTP boundary ---

    def _service_prefix(self, service: str) -> bytes:
        return f"{self._prefix}/{service}/".encode()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} is closed")

    async def _post(self, path: str, body: Mapping[str, object]) -> bytes:
        """POST ``body`` as JSON to the gateway; return the body of a 200 answer."""
        self._check_open()
        url = self._url + path
        try:
            response = await self._client.post(url, content=msgspec.json.encode(body))
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(
                f"can't reach etcd at {self._url!r} ({type(exc).__name__}: {exc})"
            ) from exc
        if response.status_code != 200:
            raise _error_from_response(url, response.status_code, response.content)
        return response.content

    def _decode(self, path: str, content: bytes, into: type[Any]) -> Any:
        try:
            return msgspec.json.decode(content, type=into, strict=False)
        except msgspec.ValidationError as exc:
            raise RegistryBackendError(
                f"etcd at {self._url!r} answered {path} with an unexpected body "
                f"({exc}): {content[:200]!r}"
            ) from exc
        except DECODE_ERRORS as exc:
            raise RegistryBackendError(
                f"etcd at {self._url!r} answered {path} with invalid JSON: {content[:200]!r}"
            ) from exc

    # --- leases ---

    async def _grant_and_put(self, key: bytes, value: bytes, ttl: float) -> _Lease:
        content = await self._post("/v3/lease/grant", {"TTL": math.ceil(ttl)})
        grant: _GrantResponse = self._decode("/v3/lease/grant", content, _GrantResponse)
        lease = _Lease(grant.lease_id, grant.ttl or math.ceil(ttl))
        try:
            await self._post(
                "/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease.lease_id)}
            )
        except BaseException:
            await self._revoke(lease, why="put_failed")
            raise
        return lease

    async def _keep_alive_once(self, lease: _Lease) -> int:
        """Renew ``lease``; return the TTL etcd reports, 0 when the lease is gone."""
        content = await self._post("/v3/lease/keepalive", {"ID": str(lease.lease_id)})
        # A stream of one message: {"result": {...}} or {"error": {...}}.
        message: _KeepAliveMessage = self._decode(
            "/v3/lease/keepalive", content.split(b"\n", 1)[0], _KeepAliveMessage
        )
        if message.error is not None:
            raise _status_error(self._url, "/v3/lease/keepalive", message.error)
        return message.result.ttl if message.result is not None else 0

    async def _owns(self, key: bytes, lease: _Lease) -> bool:
        """Whether ``key`` exists and is attached to ``lease`` (one range request)."""
        content = await self._post("/v3/kv/range", {"key": _b64(key), "keys_only": True})
        answer: _RangeResponse = self._decode("/v3/kv/range", content, _RangeResponse)
        return any(kv.lease == lease.lease_id for kv in answer.kvs)

    async def _revoke(self, lease: _Lease, *, why: str) -> bool:
        """Revoke ``lease`` even when cancelled, within ``_REVOKE_TIMEOUT``.

        Returns whether the lease is gone; failures are logged, not raised.
        """
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _REVOKE_TIMEOUT
            try:
                await self._post("/v3/lease/revoke", {"ID": str(lease.lease_id)})
            except RegistryBackendError as exc:
                if exc.code == 5:  # NOT_FOUND: it expired already
                    return True
                log.warning("registry.deregister.failed", error=str(exc), reason=why)
                return False
            except (RegistryUnavailableError, trio.ClosedResourceError) as exc:
                log.warning("registry.deregister.failed", error=str(exc), reason=why)
                return False
        if scope.cancelled_caught:
            log.warning("registry.deregister.failed", error="timed out", reason=why)
            return False
        return True

    # --- the Registry protocol ---

    def register(
        self,
        service: str,
        address: str,
        *,
        ttl: float = 10.0,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Registration]:
        """Register ``address`` as a replica of ``service`` while the ``async with`` runs.

        See :meth:`Registry.register` for the arguments and the contract, and the module
        docs. Entering grants a lease of ``ceil(ttl)`` seconds (etcd may raise it to its
        minimum; the granted TTL is :attr:`Registration.ttl`) and puts the key: two
        requests, each a checkpoint. The keepalive task (``trio_micro.registry.keepalive``)
        runs in a nursery owned by the context manager and never raises: it logs and
        retries. Exiting revokes the lease, shielded from cancellation for up to 5 s; when
        that fails (etcd down) it logs ``registry.deregister.failed`` and the key expires
        with the lease. Exceptions from the body come out unwrapped.

        Raises:
            TypeError / ValueError: Bad arguments (raised by this call, before entering).
            DuplicateRegistrationError: On entry, when this registry already holds an open
                registration of ``service`` at ``address``.
            RegistryUnavailableError: On entry, when etcd can't be reached.
            RegistryBackendError: On entry, when etcd refuses the lease or the key.
            trio.ClosedResourceError: On entry, when the registry is closed.
        """
        return self._register(*check_registration(service, address, ttl, metadata))

    @asynccontextmanager
    async def _register(
        self, service: str, endpoint: Endpoint, ttl: float
    ) -> AsyncIterator[Registration]:
        self._check_open()
        with claim_registration(self._active, service, endpoint, owner=repr(self)):
            key = self._service_prefix(service) + endpoint.address.encode()
            value = msgspec.json.encode(_Record(endpoint.address, dict(endpoint.metadata)))
            lease = await self._grant_and_put(key, value, ttl)
            registration = Registration(service, endpoint, float(lease.ttl))
            log.info(
                "registry.endpoint.registered",
                service=service,
                address=endpoint.address,
                ttl=lease.ttl,
                lease_id=lease.lease_id,
                backend="etcd",
            )
            try:
                async with run_alongside(
                    self._keep_alive,
                    registration,
                    lease,
                    key,
                    value,
                    name="trio_micro.registry.keepalive",
                ):
                    yield registration
            finally:
                if not registration._abandoned and await self._revoke(lease, why="deregister"):
                    log.info(
                        "registry.endpoint.deregistered",
                        service=service,
                        address=endpoint.address,
                        backend="etcd",
                    )

    async def _keep_alive(
        self, registration: Registration, lease: _Lease, key: bytes, value: bytes
    ) -> None:
        interval = lease.ttl / 3
        backoff = Backoff(initial=min(0.1, interval), maximum=interval)
        delay = interval
        with registration._renewal_scope:
            while True:
                await trio.sleep(delay)
                try:
                    if await self._keep_alive_once(lease) == 0:
                        log.warning(
                            "registry.lease.lost",
                            service=registration.service,
                            address=registration.address,
                            lease_id=lease.lease_id,
                        )
                        new = await self._grant_and_put(key, value, registration.ttl)
                        lease.lease_id, lease.ttl = new.lease_id, new.ttl
                        restored = True
                    elif not await self._owns(key, lease):
                        # Another registrant put the key with its own lease (and may have
                        # revoked it since): the lease lives but owns nothing. Take it back.
                        log.warning(
                            "registry.lease.lost",
                            service=registration.service,
                            address=registration.address,
                            lease_id=lease.lease_id,
                            reason="key taken over",
                        )
                        await self._post(
                            "/v3/kv/put",
                            {"key": _b64(key), "value": _b64(value), "lease": str(lease.lease_id)},
                        )
                        restored = True
                    else:
                        restored = False
                    if restored:
                        log.info(
                            "registry.endpoint.registered",
                            service=registration.service,
                            address=registration.address,
                            ttl=lease.ttl,
                            lease_id=lease.lease_id,
                            backend="etcd",
                            restored=True,
                        )
                except RegistryError as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "registry.lease.renew_failed",
                        service=registration.service,
                        address=registration.address,
                        error=str(exc),
                        retry_in=round(delay, 3),
                    )
                else:
                    backoff.reset()
                    delay = interval

    async def _list(self, service: str) -> tuple[int, dict[str, Endpoint]]:
        """The service's endpoints by address, and the store revision they were read at."""
        prefix = self._service_prefix(service)
        content = await self._post(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        )
        answer: _RangeResponse = self._decode("/v3/kv/range", content, _RangeResponse)
        endpoints: dict[str, Endpoint] = {}
        for kv in answer.kvs:
            endpoint = _endpoint_from(service, prefix, kv)
            if endpoint is not None:
                endpoints[endpoint.address] = endpoint
        return answer.header.revision, endpoints

    async def resolve(self, service: str) -> list[Endpoint]:
        """Return the live endpoints of ``service``, sorted by address (``[]`` if none).

        One range request (a checkpoint), not retried. Keys under the service's prefix
        that do not hold a valid address and record are skipped and logged
        (``registry.endpoint.malformed``).

        Raises:
            TypeError / ValueError: Bad service name.
            RegistryUnavailableError: etcd can't be reached.
            RegistryBackendError: etcd answered with an error.
            trio.ClosedResourceError: The registry is closed.
        """
        service = check_service(service)
        _, endpoints = await self._list(service)
        return endpoint_list(endpoints)

    def watch(self, service: str) -> AsyncGenerator[list[Endpoint], None]:
        """Iterate over the endpoint sets of ``service``: the current one, then each change.

        See :meth:`Registry.watch` and the module docs (list, then watch from the next
        revision; list again after a cancelled or broken watch). The first item comes
        after the first successful list. etcd being unreachable or answering errors is
        logged (``registry.watch.retry``) and retried with backoff forever: bound the wait
        with :func:`trio.fail_after` if needed. While the generator is suspended at a
        ``yield`` it holds an open HTTP response (no task, no cancel scope); close it with
        :func:`contextlib.aclosing` to release the connection at once.

        Raises:
            TypeError / ValueError: Bad service name (on the first iteration).
            trio.ClosedResourceError: The registry is or gets closed.
        """
        return cast("AsyncGenerator[list[Endpoint], None]", self._watch(service, False))

    def watch_status(
        self, service: str
    ) -> AsyncGenerator[list[Endpoint] | rpc.ResolverStatus, None]:
        """As :meth:`watch`, and an ``rpc.ResolverStatus.unreachable(...)`` (``registry
        unreachable at URL: why``) each time listing or watching fails.

        What a channel follows (:class:`rpc.StatusResolver`).
        """
        return self._watch(service, True)

    async def _watch(
        self, service: str, statuses: bool
    ) -> AsyncGenerator[list[Endpoint] | rpc.ResolverStatus, None]:
        service = check_service(service)
        prefix = self._service_prefix(service)
        backoff = Backoff(initial=0.1, maximum=5.0)
        last: list[Endpoint] | None = None
        reason: str | None = None
        while True:
            try:
                revision, endpoints = await self._list(service)
                if reason is not None:
                    log.info("registry.watch.relist", service=service, reason=reason)
                current = endpoint_list(endpoints)
                if current != last:
                    log_changes(service, last, current)
                    last = current
                    yield list(current)
                request = {
                    "create_request": {
                        "key": _b64(prefix),
                        "range_end": _b64(_prefix_end(prefix)),
                        "start_revision": str(revision + 1),
                    }
                }
                self._check_open()
                async with self._client.stream(
                    "POST",
                    self._url + "/v3/watch",
                    content=msgspec.json.encode(request),
                    timeout=_WATCH_TIMEOUT,
                ) as response:
                    if response.status_code != 200:
                        raise _error_from_response(
                            self._url + "/v3/watch", response.status_code, await response.aread()
                        )
                    previous, reason = reason, "stream_ended"
                    lines = response.aiter_lines()
                    try:
                        async for line in lines:
                            if not line.strip():
                                continue
                            result = self._watch_result(line)
                            if result.canceled:
                                reason = "compacted" if result.compact_revision else "canceled"
                                log.warning(
                                    "registry.watch.canceled",
                                    service=service,
                                    compact_revision=result.compact_revision,
                                    cancel_reason=result.cancel_reason,
                                )
                                break
                            if result.created:
                                if result.header.revision < revision:
                                    # The store is behind what we listed: etcd lost its data
                                    # (restarted empty); revision R + 1 there is another story.
                                    reason = "store_behind"
                                    break
                                if previous != "canceled":
                                    # A watch etcd keeps cancelling must not reset the backoff.
                                    backoff.reset()
                            if not _apply(service, prefix, result.events, endpoints):
                                continue
                            current = endpoint_list(endpoints)
                            if current != last:
                                log_changes(service, last, current)
                                last = current
                                yield list(current)
                    finally:
                        await _finish(lines)
                if reason not in ("compacted", "store_behind"):
                    # etcd closed the stream or cancelled the watch for another reason:
                    # list again, but not in a tight loop.
                    await trio.sleep(backoff.next_delay())
            except (RegistryError, httpx.HTTPError) as exc:
                delay = backoff.next_delay()
                reason = "error"
                log.warning(
                    "registry.watch.retry",
                    service=service,
                    url=self._url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                )
                if statuses:
                    yield rpc.ResolverStatus.unreachable(
                        f"registry unreachable at {self._url}: {type(exc).__name__}: {exc}"
                    )
                await trio.sleep(delay)

    def _watch_result(self, line: str) -> _WatchResult:
        message: _WatchMessage = self._decode("/v3/watch", line.encode(), _WatchMessage)
        if message.error is not None:
            raise _status_error(self._url, "/v3/watch", message.error)
        if message.result is None:
            raise RegistryBackendError(
                f"etcd at {self._url!r} sent a watch message with no result: {line[:200]!r}"
            )
        return message.result


@asynccontextmanager
async def open_etcd_registry(
    url: str = "http://127.0.0.1:2379",
    *,
    prefix: str = DEFAULT_PREFIX,
    client: httpx.AsyncClient | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[EtcdRegistry]:
    """Open an :class:`EtcdRegistry` and close it (and its httpx client) on exit.

    Entering does no I/O (etcd is first contacted by the first call); exiting is a
    checkpoint. Arguments as for :class:`EtcdRegistry`.

    Raises:
        TypeError / ValueError: Bad arguments.
    """
    registry = EtcdRegistry(url, prefix=prefix, client=client, ssl_context=ssl_context)
    try:
        yield registry
    finally:
        await registry.aclose()


async def _finish(iterator: AsyncIterator[str]) -> None:
    """Finish a streaming response's line iterator, and the generators beneath it.

    httpx reads a response through about nine nested async generators (httpx, then
    httpcore). Closing only the outermost one, or abandoning it at a ``yield`` of ours,
    leaves the inner ones suspended for the garbage collector, and trio warns about each.
    Driving the iterator inside an already-cancelled scope instead makes the socket read
    at the bottom raise :class:`trio.Cancelled`, which unwinds and finishes every layer;
    httpcore closes the connection on the way (shielded). Lines already buffered are
    dropped. Not a checkpoint for the caller: the cancellation is caught here.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        async for _ in iterator:
            pass


def _apply(
    service: str, prefix: bytes, events: list[_Event], endpoints: dict[str, Endpoint]
) -> bool:
    """Apply watch events to ``endpoints``; return whether there were any."""
    for event in events:
        if event.type == "DELETE":
            address = base64.b64decode(event.kv.key)[len(prefix) :].decode(errors="replace")
            endpoints.pop(address, None)
        else:
            endpoint = _endpoint_from(service, prefix, event.kv)
            if endpoint is not None:
                endpoints[endpoint.address] = endpoint
    return bool(events)


def _endpoint_from(service: str, prefix: bytes, kv: _KeyValue) -> Endpoint | None:
    """The endpoint stored in ``kv``, or ``None`` (logged) when the key or value is bad."""
    key = base64.b64decode(kv.key)
    raw_address = key[len(prefix) :].decode(errors="replace")
    try:
        record = msgspec.json.decode(base64.b64decode(kv.value), type=_Record)
        address = check_address(raw_address)
        if address != raw_address:
            raise ValueError(f"key address {raw_address!r} is not in canonical form")
        return Endpoint(address, record.metadata)
    except (ValueError, TypeError, *DECODE_ERRORS) as exc:
        log.warning(
            "registry.endpoint.malformed",
            service=service,
            key=key.decode(errors="replace"),
            error=str(exc),
        )
        return None


def _error_from_response(url: str, status: int, content: bytes) -> RegistryError:
    try:
        body = msgspec.json.decode(content, type=_ErrorBody)
    except DECODE_ERRORS:
        body = _ErrorBody(message=content[:200].decode(errors="replace"))
    message = f"etcd answered {url} with HTTP {status}: {body.message!r}"
    if status in (502, 503, 504) or body.code in _TRANSIENT_CODES:
        return RegistryUnavailableError(message)
    return RegistryBackendError(message, code=body.code)


def _status_error(url: str, path: str, status: _Status) -> RegistryError:
    message = f"etcd at {url!r} answered {path} with error {status.code}: {status.message!r}"
    if status.code in _TRANSIENT_CODES:
        return RegistryUnavailableError(message)
    return RegistryBackendError(message, code=status.code)
