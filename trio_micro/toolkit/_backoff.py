"""Exponential backoff with full jitter: :class:`Backoff`, the one reconnect backoff.

Every loop in trio_micro that tries something again after a failure -- a channel's
connection slot reconnecting, a channel's resolver watch, a registry client's watch stream,
etcd lease renewals and watches, and the retries of idempotent calls
(:class:`~trio_micro.rpc.RetryPolicy`) -- waits the delays of this class.

The rule is *full jitter* (AWS Architecture Blog, "Exponential Backoff And Jitter"): the
delay before attempt ``n`` (1 for the first retry) is drawn uniformly from
``[0, min(maximum, initial * multiplier ** (n - 1)))``. Replicas that failed together
thus retry spread over the whole window instead of in step, which is what jitter is for;
of the usual rules it spreads them most and keeps the total work lowest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import final

from trio_micro._validate import check_number, check_seconds

__all__ = ["Backoff"]


@final
class Backoff:
    """The delays of one retry loop: exponential growth, full jitter (see the module docs).

    ::

        backoff = Backoff(initial=0.1, maximum=5.0)
        while True:
            try:
                await reconnect()
            except OSError:
                await trio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    Synchronous and not a checkpoint: it only computes delays; the caller sleeps them.

    Args:
        initial: Upper bound of the first delay (seconds).
        maximum: Largest upper bound (seconds).
        multiplier: Growth of the bound per attempt.
        rng: Where the jitter comes from (a seeded :class:`random.Random` in tests);
            default: the :mod:`random` module's generator.

    Raises:
        TypeError / ValueError: A bad value.
    """

    __slots__ = ("_attempt", "_uniform", "initial", "maximum", "multiplier")

    def __init__(
        self,
        *,
        initial: float = 0.1,
        maximum: float = 5.0,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = check_seconds("initial", initial, finite=True)
        self.maximum = check_seconds("maximum", maximum, finite=True)
        self.multiplier = check_number("multiplier", multiplier)
        self._uniform: Callable[[float, float], float] = (
            rng.uniform if rng is not None else random.uniform
        )
        self._attempt = 0

    def __repr__(self) -> str:
        return (
            f"<Backoff initial={self.initial!r} maximum={self.maximum!r} "
            f"multiplier={self.multiplier!r} attempt={self._attempt}>"
        )

    @property
    def attempt(self) -> int:
        """Delays handed out since the last :meth:`reset` (0 after it)."""
        return self._attempt

    def bound(self, attempt: int) -> float:
        """The upper bound of the delay before ``attempt`` (1 for the first retry)."""
        try:
            bound = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:  # long past the maximum
            return self.maximum
        return min(self.maximum, bound)

    def delay(self, attempt: int) -> float:
        """A jittered delay before ``attempt``, uniform in ``[0, bound(attempt))``.

        Stateless: for loops that count attempts themselves (call retries).
        """
        return self._uniform(0, self.bound(attempt))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the bound."""
        self._attempt += 1
        return self.delay(self._attempt)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self._attempt = 0
