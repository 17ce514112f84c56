"""Retrying idempotent calls: :class:`RetryPolicy` and the retry budget.

A unary call of a method marked ``@rpc.unary(idempotent=True)`` that fails with
``UNAVAILABLE`` (the server said so, or the connection failed under it) is tried again
-- on another endpoint when there is one -- after a backoff with *full jitter*: a delay
drawn uniformly from ``[0, min(max_backoff, initial_backoff * multiplier**n))`` (AWS
Architecture Blog, "Exponential Backoff And Jitter"). At most ``max_attempts`` attempts
in all, and never one that would start after the caller's deadline: then the last
error is raised at once instead of sleeping into the deadline.

The *retry budget* keeps a failing cluster from being stormed: a token bucket that every
call fills by ``budget_ratio`` tokens and every retry empties by one, holding at most
``budget_tokens``. So over any stretch of time retries are at most ``budget_ratio`` of
calls, plus the ``budget_tokens`` the bucket started with (Finagle's ``RetryBudget``,
gRPC's retry throttling). A call that finds the bucket empty fails with its error.

Calls the server refused with GOAWAY (never processed) are different: they are retried
for every method, at once, without backoff or budget, since the server did nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import final

from trio_micro._validate import check_int, check_number, check_seconds

__all__ = ["RetryPolicy"]


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a channel retries idempotent calls that failed with ``UNAVAILABLE``.

    Args:
        max_attempts: Attempts in all, the first included (1 turns retries off).
        initial_backoff: Upper bound (seconds) of the first jittered delay.
        multiplier: Growth of the bound per attempt.
        max_backoff: Largest bound (seconds).
        budget_ratio: Retries allowed per call, over time (0.2: one retry per five calls).
        budget_tokens: Retries the budget holds at most (and starts with).

    Raises:
        TypeError / ValueError: A bad value.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.05
    multiplier: float = 2.0
    max_backoff: float = 1.0
    budget_ratio: float = 0.2
    budget_tokens: float = 10.0

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts, minimum=1)
        check_seconds("initial_backoff", self.initial_backoff, finite=True)
        check_number("multiplier", self.multiplier)
        check_seconds("max_backoff", self.max_backoff, finite=True)
        check_number("budget_ratio", self.budget_ratio)
        check_number("budget_tokens", self.budget_tokens)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry number ``retry`` (1 for the first)."""
        bound = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return (rng or random).uniform(0, bound)


@final
class RetryBudget:
    """The token bucket of :class:`RetryPolicy`; synchronous, no clock."""

    __slots__ = ("_max", "_ratio", "retries", "throttled", "tokens")

    def __init__(self, policy: RetryPolicy) -> None:
        self._ratio = policy.budget_ratio
        self._max = policy.budget_tokens
        self.tokens = policy.budget_tokens
        self.retries = 0
        self.throttled = 0

    def deposit(self) -> None:
        """Count a call."""
        tokens = self.tokens + self._ratio
        self.tokens = tokens if tokens < self._max else self._max

    def withdraw(self) -> bool:
        """Take a token for a retry; ``False`` (and count it) if there is none."""
        if self.tokens >= 1:
            self.tokens -= 1
            self.retries += 1
            return True
        self.throttled += 1
        return False
