"""Token-bucket rate limiting with no background task: `RateLimiter`, `KeyedRateLimiter`.

Theory of operation
-------------------
The bucket is kept as a *theoretical arrival time* (GCRA, the generic cell rate
algorithm): ``tat`` is the instant at which the bucket will be full again if nobody
takes another token. A request for ``n`` tokens at ``now`` fits iff
``max(tat, now) + n / rate - burst / rate <= now``; taking it moves ``tat`` forward by
``n / rate``. Nothing ticks: every answer is computed on demand from
``trio.current_time()``, so the limiter has no task, costs nothing when idle, and is
driven by ``trio.testing.MockClock`` in tests.

A caller that already knows the time (a server, from the read that brought the call) may
pass it as ``acquire_nowait(..., now=t)`` and spare the clock read. ``now`` is not
keyword-only (Go's ``AllowN`` takes it by position too): a keyword-only parameter keeps
CPython 3.11 from specializing every call, and a hot path passes it by position, which is
cheaper than a keyword (benchmarks/RESULTS.md counts both). Such a ``now`` may be
stale or earlier than one given before, and that is safe: the test above is monotonic in
``now``, and the anchor only moves forward (the bucket counts as full, and is re-anchored,
only when ``now >= tat``, which an earlier ``now`` than the last re-anchoring never is).
So an earlier ``now`` never refills the bucket; it only finds fewer tokens. In any order
of ``now``, the calls admitted with a ``now`` in any window of length ``w`` take at most
``burst + rate * w`` tokens, the bound of a monotonic clock (``tat`` grows by ``n / rate``
per admission and never passes ``now + burst / rate``).

Exactness. ``tat`` is never accumulated as a float (adding ``0.001`` sixty thousand
times drifts). It is stored as ``anchor + count / rate``: a float ``anchor`` (the last
instant the bucket was full and got drained) and an exact integer ``count`` of tokens
issued since then. A waiter sleeps until ``anchor + (count - burst) / rate`` and, when
woken, is admitted without re-deriving that instant from the clock, so a client
hammering ``acquire()`` for ``t`` seconds is admitted exactly ``floor(rate * t) + burst``
times, and a wake-up that is late by less than ``burst / rate`` costs no throughput.

Fairness. Waiters form one FIFO queue. Only the head of the queue holds a reservation
(it has advanced ``count``) and sleeps until its deadline; the others are parked on an
event and hold nothing. So a big request at the head is never overtaken by small ones
behind it, ``acquire_nowait()`` fails while anyone is queued, and a cancelled head
simply hands its reservation back (``count -= n``) and wakes the next waiter, which
re-evaluates from scratch: no token is lost and no place is skipped.

`KeyedRateLimiter` keeps one such bucket per key in an LRU-ordered dict. A bucket that
has refilled to full and has no waiters behaves exactly like a brand-new one, so it is
dropped ("forgotten") when it reaches the old end of the LRU: each call examines at
most two of the oldest entries, which is amortized O(1) and needs no sweeper task. At
``max_keys`` the least recently used key is evicted even if its bucket is not full; see
`KeyedRateLimiter` for what that costs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar, final

import trio

from .._validate import check_int, check_number

__all__ = [
    "KeyedRateLimiter",
    "KeyedRateLimiterStatistics",
    "RateLimiter",
    "RateLimiterStatistics",
]

KeyT = TypeVar("KeyT", bound=Hashable)

# How many of the oldest keys each KeyedRateLimiter call examines for forgetting.
# Each call adds at most one key, so examining two keeps up with any insertion rate.
_SWEEP_PER_CALL = 2


def _check_rate(rate: object) -> float:
    return check_number("rate", rate, unit="tokens per second")


def pacer(max_per_second: object) -> Callable[[], Awaitable[None]] | None:
    """The ``acquire`` of a new ``RateLimiter(max_per_second, burst=1)``; None for None.

    What ``run_all`` / ``amap`` await before starting each job (aiometer's
    ``max_per_second``).

    Raises:
        TypeError: ``max_per_second`` is not an int, a float or None.
        ValueError: ``max_per_second`` is not finite and > 0.
    """
    if max_per_second is None:
        return None
    rate = check_number("max_per_second", max_per_second, unit="jobs per second")
    return RateLimiter(rate, burst=1).acquire


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise TypeError(f"now must be an int or float (a trio.current_time()), got {now!r}")
    try:
        value = float(now)
    except OverflowError:  # an int beyond any float
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"now must be a finite number (a trio.current_time()), got {now!r}")
    return value


def _check_n(n: object, burst: int) -> int:
    n = check_int("n", n, minimum=1)
    if n > burst:
        # Could never be admitted: the bucket never holds more than `burst` tokens.
        raise ValueError(f"n must be <= burst ({burst}), got {n!r}")
    return n


@final
@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    """A snapshot of a `RateLimiter`.

    Attributes:
        rate: Tokens added per second.
        burst: Capacity of the bucket.
        tokens_available: Whole tokens that could be taken right now if nobody were
            queued (``0`` while the head waiter holds its reservation).
        tasks_waiting: Tasks queued in `RateLimiter.acquire`.
        tokens_admitted: Tokens handed out since creation, by both ``acquire`` methods.
    """

    rate: float
    burst: int
    tokens_available: int
    tasks_waiting: int
    tokens_admitted: int


@final
class RateLimiter:
    """A token bucket: at most ``burst`` tokens at once, refilled at ``rate`` per second.

    It starts full (like Go's ``rate.Limiter``), so the first ``burst`` tokens are
    available at once. There is no background task; see the module docstring.
    Waiting is FIFO-fair: a later small request never overtakes an earlier large one.

    Choosing ``burst``: a full bucket discards new tokens, so a task that wakes up
    late loses throughput once its delay exceeds ``burst / rate``. Trio wakes sleepers
    up to about 1 ms late (``epoll`` has millisecond resolution), more on a busy
    machine; if one task must get the full rate, give it ``burst >= rate * 0.01``
    (10 ms of tokens). ``benchmarks/bench_limits.py`` measures this.

    A limiter is used by the tasks of one ``trio.run``; it may be created outside it.

    Args:
        rate: Tokens per second, a finite number > 0.
        burst: Bucket capacity and the largest ``n`` a single call may ask for.

    Raises:
        TypeError: If ``rate`` is not an int or float, or ``burst`` is not an int.
        ValueError: If ``rate`` is not finite and > 0, or ``burst`` < 1.
    """

    __slots__ = ("_admitted", "_anchor", "_burst", "_count", "_rate", "_waiters")

    def __init__(self, rate: float, burst: int = 1) -> None:
        self._rate = _check_rate(rate)
        self._burst = check_int("burst", burst, minimum=1)
        # tat = anchor + count / rate. -inf: full since forever, so no clock is needed
        # at construction and the first call finds a full bucket.
        self._anchor = -math.inf
        self._count = 0
        self._admitted = 0
        # Queue of waiters, oldest first: wake-up event -> tokens requested.
        self._waiters: OrderedDict[trio.Event, int] = OrderedDict()

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self._rate!r}, burst={self._burst!r})"

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> int:
        """Bucket capacity: the most tokens that can be taken at once."""
        return self._burst

    # -- the bucket arithmetic ------------------------------------------------------

    def _is_full(self, now: float) -> bool:
        return now >= self._anchor + self._count / self._rate

    def _try_take(self, now: float, n: int) -> bool:
        if self._is_full(now):
            # Drained from full: re-anchor here. Only whole tokens are discarded this
            # way, never a partly refilled one, because a full bucket holds no fraction.
            self._anchor = now
            self._count = n
            return True
        count = self._count + n
        if self._anchor + (count - self._burst) / self._rate <= now:
            self._count = count
            return True
        return False

    def _reserve(self, now: float, n: int) -> float:
        """Take ``n`` tokens now or in the future; return when they are ours."""
        if self._is_full(now):
            self._anchor = now
            self._count = n
            return now
        self._count += n
        return self._anchor + (self._count - self._burst) / self._rate

    def _is_idle_and_full(self, now: float) -> bool:
        return not self._waiters and self._is_full(now)

    def _tokens_available(self, now: float) -> int:
        if self._is_full(now):
            return self._burst
        anchor, count, burst, rate = self._anchor, self._count, self._burst, self._rate
        available = min(burst, max(0, math.floor((now - anchor) * rate) - count + burst))
        # Settle float rounding with the exact predicate `_try_take` uses.
        while available < burst and anchor + (count + available + 1 - burst) / rate <= now:
            available += 1
        while available > 0 and anchor + (count + available - burst) / rate > now:
            available -= 1
        return available

    # -- public API -----------------------------------------------------------------

    def acquire_nowait(self, n: int = 1, now: float | None = None) -> None:
        """Take ``n`` tokens if they are available right now (Go's ``Allow()``).

        Never jumps the queue: while any task waits in `acquire`, this raises
        `trio.WouldBlock` even if tokens have accrued, because they belong to the
        head of the queue. Not a checkpoint.

        Args:
            n: Tokens to take, ``1 <= n <= burst``.
            now: The present as the caller last read it from ``trio.current_time()``,
                to spare the limiter that read (``None``: it reads the clock). It may be
                stale or earlier than a ``now`` given before: an earlier time never
                refills the bucket, it only finds fewer tokens (see the module
                docstring). A time later than the clock's moves the bucket into the
                future: don't pass one.

        Raises:
            trio.WouldBlock: If the tokens are not available now, or tasks are waiting.
            TypeError: If ``n`` is not an int, or ``now`` not an int or float.
            ValueError: If ``n`` < 1 or ``n`` > ``burst``, or ``now`` is NaN or infinite.
        """
        if type(n) is not int or not 0 < n <= self._burst:
            _check_n(n, self._burst)  # raises, or accepts an int subclass
        if now is None:
            now = trio.current_time()
        elif type(now) is not float or now - now != 0.0:  # not a float, or inf/NaN
            now = _check_now(now)  # raises, or accepts an int
        self._take_nowait(now, n)

    def _take_nowait(self, now: float, n: int) -> None:
        """`acquire_nowait` once ``n`` is checked, at ``now`` (shared with `KeyedRateLimiter`)."""
        if self._waiters:
            raise trio.WouldBlock
        # `_try_take`, inlined: this is the hot path of request admission.
        anchor, rate = self._anchor, self._rate
        if now >= anchor + self._count / rate:
            self._anchor = now
            self._count = n
        else:
            count = self._count + n
            if anchor + (count - self._burst) / rate > now:
                raise trio.WouldBlock
            self._count = count
        self._admitted += n

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` tokens are available, then take them.

        Always a checkpoint. Waiters are served in FIFO order. If cancelled while
        waiting, the call takes nothing and gives its place back: if it was at the head
        of the queue its reservation is returned and the next waiter is re-evaluated.
        Cancellation either happens before any token is taken or not at all.

        Args:
            n: Tokens to take, ``1 <= n <= burst``.

        Raises:
            TypeError: If ``n`` is not an int (raised before any checkpoint).
            ValueError: If ``n`` < 1 or ``n`` > ``burst`` (raised before any checkpoint).
        """
        if type(n) is not int or not 0 < n <= self._burst:
            _check_n(n, self._burst)  # raises, or accepts an int subclass
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._waiters and self._try_take(trio.current_time(), n):
            self._admitted += n
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._wait_in_line(n)
        self._admitted += n

    async def _wait_in_line(self, n: int) -> None:
        waiters = self._waiters
        ticket = trio.Event()
        waiters[ticket] = n
        reserved = False
        scheduled = False  # have we yielded to the scheduler yet?
        try:
            if len(waiters) > 1:
                # Someone is ahead: park, holding nothing, until we are the head.
                await ticket.wait()
                scheduled = True
            deadline = self._reserve(trio.current_time(), n)
            reserved = True
            if deadline > trio.current_time():
                await trio.sleep_until(deadline)
                scheduled = True
            # Admitted, however late we woke: the tokens were reserved at `deadline`.
            reserved = False
        finally:
            is_head = next(iter(waiters)) is ticket
            del waiters[ticket]
            if reserved:
                # Cancelled (or interrupted) while holding the head reservation: hand
                # it back. Nobody else touched the bucket meanwhile, so this is exact.
                self._count -= n
            if is_head and waiters:
                next(iter(waiters)).set()
        if not scheduled:
            # Only if the clock moved since the fast path failed; still a checkpoint.
            await trio.lowlevel.cancel_shielded_checkpoint()

    def statistics(self) -> RateLimiterStatistics:
        """Return a snapshot of the limiter's state; see `RateLimiterStatistics`.

        Must be called inside ``trio.run`` (it reads the clock). Not a checkpoint.
        """
        return RateLimiterStatistics(
            rate=self._rate,
            burst=self._burst,
            tokens_available=self._tokens_available(trio.current_time()),
            tasks_waiting=len(self._waiters),
            tokens_admitted=self._admitted,
        )


@final
@dataclass(frozen=True, slots=True)
class KeyedRateLimiterStatistics:
    """A snapshot of a `KeyedRateLimiter`.

    Attributes:
        rate: Tokens added per second, per key.
        burst: Capacity of each key's bucket.
        keys: Keys currently tracked (at most ``max_keys``).
        max_keys: The memory bound.
        tasks_waiting: Tasks queued in `KeyedRateLimiter.acquire` on tracked keys.
        tokens_admitted: Tokens handed out since creation, over all keys.
        keys_forgotten: Keys dropped because their bucket had refilled to full (harmless:
            such a bucket is indistinguishable from a new one).
        keys_evicted: Keys dropped at ``max_keys`` while their bucket was not full (each
            one let that key restart with a full bucket).
    """

    rate: float
    burst: int
    keys: int
    max_keys: int
    tasks_waiting: int
    tokens_admitted: int
    keys_forgotten: int
    keys_evicted: int


@final
class KeyedRateLimiter(Generic[KeyT]):
    """One token bucket per key (per client, per user), in bounded memory.

    Each key behaves like its own `RateLimiter` with the same ``rate`` and ``burst``.
    Memory is bounded two ways, both lazily and in amortized O(1) per call, with no
    background task:

    * A key whose bucket has refilled to full (and has no waiters) is forgotten when it
      reaches the least-recently-used end: a full bucket is indistinguishable from a new
      one, so forgetting it changes nothing.
    * When a new key arrives and ``max_keys`` keys are tracked, the least recently used
      key is evicted even if its bucket is not full. Trade-off: that key's next request
      starts from a full bucket again, so a client among more than ``max_keys`` active
      ones can get up to ``burst`` extra tokens per eviction; tasks already waiting on the
      evicted bucket are still served by it. Size ``max_keys`` above the number of keys
      active within ``burst / rate`` seconds and evictions stay at zero; they are counted
      in `statistics`.

    Args:
        rate: Tokens per second for each key, a finite number > 0.
        burst: Capacity of each key's bucket, >= 1.
        max_keys: Most keys tracked at once, >= 1.

    Raises:
        TypeError: If ``rate`` is not an int or float, or ``burst`` or ``max_keys`` is
            not an int.
        ValueError: If ``rate`` is not finite and > 0, ``burst`` < 1, or ``max_keys`` < 1.
    """

    __slots__ = ("_admitted", "_buckets", "_burst", "_evicted", "_forgotten", "_max_keys", "_rate")

    def __init__(self, rate: float, burst: int = 1, *, max_keys: int = 10_000) -> None:
        self._rate = _check_rate(rate)
        self._burst = check_int("burst", burst, minimum=1)
        self._max_keys = check_int("max_keys", max_keys, minimum=1)
        # Least recently used first.
        self._buckets: OrderedDict[KeyT, RateLimiter] = OrderedDict()
        self._admitted = 0
        self._forgotten = 0
        self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"KeyedRateLimiter(rate={self._rate!r}, burst={self._burst!r}, "
            f"max_keys={self._max_keys!r})"
        )

    def _bucket(self, key: KeyT, now: float) -> RateLimiter:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is not None:
            if len(buckets) == 1:  # the one key (a server's lone peer): nothing to sweep
                return bucket
            buckets.move_to_end(key)
        # Sweep after the lookup and never the bucket we hand out: a caller below its rate
        # finds its bucket full at every call, and forgetting it then would cost a new one
        # per call.
        for _ in range(_SWEEP_PER_CALL):
            if not buckets:
                break
            oldest = next(iter(buckets.values()))
            if oldest is bucket or not oldest._is_idle_and_full(now):
                break
            buckets.popitem(last=False)
            self._forgotten += 1
        if bucket is not None:
            return bucket
        if len(buckets) >= self._max_keys:
            _, evicted = buckets.popitem(last=False)
            if evicted._is_idle_and_full(now):
                self._forgotten += 1
            else:
                self._evicted += 1
        bucket = buckets[key] = RateLimiter(self._rate, self._burst)
        return bucket

    def acquire_nowait(self, key: KeyT, n: int = 1, now: float | None = None) -> None:
        """Take ``n`` of ``key``'s tokens if available right now; see `RateLimiter`.

        Not a checkpoint. Never jumps the queue of tasks waiting on the same key.

        Args:
            key: Whose bucket to use; any hashable.
            n: Tokens to take, ``1 <= n <= burst``.
            now: The present as the caller last read it from ``trio.current_time()``
                (``None``: read the clock); as in `RateLimiter.acquire_nowait`, stale or
                earlier times are safe. It also decides which idle keys are forgotten:
                an earlier time forgets fewer.

        Raises:
            trio.WouldBlock: If the tokens are not available now, or tasks are waiting.
            TypeError: If ``n`` is not an int, ``key`` is unhashable, or ``now`` is not
                an int or float.
            ValueError: If ``n`` < 1 or ``n`` > ``burst``, or ``now`` is NaN or infinite.
        """
        if type(n) is not int or not 0 < n <= self._burst:
            _check_n(n, self._burst)  # raises, or accepts an int subclass
        if now is None:
            now = trio.current_time()
        elif type(now) is not float or now - now != 0.0:  # not a float, or inf/NaN
            now = _check_now(now)  # raises, or accepts an int
        self._bucket(key, now)._take_nowait(now, n)
        self._admitted += n

    async def acquire(self, key: KeyT, n: int = 1) -> None:
        """Wait until ``n`` of ``key``'s tokens are available, then take them.

        Always a checkpoint; FIFO among the waiters of the same key; keys never wait
        for each other. Cancellation behaves as in `RateLimiter.acquire`: nothing is
        taken and the next waiter on the key is re-evaluated.

        Args:
            key: Whose bucket to use; any hashable.
            n: Tokens to take, ``1 <= n <= burst``.

        Raises:
            TypeError: If ``n`` is not an int, or ``key`` is unhashable.
            ValueError: If ``n`` < 1 or ``n`` > ``burst``.
        """
        _check_n(n, self._burst)
        await self._bucket(key, trio.current_time()).acquire(n)
        self._admitted += n

    def statistics(self) -> KeyedRateLimiterStatistics:
        """Return a snapshot; see `KeyedRateLimiterStatistics`.

        O(number of keys). Not a checkpoint.
        """
        return KeyedRateLimiterStatistics(
            rate=self._rate,
            burst=self._burst,
            keys=len(self._buckets),
            max_keys=self._max_keys,
            tasks_waiting=sum(len(b._waiters) for b in self._buckets.values()),
            tokens_admitted=self._admitted,
            keys_forgotten=self._forgotten,
            keys_evicted=self._evicted,
        )
