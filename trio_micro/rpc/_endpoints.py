"""The endpoint pool of a channel: connection slots, reconnect backoff, outlier ejection.

Theory of operation
-------------------
An :class:`EndpointPool` keeps a set of *endpoints* -- fixed, or followed live through a
:class:`~trio_micro.rpc.Resolver` (any registry) -- and ``pool_size`` connection *slots*
per endpoint. Each slot is one task that connects, runs the connection until it ends, and
connects again -- at once after a connection that worked for a while, otherwise after an
exponential backoff with full jitter (:class:`~trio_micro.toolkit.Backoff`; gRPC's bounds:
1 s, x1.6 per attempt, at most 120 s). With a resolver, one more task watches the service:
a new endpoint gets its slots started, a removed one is *drained* (no new calls; its
connections close once their calls are done, at most ``_DRAIN_TIMEOUT`` later).

Ready connections sit in one list, :attr:`EndpointPool.ready`; :meth:`EndpointPool.pick`
takes one through the :class:`~trio_micro.rpc.Balancer` without awaiting anything when
one is ready. When none is, a call waits while something is under way -- a slot
connecting, or the resolver's first answer -- and otherwise fails fast with ``UNAVAILABLE``
saying why (:mod:`._ready`: gRPC's semantics without ``wait_for_ready``): every slot failed
its last attempt (the addresses and errors), every endpoint is ``NOT_SERVING``, the
resolver's backend is unreachable (:class:`~trio_micro.rpc.ResolverStatus`, reported by a
:class:`~trio_micro.rpc.StatusResolver` or by its watch raising), or the service has no
endpoints. A call that waits for ready waits through all of these. A wait for endpoints
lasts at most ``discovery_timeout`` (then ``UNAVAILABLE`` with the resolver's status); the
caller's deadline cancels any wait as it cancels anything else (see
:meth:`EndpointPool.pick` for why no longer 1 ms early).

Outlier ejection (:class:`~trio_micro.rpc.OutlierEjection`): each endpoint counts
failures in a row -- connection failures, and what the caller (:mod:`._calls`) reports:
``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` results, deadlines passed and slow calls
(:meth:`EndpointPool.failed`, reset by :meth:`EndpointPool.succeeded`); at the limit its
connections leave the ready list for the ejection time, restored by a short task that
sleeps until then. When every non-ejected connection is gone the ejected ones are used
rather than failing. Each endpoint also counts unary calls and errors (failures, and the
``error_codes`` answers of :meth:`EndpointPool.answered`); once one has counted ``2 x
success_rate_request_volume``, :meth:`~trio_micro.rpc.OutlierEjection.rate_outliers`
names those far worse than their peers, they are ejected and every count starts again.

Health (opt-in, ``open_channel(health_check=SERVICE)``): each connection also runs the
server's health ``watch`` for SERVICE (gRPC's health-checking client); while the answer is
not ``SERVING``, the endpoint's connections leave the ready list as for ejection, and when
every endpoint is out that way calls fail fast with ``UNAVAILABLE``. A server without the
health service (``UNIMPLEMENTED``) counts as serving. One stream per connection, no task
per call.

Log events: ``rpc.channel.connect_failed``, ``rpc.channel.not_serving``,
``rpc.channel.serving``, ``rpc.channel.connected``,
``rpc.channel.endpoint_ejected`` (its ``reason``: ``consecutive_failures`` or
``success_rate``), ``rpc.channel.endpoint_restored``,
``rpc.channel.bad_address``, ``rpc.channel.resolver_failed``, ``rpc.channel.resolver_status``
(the status changed state); a connection's own
(``rpc.channel.connection_lost``, ``rpc.channel.protocol_error``,
``rpc.channel.keepalive_timeout``, ``rpc.channel.goaway``) are logged by :mod:`._client`.

Length: a little over 600 lines because slots, ejection and the ready list share one
state (an endpoint's connections move between them); the parts that stand alone already
live elsewhere (:mod:`._ready`'s statuses, :mod:`._balancing`'s policies and arithmetic).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, replace
from typing import Final, final

import msgspec
import structlog
import trio

from trio_micro.protocol import Settings, Status
from trio_micro.toolkit import Backoff

from ._balancing import Balancer, OutlierEjection
from ._client import ClientConnection, RefusedError
from ._connect import connect
from ._errors import RpcError
from ._health import HEALTH_SERVICE, HealthCheckRequest, HealthCheckResponse, HealthStatus
from ._ready import waiting_for_ready
from ._resolver import ResolvedEndpoint, Resolver, ResolverStatus, StatusResolver
from ._transport import Endpoint

__all__: list[str] = []

log = structlog.get_logger("rpc")

# gRPC's connection backoff bounds (doc/connection-backoff.md), for connection slots and
# the resolver watch; the jitter is Backoff's.
_BACKOFF_INITIAL: Final = 1.0
_BACKOFF_MULTIPLIER: Final = 1.6
_BACKOFF_MAX: Final = 120.0
# A connection that lived this long counts as having worked: reconnect at once.
_WORKED_FOR: Final = 1.0
# How long the connections of a removed endpoint may take to finish their calls.
_DRAIN_TIMEOUT: Final = 30.0
_HEALTH_WATCH: Final = f"{HEALTH_SERVICE}/watch"
_decode_health: Final = msgspec.msgpack.Decoder(HealthCheckResponse).decode


def _backoff() -> Backoff:
    return Backoff(initial=_BACKOFF_INITIAL, maximum=_BACKOFF_MAX, multiplier=_BACKOFF_MULTIPLIER)


@final
class EndpointState:
    """One endpoint: its slots, its metadata, and its outlier-ejection record."""

    __slots__ = (
        "calls",
        "ejected_until",
        "ejections",
        "endpoint",
        "errors",
        "failures",
        "metadata",
        "not_serving",
        "removed",
        "slots",
    )

    def __init__(self, endpoint: Endpoint, metadata: Mapping[str, str], pool_size: int) -> None:
        self.endpoint = endpoint
        self.metadata = dict(metadata)
        self.slots = [Slot(self) for _ in range(pool_size)]
        self.failures = 0  # connection failures or failed calls in a row
        self.calls = 0  # unary calls answered or failed in this success-rate window
        self.errors = 0  # of which errors (see OutlierEjection.error_codes)
        self.ejections = 0
        self.ejected_until: float | None = None
        self.removed = False
        self.not_serving = False  # its health watch says NOT_SERVING (health_check=)

    def gone(self) -> bool:
        # A method, not the attribute: mypy would keep it narrowed across awaits.
        return self.removed


@final
class Slot:
    """One connection slot of an endpoint: the task keeping one connection up."""

    __slots__ = ("connection", "error", "failed", "scope", "state")

    def __init__(self, state: EndpointState) -> None:
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
class ConnectOptions:
    """How every connection of a channel is made (see :func:`~._client.connect`)."""

    settings: Settings
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    handshake_timeout: float
    keepalive_interval: float
    keepalive_timeout: float
    compression_threshold: int


@final
class EndpointPool:
    """The endpoints of one channel and their connections; see the module docs.

    Made by the channel; :meth:`start` runs its tasks in the channel's nursery.

    Attributes:
        ready: The connections ready for calls (ejected endpoints' excluded). The same
            list for the pool's life, so callers may keep a reference to it.
        states: Endpoint -> its slots and ejection record, in the order they came.
        status: How the resolution of the service stands (a fixed list: resolved).
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        pool_size: int,
        options: ConnectOptions,
        balancer: Balancer,
        ejection: OutlierEjection | None,
        service: str | None,
        discovery_timeout: float,
        health_check: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        self._pool_size = pool_size
        self._health_check = health_check
        self._options = options
        self._balancer = balancer
        self._ejection = ejection
        # Success rate: the error codes, and the calls that end a window (off: never).
        window = 0 if ejection is None else ejection.success_rate_window
        self._error_codes = frozenset() if ejection is None else ejection.error_codes
        self._check_at = window or sys.maxsize
        self._service = service
        self._discovery_timeout = discovery_timeout
        self._wait_for_ready = wait_for_ready
        self.states: dict[Endpoint, EndpointState] = {}
        self._initial = list(endpoints)
        self.status: ResolverStatus = (
            ResolverStatus("resolving")
            if service is not None
            else ResolverStatus("resolved", len(self._initial))
        )
        self.ready: list[ClientConnection] = []
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._closed = False

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints connected to now (before :meth:`start`: those given)."""
        if self._nursery is None:
            return tuple(self._initial)
        return tuple(self.states)

    @property
    def ejection(self) -> OutlierEjection | None:
        """The outlier-ejection policy (``None``: ejection is off)."""
        return self._ejection

    def succeeded(self, endpoint: Endpoint) -> None:
        """A call over ``endpoint`` succeeded: its failures in a row start again."""
        state = self.states.get(endpoint)
        if state is not None:
            if state.failures:
                state.failures = 0
            state.calls += 1
            if state.calls >= self._check_at:
                self._check_rates()

    def answered(self, endpoint: Endpoint, code: Status) -> None:
        """A call over ``endpoint`` got an error answer, not a failure: its failures in a
        row start again; ``code`` counts against its success rate if in ``error_codes``."""
        state = self.states.get(endpoint)
        if state is not None:
            state.failures = 0
            state.calls += 1
            state.errors += code in self._error_codes
            if state.calls >= self._check_at:
                self._check_rates()

    def failed(self, endpoint: Endpoint) -> None:
        """A call over ``endpoint`` failed (``UNAVAILABLE``, deadline, too slow); see outlier
        ejection. It counts against the success rate too."""
        state = self.states.get(endpoint)
        if state is not None:
            state.calls += 1
            state.errors += 1
            self._failure(state)
            if state.calls >= self._check_at:
                self._check_rates()

    # ------------------------------------------------------------------ endpoints

    def start(self, nursery: trio.Nursery, resolver: Resolver | None) -> None:
        """Start the slots' tasks (and the resolver watch) in ``nursery``. Synchronous."""
        self._nursery = nursery
        for endpoint in self._initial:
            if endpoint not in self.states:
                self._add(endpoint, {})
        if resolver is not None:
            assert self._service is not None
            nursery.start_soon(self._watch, resolver, self._service)

    def close(self) -> None:
        """Close every connection; calls waiting for one fail with ``CANCELLED``."""
        self._closed = True
        error = RpcError(Status.CANCELLED, "the channel was closed")
        for state in self.states.values():
            for slot in state.slots:
                if slot.connection is not None:
                    slot.connection.close(error)
                slot.scope.cancel()
        self._changed.unpark_all()

    def _add(self, endpoint: Endpoint, metadata: Mapping[str, str]) -> None:
        assert self._nursery is not None
        state = EndpointState(endpoint, metadata, self._pool_size)
        self.states[endpoint] = state
        for slot in state.slots:
            self._nursery.start_soon(self._maintain, slot)

    def _remove(self, state: EndpointState) -> None:
        """Drain an endpoint: no new calls; close its connections when their calls end."""
        state.removed = True
        del self.states[state.endpoint]
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
        for endpoint, state in list(self.states.items()):
            if endpoint not in wanted:
                self._remove(state)
        for endpoint, metadata in wanted.items():
            known = self.states.get(endpoint)
            if known is None:
                self._add(endpoint, metadata)
            else:
                known.metadata = dict(metadata)
        self._set_status(ResolverStatus("resolved", len(self.states)))

    def _set_status(self, status: ResolverStatus) -> None:
        """Record the resolver's status (log a change of state); wake waiting calls."""
        if status.state != "resolved":
            status = replace(status, endpoints=len(self.states))
        if status.state != self.status.state:
            log.info("rpc.channel.resolver_status", service=self._service, status=str(status))
        self.status = status
        self._changed.unpark_all()

    async def _watch(self, resolver: Resolver, service: str) -> None:
        backoff = _backoff()
        while True:
            watch: AsyncGenerator[Sequence[ResolvedEndpoint] | ResolverStatus, None]
            if isinstance(resolver, StatusResolver):
                watch = resolver.watch_status(service)
            else:
                watch = resolver.watch(service)
            try:
                async with aclosing(watch) as updates:
                    async for item in updates:
                        if isinstance(item, ResolverStatus):
                            if item.state == "unreachable":
                                self._set_status(item)
                            continue
                        backoff.reset()
                        self._update(item)
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
            self._set_status(ResolverStatus.unreachable(f"the resolver failed: {error}"))
            await trio.sleep(delay)

    # ------------------------------------------------------------------ connections

    def _unusable(self, conn: ClientConnection) -> None:
        with suppress(ValueError):
            self.ready.remove(conn)
        self._changed.unpark_all()

    async def _maintain(self, slot: Slot) -> None:
        options = self._options
        state = slot.state
        backoff = _backoff()
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
                        compression_threshold=options.compression_threshold,
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
                if state.ejected_until is None and not state.removed and not state.not_serving:
                    self.ready.append(conn)
                if self._health_check is not None:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._watch_health, state, conn, self._health_check)
                self._changed.unpark_all()
                started = trio.current_time()
                try:
                    await conn.run()
                finally:
                    slot.connection = None
                    self._unusable(conn)
                if state.gone():
                    return
                if trio.current_time() - started >= _WORKED_FOR:
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

    def _failure(self, state: EndpointState | None) -> None:
        """Count a failure (see :meth:`failed`); eject at the limit."""
        policy = self._ejection
        if policy is None or state is None or state.removed:
            return
        state.failures += 1
        if state.failures < policy.consecutive_failures or state.ejected_until is not None:
            return
        # If max_ejected_fraction forbids it, it stays counted: ejected at its next
        # failure once that is allowed.
        self._eject(state, policy, "consecutive_failures")

    def _check_rates(self) -> None:
        """End a success-rate window: eject its outliers, start the counts again."""
        policy = self._ejection
        assert policy is not None
        judged = [state for state in self.states.values() if state.ejected_until is None]
        counts = [(state.calls, state.errors) for state in judged]
        for state in self.states.values():
            state.calls = state.errors = 0
        for index in policy.rate_outliers(counts):
            calls, errors = counts[index]
            rate = round(1 - errors / calls, 3)
            self._eject(judged[index], policy, "success_rate", calls=calls, success_rate=rate)

    def _eject(
        self, state: EndpointState, policy: OutlierEjection, reason: str, **why: float
    ) -> None:
        """Eject ``state`` unless ``max_ejected_fraction`` is reached already."""
        states = self.states.values()
        ejected = sum(1 for other in states if other.ejected_until is not None)
        if not policy.may_eject(ejected, len(states)):
            return
        state.failures = 0
        state.ejections += 1
        duration = policy.ejection_time(state.ejections)
        until = trio.current_time() + duration
        state.ejected_until = until
        for slot in state.slots:
            if slot.connection is not None:
                with suppress(ValueError):
                    self.ready.remove(slot.connection)
        log.warning(
            "rpc.channel.endpoint_ejected",
            peer=str(state.endpoint),
            service=self._service,
            duration=duration,
            times=state.ejections,
            reason=reason,
            **why,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._end_ejection, state, until)

    async def _end_ejection(self, state: EndpointState, until: float) -> None:
        await trio.sleep_until(until)
        if state.ejected_until != until or state.removed:
            return
        state.ejected_until = None
        for slot in state.slots:
            conn = slot.connection
            if (
                conn is not None
                and conn.usable
                and not state.not_serving
                and conn not in self.ready
            ):
                self.ready.append(conn)
        log.info("rpc.channel.endpoint_restored", peer=str(state.endpoint), service=self._service)
        self._changed.unpark_all()

    def _ejected_ready(self) -> list[ClientConnection]:
        return [
            slot.connection
            for state in self.states.values()
            if state.ejected_until is not None
            for slot in state.slots
            if slot.connection is not None and slot.connection.usable
        ]

    # ------------------------------------------------------------------ health

    async def _watch_health(self, state: EndpointState, conn: ClientConnection, name: str) -> None:
        """Follow the health of ``name`` over ``conn`` until the connection ends."""
        payload = msgspec.msgpack.encode(HealthCheckRequest(name))
        try:
            stream_id, call = await conn.open_stream(_HEALTH_WATCH, payload, None, None)
            try:
                while (item := await conn.next_item(stream_id, call)) is not None:
                    self._set_serving(state, _decode_health(item).status is HealthStatus.SERVING)
            finally:
                conn.cancel_stream(stream_id, call)
        except RpcError as exc:
            if exc.code is Status.UNIMPLEMENTED:  # no health service: serving
                self._set_serving(state, True)
            return  # the connection failed: its slot reconnects and watches again
        except msgspec.DecodeError:
            self._set_serving(state, True)  # a health service we don't understand
            return
        # The stream ended: the server is shutting down; its GOAWAY follows.
        self._set_serving(state, False)

    def _set_serving(self, state: EndpointState, serving: bool) -> None:
        if state.not_serving is not serving or state.removed:
            return
        state.not_serving = not serving
        if serving:
            log.info("rpc.channel.serving", peer=str(state.endpoint), service=self._service)
            if state.ejected_until is None:
                for slot in state.slots:
                    conn = slot.connection
                    if conn is not None and conn.usable and conn not in self.ready:
                        self.ready.append(conn)
        else:
            log.warning("rpc.channel.not_serving", peer=str(state.endpoint), service=self._service)
            for slot in state.slots:
                if slot.connection is not None:
                    with suppress(ValueError):
                        self.ready.remove(slot.connection)
        self._changed.unpark_all()

    # ------------------------------------------------------------------ picking

    def _unavailable(self) -> RpcError | None:
        """Why a call that fails fast can't be made now, or ``None`` if it should wait."""
        if not self.states and self._service is not None:
            status = self.status
            if status.state == "unreachable":
                return RpcError(status.code, f"service {self._service!r}: {status.error}")
            if status.state == "resolved":
                return RpcError(Status.UNAVAILABLE, f"service {self._service!r} has no endpoints")
            return None  # the first answer is still to come
        states = self.states.values()
        if states and all(state.not_serving for state in states):
            where = f"service {self._service!r}" if self._service is not None else "the target"
            return RpcError(Status.UNAVAILABLE, f"every endpoint of {where} is NOT_SERVING")
        slots = [slot for state in states for slot in state.slots]
        if slots and all(slot.failed for slot in slots):
            reasons = "; ".join(sorted({slot.error.message for slot in slots if slot.error}))
            if self._service is not None:
                reasons = f"service {self._service!r}: {reasons}"
            return RpcError(Status.UNAVAILABLE, reasons)
        return None

    async def pick(self, avoid: Endpoint | None = None) -> ClientConnection:
        """A ready connection, not to ``avoid`` if another is ready (see the module docs).

        A checkpoint. Waits while a slot is connecting or the first resolution is under
        way; fails fast otherwise, unless the call waits for ready (:mod:`._ready`). A wait
        while the service has no endpoints lasts at most ``discovery_timeout``. The
        caller's deadline cancels the wait (``trio.Cancelled``, as for any other wait):
        this used to give up ``_DEADLINE_MARGIN`` (1 ms) before the deadline to raise
        ``UNAVAILABLE`` saying why, but that raced the caller's own cancel scope -- when
        the event loop ran more than 1 ms late, both expired in the same tick and the
        outermost won, so the error depended on load -- and it preempted any enclosing
        deadline, a nursery's included. Failing fast says why at once instead; what a
        waiting call waited for is :attr:`status`.

        Raises:
            RpcError: ``UNAVAILABLE`` (failing fast: see the module docs; or no endpoints
                within ``discovery_timeout``), or ``CANCELLED`` once the channel is closed.
        """
        wait_until: float | None = None
        while True:
            ready = self.ready
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
                await trio.lowlevel.checkpoint()
                raise RpcError(Status.CANCELLED, "the channel was closed")
            if not waiting_for_ready(self._wait_for_ready):
                error = self._unavailable()
                if error is not None:
                    # A full checkpoint even when failing: a caller retrying in a loop
                    # must not starve the other tasks (found by the cluster test: 50,000
                    # fast failures a second held the event loop for 10 s).
                    await trio.lowlevel.checkpoint()
                    raise error
            if self.states:
                await self._changed.park()  # a slot is connecting, or waiting for ready
                continue
            # No endpoints (yet): wait for some, at most discovery_timeout.
            if wait_until is None:
                wait_until = trio.current_time() + self._discovery_timeout
            with trio.move_on_at(wait_until) as scope:
                await self._changed.park()
            if scope.cancelled_caught:
                raise RpcError(
                    Status.UNAVAILABLE,
                    f"no endpoints for service {self._service!r} within discovery_timeout "
                    f"({self._discovery_timeout:g} s; resolver: {self.status})",
                )
