"""The client side: :func:`open_channel`, :class:`Channel`, typed stubs, response streams.

Theory of operation
-------------------
A channel keeps a set of *endpoints* -- fixed, or followed live through a
:class:`~trio_micro.rpc.Resolver` (any registry) -- and ``pool_size`` connection *slots*
per endpoint. Each slot is one task that connects, runs the connection until it ends, and
connects again -- at once after a connection that worked for a while, otherwise after an
exponential backoff with jitter (gRPC's: 1 s, x1.6 per attempt, +-20 %, at most 120 s).
With a resolver, one more task watches the service: a new endpoint gets its slots started,
a removed one is *drained* (no new calls; its connections close once their calls are done,
at most ``_DRAIN_TIMEOUT`` later).

Ready connections sit in one list; a call takes one through the :class:`Balancer`
(:class:`PowerOfTwoChoices` by default) without awaiting anything, so the channel adds a
list index and a counter or two to the cost of a call. When no connection is ready a call
waits while some slot is still connecting, and fails fast with ``UNAVAILABLE`` (naming the
addresses and why) once every slot has failed its last attempt -- like gRPC without
``wait_for_ready``. A service that has no endpoints yet is waited for, up to the call's
deadline or ``discovery_timeout``, whichever comes first; then ``UNAVAILABLE`` names it.

Outlier ejection (:class:`OutlierEjection`): each endpoint counts connection failures and
``UNAVAILABLE`` call results in a row; at the limit its connections leave the ready list
for the ejection time, restored by a short task that sleeps until then. When every
non-ejected connection is gone the ejected ones are used rather than failing.

Retries (:mod:`._retry`): calls refused by a server's GOAWAY (never processed) are retried
at once on another connection, for any method. Idempotent unary calls failing with
``UNAVAILABLE`` are retried with jittered backoff under the deadline and the retry
budget, preferring another endpoint.

Deadlines: each call sends the time left in the caller's effective deadline
(:func:`trio.current_effective_deadline`), rounded *up* to the millisecond so the server's
deadline never fires before the caller's. Cancellation: see :mod:`._client`.

Log events: ``rpc.channel.connect_failed``, ``rpc.channel.connected``,
``rpc.channel.connection_lost``, ``rpc.channel.protocol_error``,
``rpc.channel.keepalive_timeout``, ``rpc.channel.goaway``, ``rpc.channel.endpoint_ejected``,
``rpc.channel.endpoint_restored``, ``rpc.channel.bad_address``,
``rpc.channel.resolver_failed``.
"""

from __future__ import annotations

import math
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast, final

import msgspec
import structlog
import trio

from trio_micro._validate import check_int, check_seconds, check_str_mapping
from trio_micro.protocol import DEFAULT_MAX_FRAME_SIZE, Settings, Status

from ._balancing import Balancer, OutlierEjection, PowerOfTwoChoices
from ._client import ClientConnection, RefusedError, _Call, connect
from ._context import ClientCall
from ._errors import RpcError
from ._interceptors import ClientInterceptor
from ._resolver import ResolvedEndpoint, Resolver, split_target
from ._retry import RetryBudget, RetryPolicy
from ._service import MethodInfo, MethodKind, Service
from ._transport import Endpoint

__all__ = [
    "Channel",
    "ChannelStatistics",
    "ResponseStream",
    "open_channel",
]

log = structlog.get_logger("rpc")

S = TypeVar("S", bound=Service)
T = TypeVar("T")

_encode: Final = msgspec.msgpack.Encoder().encode
# How many attempts a call refused by GOAWAY (never processed) gets, on other connections.
_MAX_REFUSED_RETRIES: Final = 5
# gRPC's connection backoff (doc/connection-backoff.md).
_BACKOFF_INITIAL: Final = 1.0
_BACKOFF_MULTIPLIER: Final = 1.6
_BACKOFF_JITTER: Final = 0.2
_BACKOFF_MAX: Final = 120.0
# How long the connections of a removed endpoint may take to finish their calls.
_DRAIN_TIMEOUT: Final = 30.0
# How long before the caller's deadline a call waiting for endpoints gives up.
_DEADLINE_MARGIN: Final = 0.001
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


class _Backoff:
    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current = _BACKOFF_INITIAL

    def reset(self) -> None:
        self._current = _BACKOFF_INITIAL

    def next_delay(self) -> float:
        delay = self._current * (1 + random.uniform(-_BACKOFF_JITTER, _BACKOFF_JITTER))
        self._current = min(self._current * _BACKOFF_MULTIPLIER, _BACKOFF_MAX)
        return delay


@final
class _EndpointState:
    """One endpoint: its slots, its metadata, and its outlier-ejection record."""

    __slots__ = (
        "ejected_until",
        "ejections",
        "endpoint",
        "failures",
        "metadata",
        "removed",
        "slots",
    )

    def __init__(self, endpoint: Endpoint, metadata: Mapping[str, str], pool_size: int) -> None:
        self.endpoint = endpoint
        self.metadata = dict(metadata)
        self.slots = [_Slot(self) for _ in range(pool_size)]
        self.failures = 0  # connection failures or UNAVAILABLE results in a row
        self.ejections = 0
        self.ejected_until: float | None = None
        self.removed = False

    def gone(self) -> bool:
        # A method, not the attribute: mypy would keep it narrowed across awaits.
        return self.removed


@final
class _Slot:
    __slots__ = ("connection", "error", "failed", "scope", "state")

    def __init__(self, state: _EndpointState) -> None:
        self.state = state
        self.connection: ClientConnection | None = None
        self.failed = False  # the last attempt failed; now backing off
        self.error: RpcError | None = None
        self.scope = trio.CancelScope()

    @property
    def endpoint(self) -> Endpoint:
        return self.state.endpoint


@final
@dataclass(frozen=True, slots=True)
class _Options:
    settings: Settings
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    handshake_timeout: float
    keepalive_interval: float
    keepalive_timeout: float


def _timeout_ms() -> int | None:
    deadline = trio.current_effective_deadline()
    if deadline == math.inf:
        return None
    return max(0, math.ceil((deadline - trio.current_time()) * 1000))


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
        options: _Options,
        interceptors: tuple[ClientInterceptor, ...],
        balancer: Balancer,
        *,
        retry: RetryPolicy | None = _DEFAULT_RETRY,
        ejection: OutlierEjection | None = _DEFAULT_EJECTION,
        service: str | None = None,
        discovery_timeout: float = 10.0,
    ) -> None:
        self._pool_size = pool_size
        self._options = options
        self._interceptors = interceptors
        self._balancer = balancer
        self._retry = retry
        self._budget = RetryBudget(retry) if retry is not None else None
        self._rng = random.Random()
        self._ejection = ejection
        self._service = service
        self._discovery_timeout = discovery_timeout
        self._states: dict[Endpoint, _EndpointState] = {}
        self._initial = list(endpoints)
        self._resolved = service is None  # a resolver has given its first set
        self._resolver_error: str | None = None
        self._ready: list[ClientConnection] = []
        self._in_flight = 0  # unary calls waiting for an answer (see _unary)
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._closed = False

    def __repr__(self) -> str:
        if self._service is not None:
            return f"<rpc.Channel service={self._service!r}>"
        return f"<rpc.Channel {', '.join(map(str, self.endpoints))}>"

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints the channel currently connects to (in the order they came)."""
        if self._nursery is None:
            return tuple(self._initial)
        return tuple(self._states)

    def statistics(self) -> ChannelStatistics:
        """Return a snapshot of the pool (synchronous)."""
        states = self._states.values()
        budget = self._budget
        return ChannelStatistics(
            endpoints=tuple(sorted(map(str, self._states))),
            slots=sum(len(state.slots) for state in states),
            ready=len(self._ready),
            outstanding=sum(conn.outstanding for conn in self._ready),
            ejected=tuple(
                sorted(str(state.endpoint) for state in states if state.ejected_until is not None)
            ),
            retries=budget.retries if budget is not None else 0,
            retries_throttled=budget.throttled if budget is not None else 0,
        )

    def stub(self, service: type[S], *, metadata: Mapping[str, str] | None = None) -> S:
        """Return a client for ``service`` whose methods make calls over this channel.

        The stub has the service's type, so type checkers check requests and know the
        results: ``await users.get_user(GetUserRequest(user_id=1))`` is a ``User``, and a
        server-stream method returns an async iterator of items (a :class:`ResponseStream`
        at run time). Each call checks the request's type (``TypeError``) before sending.

        Args:
            service: The :class:`Service` subclass (the class, not an instance).
            metadata: Sent with every call of this stub (string pairs).

        Raises:
            TypeError: ``service`` is not a Service subclass, or bad metadata.
        """
        if not (isinstance(service, type) and issubclass(service, Service)) or (service is Service):
            raise TypeError(f"service must be an rpc.Service subclass, got {service!r}")
        fixed = _check_metadata(metadata)
        proxy = _Stub(service.__rpc_name__)
        for attr, info in service.__rpc_methods__.items():
            method = (
                self._unary_method(info, fixed)
                if info.kind == "unary"
                else self._stream_method(info, fixed)
            )
            setattr(proxy, attr, method)
        return cast(S, proxy)

    async def call(
        self,
        method: str,
        request: Any,
        *,
        idempotent: bool = False,
        metadata: Mapping[str, str] | None = None,
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

        Raises:
            RpcError: The server's status, or ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` /
                ``CANCELLED`` as for stub calls.
            TypeError: ``request`` cannot be encoded, or bad metadata.
            ValueError: ``method`` is not ``"<service>/<method>"``.
        """
        info = _untyped(method, "unary", idempotent)
        return await self._unary_method(info, _check_metadata(metadata))(request)

    def call_stream(
        self,
        method: str,
        request: Any,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ResponseStream[Any]:
        """Open an untyped server-stream call by name; items come back as plain values.

        The counterpart of :meth:`call` for ``@rpc.server_stream`` methods; the result is a
        :class:`ResponseStream` like a stub's (nothing is sent until it is iterated).

        Raises:
            TypeError: ``request`` cannot be encoded, or bad metadata.
            ValueError: ``method`` is not ``"<service>/<method>"``.
        """
        info = _untyped(method, "server_stream", False)
        return ResponseStream(self, info, _encodable(request), _check_metadata(metadata))

    # ------------------------------------------------------------------ endpoints

    def _start(self, nursery: trio.Nursery, resolver: Resolver | None) -> None:
        self._nursery = nursery
        for endpoint in self._initial:
            if endpoint not in self._states:
                self._add(endpoint, {})
        if resolver is not None:
            assert self._service is not None
            nursery.start_soon(self._watch, resolver, self._service)

    def _close(self) -> None:
        self._closed = True
        error = RpcError(Status.CANCELLED, "the channel was closed")
        for state in self._states.values():
            for slot in state.slots:
                if slot.connection is not None:
                    slot.connection.close(error)
                slot.scope.cancel()
        self._changed.unpark_all()

    def _add(self, endpoint: Endpoint, metadata: Mapping[str, str]) -> None:
        assert self._nursery is not None
        state = _EndpointState(endpoint, metadata, self._pool_size)
        self._states[endpoint] = state
        for slot in state.slots:
            self._nursery.start_soon(self._maintain, slot)

    def _remove(self, state: _EndpointState) -> None:
        """Drain an endpoint: no new calls; close its connections when their calls end."""
        state.removed = True
        del self._states[state.endpoint]
        refused = RefusedError(f"{state.endpoint} was removed from service {self._service!r}")
        for slot in state.slots:
            conn = slot.connection
            if conn is None or conn.outstanding == 0:
                slot.scope.cancel()
                continue
            # The reader ends the connection after the last answer (see _client._dispatch);
            # the deadline bounds a server that never answers.
            conn._mark_unusable(refused)
            slot.scope.deadline = trio.current_time() + _DRAIN_TIMEOUT

    def _update(self, items: Sequence[ResolvedEndpoint]) -> None:
        wanted: dict[Endpoint, Mapping[str, str]] = {}
        for item in items:
            try:
                wanted[Endpoint.parse(item.address)] = item.metadata
            except (TypeError, ValueError) as exc:
                log.warning(
                    "rpc.channel.bad_address",
                    service=self._service,
                    address=repr(item.address),
                    error=str(exc),
                )
        for endpoint, state in list(self._states.items()):
            if endpoint not in wanted:
                self._remove(state)
        for endpoint, metadata in wanted.items():
            known = self._states.get(endpoint)
            if known is None:
                self._add(endpoint, metadata)
            else:
                known.metadata = dict(metadata)
        self._resolved = True
        self._changed.unpark_all()

    async def _watch(self, resolver: Resolver, service: str) -> None:
        backoff = _Backoff()
        while True:
            try:
                async with aclosing(resolver.watch(service)) as updates:
                    async for items in updates:
                        self._resolver_error = None
                        backoff.reset()
                        self._update(items)
                error = "the watch ended"
            except (TypeError, ValueError):
                raise  # a bad service name: the channel can't work
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            delay = backoff.next_delay()
            log.warning(
                "rpc.channel.resolver_failed",
                service=service,
                error=error,
                retry_in=round(delay, 3),
            )
            self._resolver_error = error
            self._changed.unpark_all()
            await trio.sleep(delay)

    # ------------------------------------------------------------------ connections

    def _unusable(self, conn: ClientConnection) -> None:
        with suppress(ValueError):
            self._ready.remove(conn)
        self._changed.unpark_all()

    async def _maintain(self, slot: _Slot) -> None:
        options = self._options
        state = slot.state
        backoff = _Backoff()
        with slot.scope:
            while not state.gone():
                try:
                    conn = await connect(
                        slot.endpoint,
                        settings=options.settings,
                        ssl_context=options.ssl_context,
                        server_hostname=options.server_hostname,
                        handshake_timeout=options.handshake_timeout,
                        keepalive_interval=options.keepalive_interval,
                        keepalive_timeout=options.keepalive_timeout,
                        on_unusable=self._unusable,
                    )
                except RpcError as exc:
                    delay = backoff.next_delay()
                    log.info(
                        "rpc.channel.connect_failed",
                        peer=str(slot.endpoint),
                        error=exc.message,
                        retry_in=round(delay, 3),
                    )
                    slot.failed = True
                    slot.error = exc
                    self._failure(state)
                    self._changed.unpark_all()
                    await trio.sleep(delay)
                    slot.failed = False
                    continue
                log.debug("rpc.channel.connected", peer=str(slot.endpoint))
                slot.connection = conn
                slot.failed = False
                slot.error = None
                state.failures = 0
                if state.ejected_until is None and not state.removed:
                    self._ready.append(conn)
                self._changed.unpark_all()
                started = trio.current_time()
                try:
                    await conn.run()
                finally:
                    slot.connection = None
                    self._unusable(conn)
                if state.gone():
                    return
                if trio.current_time() - started >= _BACKOFF_INITIAL:
                    backoff.reset()
                    continue
                # A connection that dies at once (e.g. GOAWAY right after HELLO) counts as a
                # failed attempt: back off, and let callers fail fast meanwhile.
                slot.failed = True
                slot.error = RpcError(
                    Status.UNAVAILABLE, f"connection to {slot.endpoint} closed: {conn.reason}"
                )
                self._changed.unpark_all()
                await trio.sleep(backoff.next_delay())
                slot.failed = False

    # ------------------------------------------------------------------ outlier ejection

    def _failure(self, state: _EndpointState | None) -> None:
        """Count a connection failure or an ``UNAVAILABLE`` result; eject at the limit."""
        policy = self._ejection
        if policy is None or state is None or state.removed:
            return
        state.failures += 1
        if state.failures < policy.consecutive_failures or state.ejected_until is not None:
            return
        states = self._states.values()
        ejected = sum(1 for other in states if other.ejected_until is not None)
        if not policy.may_eject(ejected, len(states)):
            return  # stays counted: ejected at its next failure once that is allowed
        state.failures = 0
        state.ejections += 1
        duration = policy.ejection_time(state.ejections)
        until = trio.current_time() + duration
        state.ejected_until = until
        for slot in state.slots:
            if slot.connection is not None:
                with suppress(ValueError):
                    self._ready.remove(slot.connection)
        log.warning(
            "rpc.channel.endpoint_ejected",
            peer=str(state.endpoint),
            service=self._service,
            duration=duration,
            times=state.ejections,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._end_ejection, state, until)

    async def _end_ejection(self, state: _EndpointState, until: float) -> None:
        await trio.sleep_until(until)
        if state.ejected_until != until or state.removed:
            return
        state.ejected_until = None
        for slot in state.slots:
            conn = slot.connection
            if conn is not None and conn.usable and conn not in self._ready:
                self._ready.append(conn)
        log.info("rpc.channel.endpoint_restored", peer=str(state.endpoint), service=self._service)
        self._changed.unpark_all()

    def _ejected_ready(self) -> list[ClientConnection]:
        return [
            slot.connection
            for state in self._states.values()
            if state.ejected_until is not None
            for slot in state.slots
            if slot.connection is not None and slot.connection.usable
        ]

    # ------------------------------------------------------------------ picking

    def _unavailable(self) -> RpcError | None:
        """Why a call can't be made now, or ``None`` if it should wait."""
        slots = [slot for state in self._states.values() for slot in state.slots]
        if slots and all(slot.failed for slot in slots):
            reasons = "; ".join(sorted({slot.error.message for slot in slots if slot.error}))
            if self._service is not None:
                reasons = f"service {self._service!r}: {reasons}"
            return RpcError(Status.UNAVAILABLE, reasons)
        if not slots and self._resolved and self._resolver_error is not None:
            return RpcError(
                Status.UNAVAILABLE,
                f"can't resolve service {self._service!r}: {self._resolver_error}",
            )
        return None

    async def _pick(self, avoid: Endpoint | None = None) -> ClientConnection:
        wait_until: float | None = None
        while True:
            ready = self._ready
            if avoid is not None and len(ready) > 1:
                ready = [conn for conn in ready if conn.endpoint != avoid] or ready
            if not ready:
                ready = self._ejected_ready()  # better an ejected endpoint than none
            if ready:
                if len(ready) == 1:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    return ready[0]
                await trio.lowlevel.checkpoint_if_cancelled()
                return ready[self._balancer.pick(ready)]
            if self._closed:
                raise RpcError(Status.CANCELLED, "the channel was closed")
            error = self._unavailable()
            if error is not None:
                raise error
            if self._states:
                await self._changed.park()  # some slot is still connecting
                continue
            # No endpoints (yet): wait for some, at most until the deadline.
            if wait_until is None:
                # Give up just before the caller's deadline: a cancel scope nested in the
                # caller's with the same deadline would not catch the cancellation (the
                # outermost cancelled scope does), and the caller should learn *why*.
                wait_until = min(
                    trio.current_effective_deadline() - _DEADLINE_MARGIN,
                    trio.current_time() + self._discovery_timeout,
                )
            with trio.move_on_at(wait_until) as scope:
                await self._changed.park()
            if scope.cancelled_caught:
                why = f" ({self._resolver_error})" if self._resolver_error else ""
                raise RpcError(
                    Status.UNAVAILABLE, f"no endpoints for service {self._service!r}{why}"
                )

    # ------------------------------------------------------------------ calls

    async def _unary(
        self,
        method: str,
        payload: bytes,
        metadata: dict[str, str] | None,
        call: ClientCall | None,
        idempotent: bool,
    ) -> bytes:
        budget = self._budget
        if budget is not None:
            budget.deposit()
        attempt = 1
        avoid: Endpoint | None = None
        while True:
            ready = self._ready
            if ready and avoid is None:  # _pick's common case, without its coroutine
                conn = ready[0] if len(ready) == 1 else ready[self._balancer.pick(ready)]
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                conn = await self._pick(avoid)
            if call is not None:
                call.peer = conn.peer
            # Calls in flight over the whole channel: with several connections, each may
            # see a lone call while its frames could still share a write with others'.
            self._in_flight = in_flight = self._in_flight + 1
            try:
                try:
                    data = await conn.unary(
                        method, payload, _timeout_ms(), metadata, in_flight == 1
                    )
                finally:
                    self._in_flight -= 1
            except RefusedError as exc:
                if attempt >= _MAX_REFUSED_RETRIES:
                    raise RpcError(Status.UNAVAILABLE, exc.message) from None
            except RpcError as exc:
                state = self._states.get(conn.endpoint)
                if exc.code is not Status.UNAVAILABLE:
                    if state is not None:
                        state.failures = 0  # it answered: reachable
                    raise
                self._failure(state)
                policy = self._retry
                if not idempotent or policy is None or attempt >= policy.max_attempts:
                    raise
                delay = policy.backoff(attempt, self._rng)
                if trio.current_time() + delay >= trio.current_effective_deadline():
                    raise
                assert budget is not None
                if not budget.withdraw():
                    raise
                await trio.sleep(delay)
            else:
                state = self._states.get(conn.endpoint)
                if state is not None and state.failures:
                    state.failures = 0
                return data
            attempt += 1
            avoid = conn.endpoint

    async def _open_stream(
        self, method: str, payload: bytes, metadata: dict[str, str] | None, call: ClientCall | None
    ) -> tuple[ClientConnection, int, _Call]:
        refused: RefusedError | None = None
        avoid: Endpoint | None = None
        for _ in range(_MAX_REFUSED_RETRIES):
            conn = await self._pick(avoid)
            if call is not None:
                call.peer = conn.peer
            try:
                stream_id, record = await conn.open_stream(method, payload, _timeout_ms(), metadata)
            except RefusedError as exc:
                refused = exc
                avoid = conn.endpoint
                continue
            return conn, stream_id, record
        assert refused is not None
        raise RpcError(Status.UNAVAILABLE, refused.message)

    def _unary_method(
        self, info: MethodInfo, metadata: dict[str, str] | None
    ) -> Callable[[Any], Awaitable[Any]]:
        request_type = info.request_type
        decode = info.decode_response
        wire_name = info.wire_name
        interceptors = self._interceptors
        unary = self._unary
        idempotent = info.idempotent

        async def call(request: Any) -> Any:
            if type(request) is not request_type and not isinstance(request, request_type):
                raise _bad_request(info, request)
            payload = _encode(request)
            if interceptors:
                details = ClientCall(
                    info.service, info.name, "unary", dict(metadata or {}), request
                )
                box: list[bytes] = []

                async def innermost() -> None:
                    box.append(
                        await unary(
                            wire_name, payload, details.metadata or None, details, idempotent
                        )
                    )

                await _intercepted(interceptors, details, innermost)
                data = box[0]
            else:
                data = await unary(wire_name, payload, metadata, None, idempotent)
            try:
                return decode(data)
            except msgspec.DecodeError as exc:
                raise RpcError(Status.INTERNAL, f"bad response from {wire_name}: {exc}") from None

        call.__name__ = call.__qualname__ = info.name
        return call

    def _stream_method(
        self, info: MethodInfo, metadata: dict[str, str] | None
    ) -> Callable[[Any], ResponseStream[Any]]:
        request_type = info.request_type

        def call(request: Any) -> ResponseStream[Any]:
            if type(request) is not request_type and not isinstance(request, request_type):
                raise _bad_request(info, request)
            return ResponseStream(self, info, request, metadata)

        call.__name__ = call.__qualname__ = info.name
        return call


@final
class ResponseStream(Generic[T]):
    """The items of a server-stream call: an async iterator, also an async context manager.

    Nothing is sent until the first item is asked for (or ``async with`` is entered); the
    deadline sent is the caller's at that moment. Items are granted to the server as they
    are consumed, so a slow consumer slows the server down instead of filling buffers.

    Closing it early -- ``aclose()``, leaving ``async with``, ``break`` out of ``async for``
    once the stream is garbage (immediate in CPython), or the consumer being cancelled while
    waiting -- sends CANCEL, and the server cancels the handler.

    Raises (from ``__anext__``):
        RpcError: The server's status, ``UNAVAILABLE`` if the connection failed, or
            ``CANCELLED`` when used after being closed.
    """

    __slots__ = (
        "__weakref__",
        "_call",
        "_channel",
        "_conn",
        "_done",
        "_info",
        "_metadata",
        "_request",
        "_stream_id",
    )

    def __init__(
        self,
        channel: Channel,
        info: MethodInfo,
        request: object,
        metadata: dict[str, str] | None,
    ) -> None:
        self._channel = channel
        self._info = info
        self._request = request
        self._metadata = metadata
        self._conn: ClientConnection | None = None
        self._call: _Call | None = None
        self._stream_id = 0
        self._done = False

    def __repr__(self) -> str:
        return f"<rpc.ResponseStream {self._info.wire_name}>"

    async def _start(self) -> None:
        channel = self._channel
        info = self._info
        payload = _encode(self._request)
        await trio.lowlevel.checkpoint_if_cancelled()
        if channel._interceptors:
            details = ClientCall(
                info.service,
                info.name,
                "server_stream",
                dict(self._metadata or {}),
                self._request,
            )

            async def innermost() -> None:
                opened = await channel._open_stream(
                    info.wire_name, payload, details.metadata or None, details
                )
                self._conn, self._stream_id, self._call = opened

            await _intercepted(channel._interceptors, details, innermost)
        else:
            opened = await channel._open_stream(info.wire_name, payload, self._metadata, None)
            self._conn, self._stream_id, self._call = opened
        if self._done:  # closed while the interceptors were running
            self._cancel()

    def __aiter__(self) -> ResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            if self._call is not None and self._call.frame is not None and not self._call.items:
                raise StopAsyncIteration
            raise RpcError(Status.CANCELLED, "the stream was closed")
        if self._call is None:
            try:
                await self._start()
            except BaseException:
                self._done = True
                raise
        conn, call = self._conn, self._call
        assert conn is not None
        assert call is not None
        if call.cancelled:
            self._done = True
            raise RpcError(Status.CANCELLED, "the stream was cancelled")
        try:
            payload = await conn.next_item(self._stream_id, call)
        except BaseException:
            self._done = True
            self._cancel()
            raise
        if payload is None:
            self._done = True
            raise StopAsyncIteration
        try:
            return cast(T, self._info.decode_response(payload))
        except msgspec.DecodeError as exc:
            self._done = True
            self._cancel()
            raise RpcError(
                Status.INTERNAL, f"bad stream item from {self._info.wire_name}: {exc}"
            ) from None

    def _cancel(self) -> None:
        self._done = True
        if self._conn is not None and self._call is not None and self._call.frame is None:
            self._conn.cancel_stream(self._stream_id, self._call)

    async def aclose(self) -> None:
        """Stop the stream: CANCEL it if the server has not ended it. A checkpoint."""
        self._cancel()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ResponseStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Reached after `break` out of `async for`: tell the server to stop.
        if not self._done:
            with suppress(Exception):  # never raise from a finalizer
                self._cancel()


@final
class _Stub:
    """The runtime object behind :meth:`Channel.stub`; one attribute per method."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __repr__(self) -> str:
        return f"<rpc stub for {self._service!r}>"


async def _intercepted(
    interceptors: tuple[ClientInterceptor, ...],
    call: ClientCall,
    innermost: Callable[[], Awaitable[None]],
) -> None:
    chain = innermost
    for interceptor in reversed(interceptors):
        chain = _bind(interceptor, call, chain)
    await chain()


def _bind(
    interceptor: ClientInterceptor, call: ClientCall, proceed: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    def run() -> Awaitable[None]:
        return interceptor.intercept(call, proceed)

    return run


def _bad_request(info: MethodInfo, request: object) -> TypeError:
    return TypeError(
        f"{info.wire_name} takes a {info.request_type.__name__} request, got {request!r}"
    )


def _untyped(method: str, kind: MethodKind, idempotent: bool) -> MethodInfo:
    if not isinstance(method, str):
        raise TypeError(f"method must be a str like 'users/get_user', got {method!r}")
    service, sep, name = method.rpartition("/")
    if not sep or not service or not name:
        raise ValueError(f"method must look like '<service>/<method>', got {method!r}")
    return MethodInfo(service, name, kind, idempotent, object, object)


def _encodable(request: Any) -> Any:
    try:
        _encode(request)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode the request {request!r}: {exc}") from None
    return request


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    return check_str_mapping("metadata", metadata) or None


def _endpoints(target: str | Endpoint | Sequence[str | Endpoint]) -> list[Endpoint]:
    items = [target] if isinstance(target, str | Endpoint) else target
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"target must be an address or a non-empty list of them, got {target!r}")
    return [item if isinstance(item, Endpoint) else Endpoint.parse(item) for item in items]


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
    keepalive_interval: float = math.inf,
    keepalive_timeout: float = 20.0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    initial_stream_credit: int = 64,
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
    and drains endpoints as they come and go; calls made while the service has no
    endpoints wait for one, at most until their deadline or ``discovery_timeout``, then
    fail with ``UNAVAILABLE`` naming the service. Leaving the block closes the
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
        ssl_context: Use TLS with this client-side context.
        server_hostname: The name to verify the certificate against (default: the host).
        interceptors: :class:`ClientInterceptor` objects wrapped around every call, the
            first outermost.
        balancer: Chooses the connection per call; default :class:`PowerOfTwoChoices`.
        retry: How idempotent calls are retried on ``UNAVAILABLE``; ``None``: never.
        outlier_ejection: When failing endpoints are set aside; ``None``: never.
        discovery_timeout: Longest a call waits for a service to have endpoints (seconds).
        handshake_timeout: Seconds to connect, TLS-handshake and exchange HELLOs.
        keepalive_interval: Seconds without receiving anything after which the client PINGs
            the server (default ``math.inf``: off). Keep it above the server's
            ``min_ping_interval``.
        keepalive_timeout: Seconds to wait for an answer to a PING before dropping the
            connection (its calls fail with ``UNAVAILABLE``).
        max_frame_size: Largest frame this side accepts (bytes).
        initial_stream_credit: Items a server-stream may send ahead of the consumer.

    Raises:
        TypeError / ValueError: A bad argument, or an unknown target scheme.
        BaseExceptionGroup: Wraps what the body raised (a nursery runs inside), and a
            ``TypeError`` / ``ValueError`` from the registry's ``watch`` (a service name
            it refuses).
    """
    service: str | None = None
    opener = None
    endpoints: list[Endpoint] = []
    if registry is not None:
        if not isinstance(registry, Resolver):
            raise TypeError(f"registry must be an rpc.Resolver (e.g. a Registry), got {registry!r}")
        if not isinstance(target, str) or "://" in target or not target:
            raise ValueError(f"with registry=, target must be a service name, got {target!r}")
        service = target
    elif isinstance(target, str) and (split := split_target(target)) is not None:
        opener, authority, service = split
    else:
        endpoints = _endpoints(target)
    check_int("pool_size", pool_size, minimum=1)
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
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
    )
    options = _Options(
        settings,
        ssl_context,
        server_hostname,
        check_seconds("handshake_timeout", handshake_timeout, finite=True),
        check_seconds("keepalive_interval", keepalive_interval),
        check_seconds("keepalive_timeout", keepalive_timeout, finite=True),
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
    )
    async with AsyncExitStack() as stack:
        resolver = registry
        if opener is not None:
            resolver = await stack.enter_async_context(opener(authority))
        async with trio.open_nursery() as nursery:
            channel._start(nursery, resolver)
            try:
                yield channel
            finally:
                channel._close()
                nursery.cancel_scope.cancel()
