"""Admission control: refuse calls early instead of queueing them until their deadlines.

Two mechanisms, both answering ``RESOURCE_EXHAUSTED`` at once with a retry hint in the
error's details, and both counted (``statistics()``) and logged with the refused caller's
key:

* :class:`Admission` -- the server's ``max_inflight``: a call arriving while that many
  calls run on the whole server is refused before any decoding, interceptor or handler
  runs; near the limit, so is a call whose connection already holds its fair share of
  it, so one greedy connection can't take every slot (the rule is in the class docs).
  Health calls are always admitted and health watches do not count (a probe must
  answer under overload, and a long-lived watch must not eat a call slot).
* :class:`RateLimitInterceptor` -- a server interceptor over
  :class:`~trio_micro.toolkit.KeyedRateLimiter`: each caller, keyed by its peer's host or
  by a metadata value (an API key), gets ``rate`` calls per second with bursts of
  ``burst``.

Both are unlike ``max_concurrent_streams``, which is per connection and makes a caller
*wait* for a slot on its own side: these refuse, so a client sends the call elsewhere.

Retry hint (the error's ``details``): ``refused`` says why (``max_inflight`` /
``rate_limit``; ``fair-share``, the connection's share, when a ``max_inflight`` refusal
was for holding it) and that the handler never ran, so a channel with a
:class:`~trio_micro.rpc.RetryPolicy` retries it -- any method, not only idempotent ones --
on another endpoint, within the retry budget. ``retry-after-ms`` says when this server
expects to accept the same caller again (the next token, for a rate limit; omitted for
``max_inflight``, whose capacity comes back whenever a call ends).

Logging at overload must not become the overload: ``rpc.call.refused`` is written at most
``_LOGS_PER_SECOND`` times a second per mechanism; each line carries ``suppressed``, the
refusals not logged since the previous line.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, final

import structlog
import trio

from trio_micro._validate import check_int, check_number
from trio_micro.protocol import Status
from trio_micro.toolkit import KeyedRateLimiter

from ._context import ServerCall
from ._errors import RpcError

__all__ = ["RateLimitInterceptor", "RateLimitStatistics"]

log = structlog.get_logger("rpc")

REFUSED: Final = "refused"  # the details key a client retries on
RETRY_AFTER_MS: Final = "retry-after-ms"
FAIR_SHARE: Final = "fair-share"  # a max_inflight refusal at the connection's share
_LOGS_PER_SECOND: Final = 10
# Keys longer than this (UTF-8 bytes) are replaced by a digest: a key is held per bucket,
# and metadata values may be kilobytes long.
_MAX_KEY: Final = 64


@final
class RefusalLog:
    """Logs ``rpc.call.refused`` at most ``_LOGS_PER_SECOND`` times a second."""

    __slots__ = ("_logged", "_second", "_suppressed", "reason")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._second = -1
        self._logged = 0
        self._suppressed = 0

    def refused(
        self,
        call_peer: str,
        method: str,
        key: str | None,
        now: float | None = None,
        **fields: object,
    ) -> None:
        """Count a refusal; log it unless this second's lines are used up. ``key`` ``None``:
        the peer's host, worked out only when the line is written. ``now``: the call's
        time if the caller has it (``ServerCall.received``), else the clock is read; an
        earlier second than the last one's (a call read before it) counts in the last one."""
        second = int(trio.current_time() if now is None else now)
        if second > self._second:
            self._second = second
            self._logged = 0
        if self._logged >= _LOGS_PER_SECOND:
            self._suppressed += 1
            return
        self._logged += 1
        log.warning(
            "rpc.call.refused",
            reason=self.reason,
            key=_peer_host(call_peer) if key is None else key,
            peer=call_peer,
            method=method,
            suppressed=self._suppressed,
            **fields,
        )
        self._suppressed = 0


@final
class Admission:
    """The server-wide count of calls in flight, and ``max_inflight`` over it, shared
    fairly between connections.

    The rule, for a call (not a health call) arriving on a connection that holds ``held``
    calls, with ``inflight`` calls on the whole server (health watches not counted)::

        inflight <  threshold                       -> admitted
        inflight >= limit                           -> refused (the server is full)
        otherwise: held < share                     -> admitted, else refused
        share     = ceil(limit / contenders)
        threshold = limit - reserve,  reserve = ceil(limit / 8)  (0 at limit 1)

    ``contenders`` counts the connections with calls in flight, plus those that had one
    or were refused in the last ``RECENT_SECONDS`` (:attr:`recent`), plus the caller.
    So while the server has room every call is admitted as before, and one connection
    alone may hold the whole limit (its share is the limit); the top ``reserve`` slots go
    only to connections below their share, so a greedy connection is refused first and a
    quiet one still finds a slot. Counting the recent ones is what makes this work for a
    quiet caller, which holds no call most of the time: counting only connections with
    calls in flight, the greedy one sees itself alone whenever the quiet one's call has
    ended or was refused at the full server, and takes back every slot that frees up.

    Worst case: a connection at or above its share is admitted only below ``threshold``,
    so once ``threshold`` calls are in flight the last ``reserve`` slots are held by
    connections that were below their share; a caller holding nothing is refused only
    when all ``limit`` slots are taken, and from then on counts as a contender (until
    ``RECENT_SECONDS`` pass without a call or a refusal), so the greedy connections get
    no more of the top slots. Shares are per connection: a peer with k connections gets
    k shares (``max_connections_per_peer`` bounds k). Slots left idle by the rule are at
    most ``reserve``. A hostile peer raises no bound: ``limit`` is never exceeded, and
    :attr:`recent` holds at most one entry per open connection, dropped when it starts a
    call, after ``RECENT_SECONDS`` or when the connection ends (:meth:`forget`).

    The connections increment :attr:`inflight` when they start a call (and :attr:`busy`
    when it is their first, dropping their :attr:`recent` entry), their call runner
    decrements :attr:`inflight` when the call ends, and after its last the connection
    decrements :attr:`busy` and enters :attr:`recent` with the time (inline: the hot
    path of a connection making one call at a time); :meth:`over_limit` is called only
    at :attr:`threshold` or above. A
    connection's ``held`` is the size of its dict of calls in progress: no per-call
    allocation. Both count health calls too (a connection holding only a health watch is
    a contender), though health calls themselves are always admitted.

    Args:
        limit: ``max_inflight``; ``None`` for none.
        exempt: Wire name of a service always admitted (the health service).
    """

    __slots__ = (
        "_fair",
        "_fair_share",
        "_log",
        "_refusal",
        "busy",
        "exempt",
        "inflight",
        "max_inflight",
        "recent",
        "refused",
        "threshold",
        "uncounted",
    )

    #: How long a connection without calls counts as a contender after its last call or
    #: refusal: longer than a channel's default retry backoff (at most 1 s).
    RECENT_SECONDS: Final = 2.0

    def __init__(self, limit: int | None, exempt: str | None) -> None:
        self.max_inflight = limit
        #: Where :meth:`over_limit` starts to be asked: ``limit - reserve``.
        self.threshold: float = (
            math.inf if limit is None else limit - (0 if limit == 1 else -(-limit // 8))
        )
        self.exempt = exempt
        self.inflight = 0
        #: Connections with calls in flight.
        self.busy = 0
        #: Connections without calls -> when their last call ended or they were refused,
        #: oldest first (only with a limit).
        self.recent: dict[object, float] = {}
        # Long-lived calls that don't count against the limit (health watches).
        self.uncounted: Callable[[], int] = lambda: 0
        self.refused = 0
        self._log = RefusalLog("max_inflight")
        # One error for every refusal at the full server: the connection only reads its
        # fields; and the last fair-share refusal (the share changes rarely).
        self._refusal = RpcError(
            Status.RESOURCE_EXHAUSTED,
            f"server at max_inflight ({limit} calls)",
            {REFUSED: "max_inflight"},
        )
        self._fair = self._refusal
        self._fair_share = 0

    def over_limit(
        self, service: str, held: int, conn: object, peer: str, method: str
    ) -> RpcError | None:
        """At :attr:`inflight` >= :attr:`threshold`: the error refusing a call of
        ``conn``, which holds ``held`` calls (one instance, not to be raised or changed),
        or ``None`` to admit it. See the class docs. Not a checkpoint."""
        if service == self.exempt:
            return None
        inflight = self.inflight - self.uncounted()
        if inflight < self.threshold:
            return None
        now = trio.current_time()
        recent = self.recent
        while recent:  # drop the oldest entries past RECENT_SECONDS
            oldest = next(iter(recent))
            if recent[oldest] > now - self.RECENT_SECONDS:
                break
            del recent[oldest]
        limit = self.max_inflight
        assert limit is not None  # else the threshold is infinite
        contenders = self.busy + len(recent) + (held == 0 and conn not in recent)
        share = -(-limit // contenders)
        if inflight < limit:
            if held < share:
                return None
            if share != self._fair_share:
                self._fair_share = share
                self._fair = RpcError(
                    Status.RESOURCE_EXHAUSTED,
                    f"connection at its fair share of max_inflight ({share} of {limit} "
                    f"calls, {contenders} connections)",
                    {REFUSED: "max_inflight", FAIR_SHARE: str(share)},
                )
            refusal = self._fair
        else:
            refusal = self._refusal
        if held == 0:
            recent.pop(conn, None)  # re-inserted: newest last
            recent[conn] = now
        self.refused += 1
        self._log.refused(
            peer,
            method,
            None,
            max_inflight=limit,
            fair_share=share,
            connection_calls=held,
            contenders=contenders,
        )
        return refusal

    def forget(self, conn: object) -> None:
        """``conn`` has ended: it is no longer a contender. Not a checkpoint."""
        self.recent.pop(conn, None)


def _peer_host(peer: str) -> str:
    host, sep, _ = peer.rpartition(":")
    return host if sep else peer


def _bounded(key: str) -> str:
    if len(key) <= _MAX_KEY // 4 or len(key.encode("utf-8", "surrogatepass")) <= _MAX_KEY:
        return key
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
    return "sha:" + digest.hexdigest()


@final
@dataclass(frozen=True, slots=True)
class RateLimitStatistics:
    """A snapshot of :meth:`RateLimitInterceptor.statistics`.

    Attributes:
        admitted: Calls let through.
        refused: Calls refused with ``RESOURCE_EXHAUSTED``.
        keys: Callers tracked now (at most ``max_keys``).
        keys_evicted: Callers forgotten at ``max_keys`` before their bucket refilled.
    """

    admitted: int
    refused: int
    keys: int
    keys_evicted: int


@final
class RateLimitInterceptor:
    """A server interceptor giving each caller ``rate`` calls a second (bursts of ``burst``).

    ::

        limiter = rpc.RateLimitInterceptor(100, burst=20, key="metadata:x-api-key")
        async with rpc.open_server([svc], interceptors=[limiter]): ...

    Put it first (outermost), so refused calls cost no other interceptor's work. A
    refused call fails with ``RESOURCE_EXHAUSTED`` and details ``refused=rate_limit``,
    ``retry-after-ms`` (see :mod:`._admission`). Memory is bounded by ``max_keys``
    callers (:class:`~trio_micro.toolkit.KeyedRateLimiter` evicts the least recently
    used), and each key by 64 bytes: longer ones (huge metadata values) are replaced by
    their digest. Calls without the metadata key share the key ``""``.

    Args:
        rate: Calls per second per caller, > 0.
        burst: Calls a caller may make at once, >= 1.
        key: ``"peer"`` (the caller's host, any port) or ``"metadata:NAME"`` (the value
            of request metadata ``NAME``, e.g. an API key).
        max_keys: Most callers tracked at once.

    Raises:
        TypeError / ValueError: A bad argument.

    .. versionadded:: 0.2
    """

    __slots__ = (
        "_admitted",
        "_key",
        "_limiter",
        "_log",
        "_peer",
        "_peer_key",
        "_refused",
        "_retry_ms",
        "key",
    )

    def __init__(
        self, rate: float, burst: int = 1, *, key: str = "peer", max_keys: int = 100_000
    ) -> None:
        rate = check_number("rate", rate)
        check_int("burst", burst, minimum=1)
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        if key == "peer":
            self._key: str | None = None
        elif key.startswith("metadata:") and len(key) > len("metadata:"):
            self._key = key.removeprefix("metadata:")
        else:
            raise ValueError(f"key must be 'peer' or 'metadata:NAME', got {key!r}")
        self.key = key
        self._limiter: KeyedRateLimiter[str] = KeyedRateLimiter(rate, burst, max_keys=max_keys)
        # The wait for one token, at most: what a refused caller is told.
        self._retry_ms = str(max(1, math.ceil(1000 / rate)))
        self._admitted = 0
        self._refused = 0
        self._log = RefusalLog("rate_limit")
        self._peer: str | None = None  # the last call's peer, and its key
        self._peer_key = ""

    def __repr__(self) -> str:
        return f"RateLimitInterceptor({self._limiter!r}, key={self.key!r})"

    def statistics(self) -> RateLimitStatistics:
        """Counts so far; not a checkpoint."""
        stats = self._limiter.statistics()
        return RateLimitStatistics(
            admitted=self._admitted,
            refused=self._refused,
            keys=stats.keys,
            keys_evicted=stats.keys_evicted,
        )

    def intercept(
        self, call: ServerCall, proceed: Callable[[], Awaitable[None]]
    ) -> Awaitable[None]:
        """Take a token for the caller and proceed, or refuse the call (see the class docs).

        Checkpoints: ``proceed``'s; a refusal raises without one. A plain function that
        returns ``proceed()``'s awaitable (the interceptor protocol allows it): an admitted
        call pays no coroutine of its own here, the hot path of admission.
        """
        name = self._key
        if name is None:
            # A connection's calls share one peer string: its host is worked out once per
            # run of calls from the same connection, not per call.
            peer = call.peer
            if peer is not self._peer:
                self._peer_key = _peer_host(peer)
                self._peer = peer
            key = self._peer_key
        else:
            key = _bounded(call.metadata.get(name, ""))
        # The time the server read the call: one clock read fewer per call (passed by
        # position: cheaper than now=, see toolkit._ratelimit).
        now = call.received
        try:
            self._limiter.acquire_nowait(key, 1, now)
        except trio.WouldBlock:
            self._refused += 1
            self._log.refused(call.peer, f"{call.service}/{call.method}", key, now)
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                "rate limit exceeded",
                {REFUSED: "rate_limit", RETRY_AFTER_MS: self._retry_ms},
            ) from None
        self._admitted += 1
        return proceed()
