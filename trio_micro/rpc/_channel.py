"""The client side: :func:`open_channel` and :class:`Channel`.

A channel is three objects with one job each, all made by :func:`open_channel`:

* :class:`~._endpoints.EndpointPool` (``_endpoints.py``): the endpoints -- fixed, or followed
  live through a :class:`~trio_micro.rpc.Resolver` -- their connection slots with
  reconnect backoff, outlier ejection, and picking a ready connection;
* :class:`~._calls.Caller` (``_calls.py``): sending a call over a picked connection, with
  the deadline, and retries;
* the stubs (``_stubs.py``): typed methods and untyped calls by name, the client
  interceptors, encoding and decoding, :class:`ResponseStream`.

:class:`Channel` ties them together and is what callers hold: :meth:`Channel.stub`,
:meth:`Channel.call`, :meth:`Channel.call_stream`, :meth:`Channel.statistics`. Log events
are listed in ``_endpoints.py`` and ``_client.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final

from trio_micro._background import open_background_nursery
from trio_micro._validate import check_bool, check_encodable, check_int, check_seconds
from trio_micro.protocol import (
    DEFAULT_COMPRESSION_THRESHOLD,
    DEFAULT_MAX_FRAME_SIZE,
    SUPPORTED_COMPRESSION,
    Settings,
    check_compression,
    with_compression_hint,
)

from ._balancing import Balancer, OutlierEjection, PowerOfTwoChoices
from ._calls import Caller
from ._client_streams import StreamCall
from ._endpoints import ConnectOptions, EndpointPool
from ._interceptors import ClientInterceptor
from ._resolver import Resolver, ResolverStatus, resolver_context
from ._retry import RetryPolicy
from ._service import MethodInfo, Service
from ._stubs import ResponseStream, check_metadata, make_stub, unary_method
from ._transport import Endpoint

__all__ = [
    "Channel",
    "ChannelStatistics",
    "open_channel",
]

S = TypeVar("S", bound=Service)

_DEFAULT_RETRY: Final = RetryPolicy()
_DEFAULT_EJECTION: Final = OutlierEjection()


@final
@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of :meth:`Channel.statistics`.

    Attributes:
        endpoints: The addresses the channel connects to (sorted).
        slots: Connection slots (``pool_size`` per endpoint).
        ready: Connections ready for calls (ejected endpoints' excluded).
        outstanding: Calls in flight over the ready connections.
        ejected: The addresses currently ejected (sorted).
        retries: Calls retried after ``UNAVAILABLE`` so far.
        retries_throttled: Retries the retry budget refused so far.
    """

    endpoints: tuple[str, ...]
    slots: int
    ready: int
    outstanding: int
    ejected: tuple[str, ...] = ()
    retries: int = 0
    retries_throttled: int = 0


@final
class Channel:
    """Calls to one service -- fixed addresses, or a service name resolved live -- over a
    pool of multiplexed connections.

    Made by :func:`open_channel`; use :meth:`stub` to make calls.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        pool_size: int,
        options: ConnectOptions,
        interceptors: tuple[ClientInterceptor, ...],
        balancer: Balancer,
        *,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        ejection: OutlierEjection | None = _DEFAULT_EJECTION,
        service: str | None = None,
        discovery_timeout: float = 10.0,
        health_check: str | None = None,
        wait_for_ready: bool = False,
        compression: str | None = None,
    ) -> None:
        self._service = service
        self._compression = _check_choice(compression)
        self._balancer = balancer
        self._pool = EndpointPool(
            endpoints,
            pool_size,
            options,
            balancer,
            ejection,
            service,
            discovery_timeout,
            health_check,
            wait_for_ready,
        )
        self._caller = Caller(self._pool, balancer, interceptors, retry)

    def __repr__(self) -> str:
        if self._service is not None:
            return f"<rpc.Channel service={self._service!r}>"
        return f"<rpc.Channel {', '.join(map(str, self.endpoints))}>"

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints the channel currently connects to (in the order they came)."""
        return self._pool.endpoints

    @property
    def resolver_status(self) -> ResolverStatus:
        """How the resolution of the service stands: ``resolving``, ``resolved (n
        endpoints)`` or ``unreachable (why)`` (a channel to fixed addresses: resolved)."""
        return self._pool.status

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the pool (synchronous)."""
        pool = self._pool
        states = pool.states.values()
        ready = pool.ready
        budget = self._caller.budget
        return ChannelStatistics(
            endpoints=tuple(sorted(map(str, pool.states))),
            slots=sum(len(state.slots) for state in states),
            ready=len(ready),
            outstanding=sum(conn.outstanding for conn in ready),
            ejected=tuple(
                sorted(str(state.endpoint) for state in states if state.ejected_until is not None)
            ),
            retries=budget.retries if budget is not None else 0,
            retries_throttled=budget.throttled if budget is not None else 0,
        )

    def _metadata(
        self, metadata: Mapping[str, str] | None, compression: str | None
    ) -> dict[str, str] | None:
        """``metadata`` checked, with the compression hint of the call's choice (its own,
        else the channel's) when there is one."""
        return with_compression_hint(check_metadata(metadata), compression, self._compression)

    def stub(
        self,
        service: type[S],
        *,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> S:
        """Return a client for ``service`` whose methods make calls over this channel.

        The stub has the service's type, so type checkers check requests and know the
        results: ``await users.get_user(GetUserRequest(user_id=1))`` is a ``User``, and a
        server-stream method returns an async iterator of items (a :class:`ResponseStream`
        at run time). Each call checks the request's type (``TypeError``) before sending.

        Args:
            service: The :class:`Service` subclass (the class, not an instance).
            metadata: Sent with every call of this stub (string pairs).
            compression: The encoding of this stub's calls, both ways (``"zlib"``,
                ``"none"``, ...), instead of the channel's; ``None``: the channel's.

        Raises:
            TypeError: ``service`` is not a Service subclass, or bad metadata.
            ValueError: An unknown ``compression``.
        """
        if not (isinstance(service, type) and issubclass(service, Service)) or (service is Service):
            raise TypeError(f"service must be an rpc.Service subclass, got {service!r}")
        return make_stub(self._caller, service, self._metadata(metadata, compression))

    async def call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool = False,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> Any:
        """Make an untyped unary call by name: ``await channel.call("users/get_user", {...})``.

        For tools that know a method only at run time (``trio-micro call``, load
        generators, gateways): the request is any msgpack-encodable value -- a dict with
        the request struct's field names -- and the response comes back as plain dicts,
        lists and scalars. The server validates the request as for a typed stub (bad
        fields: ``INVALID_ARGUMENT`` naming the field). Deadlines, cancellation,
        interceptors, balancing and retries work as for stub calls. A checkpoint.

        Args:
            method: ``"<service>/<method>"``, as listed by the reflection service.
            request: The request, e.g. ``{"user_id": 1}``.
            idempotent: Retry on ``UNAVAILABLE`` as for an idempotent method.
            metadata: Sent with the call (string pairs).
            compression: This call's encoding, both ways; ``None``: the channel's.

        Raises:
            RpcError: The server's status, or ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` /
                ``CANCELLED`` as for stub calls.
            TypeError: ``request`` cannot be encoded, ``idempotent`` is not a bool, or bad
                metadata.
            ValueError: ``method`` is not ``"<service>/<method>"``, or an unknown
                ``compression``.
        """
        info = MethodInfo.untyped(method, "unary", idempotent)
        return await unary_method(self._caller, info, self._metadata(metadata, compression))(
            request
        )

    def call_stream(
        self,
        method: str,
        request: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> ResponseStream[Any]:
        """Open an untyped server-stream call by name; items come back as plain values.

        The counterpart of :meth:`call` for ``@rpc.server_stream`` methods; the result is a
        :class:`ResponseStream` like a stub's (nothing is sent until it is iterated).

        Raises:
            TypeError: ``request`` cannot be encoded, or bad metadata.
            ValueError: ``method`` is not ``"<service>/<method>"``.
        """
        info = MethodInfo.untyped(method, "server_stream")
        return ResponseStream(
            self._caller,
            info,
            check_encodable("request", request),
            self._metadata(metadata, compression),
        )

    def stream_call(
        self,
        method: str,
        *,
        bidi: bool,
        metadata: Mapping[str, str] | None = None,
        compression: str | None = None,
    ) -> StreamCall[Any, Any]:
        """Open an untyped client-stream (``bidi=False``) or bidi-stream call by name.

        The counterpart of :meth:`call` for ``@rpc.client_stream`` / ``@rpc.bidi_stream``
        methods: ``async with channel.stream_call(...) as (send, receive)``, sending and
        receiving plain values (nothing is sent until ``async with``).

        Raises:
            TypeError: ``bidi`` is not a bool, or bad metadata (an item that can't be
                encoded: from ``send``).
            ValueError: ``method`` is not ``"<service>/<method>"``.
        """
        info = MethodInfo.untyped(
            method, "bidi_stream" if check_bool("bidi", bidi) else "client_stream"
        )
        return StreamCall(self._caller, info, self._metadata(metadata, compression))


def _check_choice(compression: str | None) -> str | None:
    """A compression choice as the hint sends it: ``None`` (no choice), ``"none"`` or an
    encoding; ``ValueError`` / ``TypeError`` from ``check_compression`` otherwise."""
    check_compression(compression)
    return compression


def _endpoints(target: str | Endpoint | Sequence[str | Endpoint]) -> list[Endpoint]:
    items = [target] if isinstance(target, str | Endpoint) else target
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"target must be an address or a non-empty list of them, got {target!r}")
    return [item if isinstance(item, Endpoint) else Endpoint.parse(item) for item in items]


def _check_health_check(name: object) -> str | None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"health_check must be a service name (str) or None, got {name!r}")
    return name


@asynccontextmanager
async def open_channel(
    target: str | Endpoint | Sequence[str | Endpoint],
    *,
    registry: Resolver | None = None,
    pool_size: int = 1,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    interceptors: Sequence[ClientInterceptor] = (),
    balancer: Balancer | None = None,
    retry: RetryPolicy | None = _DEFAULT_RETRY,
    outlier_ejection: OutlierEjection | None = _DEFAULT_EJECTION,
    discovery_timeout: float = 10.0,
    handshake_timeout: float = 20.0,
    keepalive_interval: float = 30.0,
    keepalive_timeout: float = 20.0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    initial_stream_credit: int = 64,
    health_check: str | None = None,
    wait_for_ready: bool = False,
    compression: str | None = None,
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
) -> AsyncIterator[Channel]:
    """Open a channel to a server, several replicas of one, or a service found in a registry.

    ::

        async with rpc.open_channel("127.0.0.1:50051") as channel:
            users = channel.stub(UserService)
            user = await users.get_user(GetUserRequest(user_id=1))

        async with rpc.open_channel("users", registry=reg) as channel:  # any Registry
            ...

        async with rpc.open_channel("etcd://127.0.0.1:2379/users") as channel:
            ...  # needs `import trio_micro.registry` somewhere (it registers the schemes)

    Connections are opened in the background (the ``async with`` does not wait for them);
    the first calls wait while they connect, and fail with ``UNAVAILABLE`` if every
    connection attempt failed. With a registry the channel watches the service and adds
    and drains endpoints as they come and go. Calls *fail fast* (gRPC's semantics): they
    wait only while a connection or the first resolution is under way, and fail at once
    with ``UNAVAILABLE`` saying why when the registry is unreachable (``service 'users':
    registry unreachable at ...``), the service has no endpoints (``service 'users' has no
    endpoints``), or every connection attempt failed. With ``wait_for_ready=True`` (or in
    :func:`rpc.wait_for_ready() <trio_micro.rpc.wait_for_ready>`) they wait instead, until
    a connection is ready or their deadline cancels them; a wait for a service to have
    endpoints lasts at most ``discovery_timeout``. Leaving the block closes the
    connections; calls still pending in other tasks fail with ``RpcError(CANCELLED)``. No
    task outlives the block.

    Args:
        target: ``"host:port"``, an :class:`Endpoint`, or a list of them (calls are
            balanced over all); a service name with ``registry=``; or
            ``"<scheme>://<authority>/<service>"`` for a scheme registered with
            :func:`register_resolver` (``etcd://``, ``registry://``).
        registry: A :class:`Resolver` (any ``trio_micro.registry.Registry``) to look the
            service ``target`` up in. The channel does not close it.
        pool_size: Connections per address. One multiplexed connection carries any number
            of concurrent calls, and in a single-threaded trio program it batches best;
            more help when one connection's socket is the bottleneck.
        ssl_context: Use TLS with this client-side context: to the endpoints and, for a
            ``"<scheme>://..."`` target, to the registry behind it (``registry://`` over
            TLS, ``etcd://`` at ``https://``); a scheme whose resolver can't use TLS is
            refused (``ValueError``) rather than reached in plain text.
        server_hostname: The name to verify the certificate against (default: the host).
        interceptors: :class:`ClientInterceptor` objects wrapped around every call, the
            first outermost.
        balancer: Chooses the connection per call; default :class:`PowerOfTwoChoices`.
        retry: How idempotent calls are retried on ``UNAVAILABLE``, and any call refused by
            admission control (``max_inflight``, rate limits) on another endpoint; ``None``:
            never.
        outlier_ejection: When failing endpoints are set aside; ``None``: never.
        discovery_timeout: Longest a call waits for a service to have endpoints (seconds):
            while the first resolution is under way, or when waiting for ready.
        handshake_timeout: Seconds to connect, TLS-handshake and exchange HELLOs.
        keepalive_interval: Seconds without receiving anything after which the client PINGs
            the server (default 30; ``math.inf``: off). On by default so that a connection
            to a peer that stopped answering (a SIGSTOPped or partitioned replica, a
            half-open TCP connection) is dropped within ``keepalive_interval +
            keepalive_timeout`` (50 s by default) of silence, instead of never. 30 s is six
            times the server's default ``min_ping_interval`` (5 s): keep it above that, or
            the server answers GOAWAY (ENHANCE_YOUR_CALM). An idle connection costs one
            PING and its PONG per 30 s.
        keepalive_timeout: Seconds to wait for an answer to a PING before dropping the
            connection (its calls fail with ``UNAVAILABLE``).
        max_frame_size: Largest frame this side accepts (bytes).
        initial_stream_credit: Items a server-stream may send ahead of the consumer.
        health_check: Watch this service's health on every connection (``""``: the whole
            server; gRPC's health protocol, docs/rpc.md §13) and pick no endpoint that is
            not ``SERVING``; when none is, calls fail with ``UNAVAILABLE``. ``None`` (the
            default): don't watch.
        wait_for_ready: Calls wait through transient failure (no endpoints, registry
            unreachable, every connection failing, none ``SERVING``) instead of failing
            fast; :func:`rpc.wait_for_ready() <trio_micro.rpc.wait_for_ready>` overrides it
            per call.
        compression: The encoding of every call's payloads, both ways (``"zlib"``;
            ``"zstd"`` with the ``zstd`` extra; ``"none"``), unless a stub or call says
            otherwise; ``None`` (the default): none from this side, and the server's own
            default for its answers. Used only with servers that accept it, and only for
            payloads of at least ``compression_threshold`` bytes. The channel always
            accepts every encoding it supports; docs/rpc.md §16.
        compression_threshold: Requests and stream items shorter than this many bytes are
            sent uncompressed, whatever the encoding (default 1 KiB,
            ``protocol.DEFAULT_COMPRESSION_THRESHOLD``; 0: compress every payload that gets
            smaller). The server's answers follow the server's own threshold.

    Raises:
        TypeError / ValueError: A bad argument, or an unknown target scheme.
        BaseException: What the body raised comes out unwrapped (not in a group) when the
            channel's background tasks did not fail (:func:`trio_micro.open_background_nursery`).
        BaseExceptionGroup: A background task failed, e.g. a ``TypeError`` /
            ``ValueError`` from the registry's ``watch`` (a service name it refuses); with
            the body's exception too, if it raised.
    """
    service: str | None = None
    opener: AbstractAsyncContextManager[Resolver] | None = None
    endpoints: list[Endpoint] = []
    if registry is not None:
        if not isinstance(registry, Resolver):
            raise TypeError(f"registry must be an rpc.Resolver (e.g. a Registry), got {registry!r}")
        if not isinstance(target, str) or "://" in target or not target:
            raise ValueError(f"with registry=, target must be a service name, got {target!r}")
        service = target
    check_int("pool_size", pool_size, minimum=1)
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
    if registry is None:
        if isinstance(target, str) and (opener := resolver_context(target, ssl_context)):
            service = target.rpartition("/")[2]
        else:
            endpoints = _endpoints(target)
    if not isinstance(interceptors, Sequence) or not all(
        isinstance(i, ClientInterceptor) for i in interceptors
    ):
        raise TypeError(
            f"interceptors must be a sequence of rpc.ClientInterceptor, got {interceptors!r}"
        )
    if balancer is not None and not isinstance(balancer, Balancer):
        raise TypeError(f"balancer must be an rpc.Balancer, got {balancer!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be an rpc.RetryPolicy or None, got {retry!r}")
    if outlier_ejection is not None and not isinstance(outlier_ejection, OutlierEjection):
        raise TypeError(
            f"outlier_ejection must be an rpc.OutlierEjection or None, got {outlier_ejection!r}"
        )
    settings = Settings(
        max_frame_size=check_int("max_frame_size", max_frame_size),
        initial_stream_credit=check_int("initial_stream_credit", initial_stream_credit, minimum=1),
        compression=SUPPORTED_COMPRESSION,
    )
    options = ConnectOptions(
        settings,
        ssl_context,
        server_hostname,
        check_seconds("handshake_timeout", handshake_timeout, finite=True),
        check_seconds("keepalive_interval", keepalive_interval),
        check_seconds("keepalive_timeout", keepalive_timeout, finite=True),
        check_int("compression_threshold", compression_threshold, minimum=0),
    )
    channel = Channel(
        endpoints,
        pool_size,
        options,
        tuple(interceptors),
        balancer or PowerOfTwoChoices(),
        retry=retry,
        ejection=outlier_ejection,
        service=service,
        discovery_timeout=check_seconds("discovery_timeout", discovery_timeout),
        health_check=_check_health_check(health_check),
        wait_for_ready=check_bool("wait_for_ready", wait_for_ready),
        compression=compression,
    )
    async with AsyncExitStack() as stack:
        resolver = registry
        if opener is not None:
            resolver = await stack.enter_async_context(opener)
        async with open_background_nursery() as nursery:
            channel._pool.start(nursery, resolver)
            try:
                yield channel
            finally:
                channel._pool.close()
                nursery.cancel_scope.cancel()
