"""Retrying idempotent calls: :class:`RetryPolicy` and the retry budget.

A unary call of a method marked ``@rpc.unary(idempotent=True)`` that fails with
``UNAVAILABLE`` (the server said so, or the connection failed under it) is tried again
-- on another endpoint when there is one -- after a backoff with *full jitter*
(:class:`~trio_micro.toolkit.Backoff`, the one backoff rule of trio_micro): a delay
drawn uniformly from ``[0, min(max_backoff, initial_backoff * multiplier**n))`` (AWS
Architecture Blog, "Exponential Backoff And Jitter"). At most ``max_attempts`` attempts
in all, and never one that would start after the caller's deadline: then the last
error is raised at once instead of sleeping into the deadline.

The *retry budget* keeps a failing cluster from being stormed (Finagle's ``RetryBudget``).
Calls and retries count for a window of the last ``budget_ttl`` seconds; a retry is
allowed while the retries in the window stay within ``budget_ratio`` of the calls in it
plus a floor of ``budget_min_per_second * budget_ttl`` (for channels that just started or
make few calls). With the defaults (0.2, 10 s, 10/s) a channel making 1,000 calls/s can
retry a burst of about 2,000 failures at once -- every call in flight on a replica that just
died -- while a cluster that keeps failing sees at most 20 % more calls plus 10 a second.
A call the budget refuses fails with its error.

Theory of operation: the window is a ring of ``_SLOTS`` slots of ``budget_ttl / _SLOTS``
seconds, each counting the calls and retries that happened in it; the current slot is
two plain counters and the window's completed slots are summed in two running totals, so
:meth:`RetryBudget.deposit` is a clock read and an increment, and moving to a new slot
subtracts the slots that left the window. A count thus leaves the window between
``0.9 * budget_ttl`` and ``budget_ttl`` after it was made. The clock is the trio run's
(the :class:`~trio.testing.MockClock` in tests) unless another is given.

Calls the server refused with GOAWAY (never processed) are different: they are retried
for every method, at once, without backoff or budget, since the server did nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import trio

from trio_micro._validate import check_int, check_number, check_seconds
from trio_micro.toolkit import Backoff

__all__ = ["RetryPolicy"]

_SLOTS = 10  # slots in the budget's window: the window is exact to budget_ttl / _SLOTS
# A retry is allowed when `ratio * calls + floor - retries` reaches 1, give or take float
# rounding: 0.29 * 100 calls is 28.999999999999996 and should allow 29 retries.
_EPSILON = 1e-9


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a channel retries idempotent calls that failed with ``UNAVAILABLE``.

    Args:
        max_attempts: Attempts in all, the first included (1 turns retries off).
        initial_backoff: Upper bound (seconds) of the first jittered delay.
        multiplier: Growth of the bound per attempt.
        max_backoff: Largest bound (seconds).
        budget_ratio: Retries allowed per call made in the last ``budget_ttl`` seconds
            (0.2: one retry per five calls; 0: none beyond the floor).
        budget_ttl: Seconds for which calls (and retries) count in the budget.
        budget_min_per_second: The budget's floor, in retries per second: a channel may
            always make ``budget_min_per_second * budget_ttl`` retries per ``budget_ttl``
            seconds, whatever its calls (0: no floor).

    Raises:
        TypeError / ValueError: A bad value.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.05
    multiplier: float = 2.0
    max_backoff: float = 1.0
    budget_ratio: float = 0.2
    budget_ttl: float = 10.0
    budget_min_per_second: float = 10.0

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts, minimum=1)
        check_seconds("initial_backoff", self.initial_backoff, finite=True)
        check_number("multiplier", self.multiplier)
        check_seconds("max_backoff", self.max_backoff, finite=True)
        check_number("budget_ratio", self.budget_ratio, zero=True)
        check_seconds("budget_ttl", self.budget_ttl, finite=True)
        check_number("budget_min_per_second", self.budget_min_per_second, zero=True)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry number ``retry`` (1 for the first)."""
        backoff = Backoff(
            initial=self.initial_backoff,
            maximum=self.max_backoff,
            multiplier=self.multiplier,
            rng=rng,
        )
        return backoff.delay(retry)


@final
class RetryBudget:
    """The retry budget of :class:`RetryPolicy` (see the module docstring); synchronous.

    Args:
        policy: Its ``budget_*`` fields size the budget.
        clock: Returns the time in seconds, never going back. By default the current
            trio run's clock (:func:`trio.lowlevel.current_clock`, a
            :class:`~trio.testing.MockClock` in tests), read directly rather than through
            :func:`trio.current_time`, which costs twice as much on every call; the
            budget must then be made inside ``trio.run``.

    Raises:
        RuntimeError: No ``clock`` given, outside ``trio.run``.
    """

    __slots__ = (
        "_calls",
        "_clock",
        "_floor",
        "_ratio",
        "_retries",
        "_ring_calls",
        "_ring_retries",
        "_slot",
        "_slots_per_second",
        "_window_calls",
        "_window_retries",
        "retries",
        "throttled",
    )

    def __init__(self, policy: RetryPolicy, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or trio.lowlevel.current_clock().current_time
        self._ratio = policy.budget_ratio
        self._floor = policy.budget_min_per_second * policy.budget_ttl
        # Multiplying is cheaper than `//`; int() truncates, which is floor for trio's
        # clocks (never negative).
        self._slots_per_second = _SLOTS / policy.budget_ttl
        self._slot = 0  # the current slot: int(time * slots per second)
        self._calls = 0  # calls and retries in the current slot
        self._retries = 0
        # Completed slots still in the window, at index slot % (_SLOTS - 1), and their sums.
        self._ring_calls = [0] * (_SLOTS - 1)
        self._ring_retries = [0] * (_SLOTS - 1)
        self._window_calls = 0
        self._window_retries = 0
        self.retries = 0  # retries allowed, ever
        self.throttled = 0  # retries refused, ever

    def deposit(self) -> None:
        """Count a call."""
        slot = int(self._clock() * self._slots_per_second)
        if slot != self._slot:
            self._advance(slot)
        self._calls += 1

    def withdraw(self) -> bool:
        """Count a retry and return ``True`` if the budget allows one; else count it refused."""
        slot = int(self._clock() * self._slots_per_second)
        if slot != self._slot:
            self._advance(slot)
        retries = self._window_retries + self._retries
        allowed = self._ratio * (self._window_calls + self._calls) + self._floor
        if allowed - retries >= 1 - _EPSILON:
            self._retries += 1
            self.retries += 1
            return True
        self.throttled += 1
        return False

    def _advance(self, slot: int) -> None:
        """Make ``slot`` the current slot: complete the current one, drop those now too old."""
        ring_calls, ring_retries = self._ring_calls, self._ring_retries
        size = len(ring_calls)
        steps = slot - self._slot
        if not 0 < steps <= size:
            # Everything left the window (or the clock went back, which trio's never do).
            ring_calls[:] = [0] * size
            ring_retries[:] = [0] * size
            self._window_calls = self._window_retries = 0
        else:
            # Slots self._slot .. slot - 1 are complete; each takes the place of the one
            # `size` slots before it, which left the window.
            window_calls, window_retries = self._window_calls, self._window_retries
            for done in range(self._slot, slot):
                i = done % size
                window_calls -= ring_calls[i]
                window_retries -= ring_retries[i]
                ring_calls[i] = ring_retries[i] = 0
            i = self._slot % size
            ring_calls[i], ring_retries[i] = self._calls, self._retries
            self._window_calls = window_calls + self._calls
            self._window_retries = window_retries + self._retries
        self._slot = slot
        self._calls = self._retries = 0
