"""Making calls over a channel's pool: deadlines sent, retries, calls in flight.

:class:`Caller` takes a connection from the :class:`~._endpoints.EndpointPool` (without a
coroutine when one is ready), sends the call and, for a unary call, waits for the answer.
Payloads arrive encoded and answers leave encoded: types, interceptors and decoding are
:mod:`._stubs`'.

Retries (:mod:`._retry`): calls refused by a server's GOAWAY (never processed) are retried
at once on another connection, for any method, at most ``_MAX_REFUSED_RETRIES`` times.
Unary calls a server refused by admission control (``RESOURCE_EXHAUSTED`` with a
``refused`` detail: ``max_inflight`` or a rate limit; the handler never ran) are retried
for any method on another endpoint at once, under the retry policy's ``max_attempts``,
the deadline and the retry budget; when the only endpoint left is the one that refused,
the retry waits the server's ``retry-after-ms`` or the policy's backoff, whichever is
longer. A refusal counts neither for nor against the endpoint's ejection.
Idempotent unary calls failing with ``UNAVAILABLE`` are retried with full-jitter backoff
(:meth:`~trio_micro.rpc.RetryPolicy.backoff`) under the deadline and the retry budget,
preferring another endpoint.

Failure accrual (issue #15, gray failure): ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``
results, a call still unanswered when the caller's deadline passes, and a *slow* answer
(slower than the method's :class:`~._balancing.LatencyTracker` threshold: by default 10 x
the median of its last 64 successful calls, at least 100 ms) count towards the endpoint's
outlier ejection; any other answer resets it. Every unary outcome also feeds the
endpoint's success rate (:meth:`~._endpoints.EndpointPool.answered`): an endpoint that
answers errors its peers don't is ejected too. An idempotent call that may still be retried
is cut at that threshold (when it lies before the deadline) and retried at once on another
endpoint under the retry budget -- a replica that stopped answering costs a threshold's
wait, not the deadline. A cut attempt is retried even when the budget is spent (it was
already given up), but the retry is then not cut.

Deadlines: each call sends the time left in the caller's effective deadline
(:func:`trio.current_effective_deadline`), rounded *up* to the millisecond so the server's
deadline never fires before the caller's. Cancellation: see :mod:`._client`. The attempts
of a hedged call (:mod:`._hedging`) each prefer an endpoint the previous one did not use.
"""

from __future__ import annotations

import math
import random
from typing import Final, final

import trio

from trio_micro.protocol import CallType, Status

from ._admission import REFUSED, RETRY_AFTER_MS
from ._balancing import Balancer, LatencyTracker
from ._client import ClientConnection, RefusedError, _Call
from ._context import ClientCall
from ._endpoints import EndpointPool
from ._errors import RpcError
from ._hedging import hedge_tried
from ._interceptors import ClientInterceptor
from ._retry import RetryBudget, RetryPolicy
from ._transport import Endpoint

__all__: list[str] = []

# How many attempts a call refused by GOAWAY (never processed) gets, on other connections.
_MAX_REFUSED_RETRIES: Final = 5
# Methods with a latency tracker of their own; any more share one (the method names of a
# channel are the caller's, but `Channel.unary` takes any string).
_MAX_TRACKED_METHODS: Final = 256


def _timeout_ms() -> int | None:
    deadline = trio.current_effective_deadline()
    if deadline == math.inf:
        return None
    return max(0, math.ceil((deadline - trio.current_time()) * 1000))


@final
class Caller:
    """Sends the calls of one channel; see the module docs.

    Args:
        pool: Where connections come from.
        balancer: Chooses among ready connections (the pool's).
        interceptors: The channel's client interceptors, run by the stubs around
            :meth:`unary` and :meth:`open_stream`.
        retry: How idempotent calls are retried; ``None``: never.

    Attributes:
        interceptors: As given.
        budget: The retry budget (``None`` without ``retry``).
    """

    __slots__ = (
        "_balancer",
        "_in_flight",
        "_latency",
        "_pool",
        "_ready",
        "_retry",
        "_rng",
        "budget",
        "interceptors",
    )

    def __init__(
        self,
        pool: EndpointPool,
        balancer: Balancer,
        interceptors: tuple[ClientInterceptor, ...],
        retry: RetryPolicy | None,
    ) -> None:
        self._pool = pool
        self._ready = pool.ready  # the pool's list, never replaced
        self._balancer = balancer
        self.interceptors = interceptors
        self._retry = retry
        self.budget = RetryBudget(retry) if retry is not None else None
        self._rng = random.Random()
        self._in_flight = 0  # unary calls waiting for an answer (see unary)
        self._latency: dict[str, LatencyTracker] = {}  # unary methods' (with ejection on)

    def _tracker(self, method: str) -> LatencyTracker | None:
        """The latency tracker of ``method``; ``None`` when outlier ejection is off."""
        tracker = self._latency.get(method)
        if tracker is None:
            policy = self._pool.ejection
            if policy is None or policy.slow_call_factor == math.inf:
                return None
            if len(self._latency) >= _MAX_TRACKED_METHODS:
                method = ""  # the shared tracker of the methods beyond the limit
                tracker = self._latency.get(method)
            if tracker is None:
                tracker = LatencyTracker(policy.slow_call_factor, policy.slow_call_min)
                self._latency[method] = tracker
        return tracker

    async def unary(
        self,
        method: str,
        payload: bytes,
        metadata: dict[str, str] | None,
        call: ClientCall | None,
        idempotent: bool,
    ) -> bytes:
        """Make a unary call; return the encoded response. A checkpoint.

        ``call`` (when interceptors run) gets the peer of each attempt. Retries as the
        module docs say.

        Raises:
            RpcError: The server's status, or ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` /
                ``CANCELLED`` (see :mod:`._client`).
        """
        budget = self.budget
        if budget is not None:
            budget.deposit()
        attempt = 1
        tried = hedge_tried.get()  # a hedged call's attempts avoid each other's endpoint
        avoid: Endpoint | None = tried[-1] if tried else None
        refused: RpcError | None = None  # the last attempt was refused by admission control
        tracker = self._tracker(method)
        policy = self._retry
        max_attempts = policy.max_attempts if policy is not None else 1
        cut = idempotent and tracker is not None
        while True:
            ready = self._ready
            if ready and avoid is None:  # pick()'s common case, without its coroutine
                conn = ready[0] if len(ready) == 1 else ready[self._balancer.pick(ready)]
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                conn = await self._pool.pick(avoid)
                if refused is not None and conn.endpoint == avoid:
                    await self._wait_refused(refused, attempt)
            if call is not None:
                call.peer = conn.peer
            if tried is not None:
                tried.append(conn.endpoint)
            # Calls in flight over the whole channel: with several connections, each may
            # see a lone call while its frames could still share a write with others'.
            self._in_flight = in_flight = self._in_flight + 1
            # One clock read and one deadline lookup per attempt (the deadline lookup walks
            # the caller's cancel scopes): they give the timeout sent, the cut and the
            # latency measured.
            start = trio.current_time()
            deadline = trio.current_effective_deadline()
            timeout_ms = (
                None if deadline == math.inf else max(0, math.ceil((deadline - start) * 1000))
            )
            slow = math.inf if tracker is None else tracker.threshold
            try:
                try:
                    if cut and attempt < max_attempts and slow < deadline - start:
                        # The caller's deadline is sent, not the cut's.
                        with trio.move_on_at(start + slow) as scope:
                            data = await conn.unary(
                                method, payload, timeout_ms, metadata, in_flight == 1
                            )
                        if scope.cancelled_caught:  # cut: count it and retry elsewhere at once
                            self._pool.failed(conn.endpoint)
                            assert self.budget is not None
                            if not self.budget.withdraw():
                                cut = False  # given up already: retry once more, uncut
                            attempt += 1
                            avoid = conn.endpoint
                            continue
                    else:
                        data = await conn.unary(
                            method, payload, timeout_ms, metadata, in_flight == 1
                        )
                finally:
                    self._in_flight -= 1
            except trio.Cancelled:
                if trio.current_time() >= deadline:  # unanswered for the caller's whole deadline
                    self._pool.failed(conn.endpoint)
                raise
            except RefusedError as exc:
                refused = None
                if attempt >= _MAX_REFUSED_RETRIES:
                    raise RpcError(Status.UNAVAILABLE, exc.message) from None
            except RpcError as exc:
                refused = None
                if exc.code is Status.RESOURCE_EXHAUSTED and REFUSED in exc.details:
                    # Admission control: never ran, so any method may go elsewhere.
                    if policy is None or attempt >= policy.max_attempts:
                        raise
                    assert budget is not None
                    if not budget.withdraw():
                        raise
                    refused = exc
                else:
                    if exc.code is Status.DEADLINE_EXCEEDED:
                        self._pool.failed(conn.endpoint)
                        raise
                    if exc.code is not Status.UNAVAILABLE:
                        # It answered (reachable), but the answer counts for its success
                        # rate: an empty replica answers NOT_FOUND where its peers don't.
                        self._pool.answered(conn.endpoint, exc.code)
                        raise
                    self._pool.failed(conn.endpoint)
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
                if tracker is not None:
                    elapsed = trio.current_time() - start
                    tracker.add(elapsed)
                    if elapsed > slow:
                        self._pool.failed(conn.endpoint)  # answered, but too slowly
                        return data
                self._pool.succeeded(conn.endpoint)
                return data
            attempt += 1
            avoid = conn.endpoint

    async def _wait_refused(self, refused: RpcError, attempt: int) -> None:
        """Before retrying a refused call on the endpoint that refused it: wait.

        The server's ``retry-after-ms`` (at most the policy's ``max_backoff``) or the
        policy's jittered backoff, whichever is longer; raises ``refused`` at once if
        that would pass the deadline. A checkpoint.
        """
        policy = self._retry
        assert policy is not None
        delay = policy.backoff(attempt - 1, self._rng)
        hint = refused.details.get(RETRY_AFTER_MS, "")
        if hint.isdigit():
            delay = max(delay, min(int(hint) / 1000, policy.max_backoff))
        if trio.current_time() + delay >= trio.current_effective_deadline():
            raise refused
        await trio.sleep(delay)

    async def open_stream(
        self,
        method: str,
        payload: bytes,
        metadata: dict[str, str] | None,
        call: ClientCall | None,
        call_type: CallType = CallType.SERVER_STREAM,
    ) -> tuple[ClientConnection, int, _Call]:
        """Send a stream call's request; return its connection, stream id and record.

        A checkpoint. Retried only when refused by GOAWAY.

        Raises:
            RpcError: ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` / ``CANCELLED``.
        """
        refused: RefusedError | None = None
        avoid: Endpoint | None = None
        for _ in range(_MAX_REFUSED_RETRIES):
            conn = await self._pool.pick(avoid)
            if call is not None:
                call.peer = conn.peer
            try:
                stream_id, record = await conn.open_stream(
                    method, payload, _timeout_ms(), metadata, call_type
                )
            except RefusedError as exc:
                refused = exc
                avoid = conn.endpoint
                continue
            return conn, stream_id, record
        assert refused is not None
        raise RpcError(Status.UNAVAILABLE, refused.message)
