"""Abuse guards that need a clock but no I/O: the caller passes the time in.

:class:`WindowCounter` counts events over a sliding time window and says when more than
``limit`` of them fell inside one window. The server uses it against the "rapid reset" flood
(CVE-2023-44487): a client that opens streams and cancels them before they are answered
costs itself nothing and the server a task per call. Counting *cancelled-before-answered*
streams per unit of time, rather than CANCELs that arrive in the same read as their
REQUEST, catches the flood whatever the read boundaries (a CANCEL sent 1 ms later arrives
in a later read) while a client that cancels now and then, however long it stays
connected, never trips it.

Sans-io: :meth:`WindowCounter.record` takes ``now`` (any monotonic clock in seconds, e.g.
``trio.current_time()``), never reads a clock itself, and never imports trio.
"""

from __future__ import annotations

import math
from collections import deque
from typing import final

__all__ = ["WindowCounter"]


@final
class WindowCounter:
    """Count events in a sliding window of ``window`` seconds; trip above ``limit``.

    Exact, not estimated: it remembers the times of the last ``limit`` events (so its memory
    is bounded by ``limit``, whatever the peer does) and :meth:`record` returns False when
    the new event is the ``limit + 1``-th within ``window`` seconds.

    With ``max_fraction``, it trips only when those events are also more than that
    fraction of all the events of their kind (``out_of``, a running total the caller passes
    to :meth:`record`) since the oldest one remembered: calls cancelled before their answer
    among all the calls started, so a client that cancels a few percent of a high call rate
    (hedging, timeouts) never trips it, while a flood that cancels nearly every call does.

    Args:
        limit: Events tolerated within any ``window`` seconds (>= 1).
        window: The window's length in seconds (> 0, finite).
        max_fraction: ``None`` (count only), or a fraction in (0, 1]: see above.

    ::

        guard = WindowCounter(limit=1000, window=10.0)
        if not guard.record(now):
            ...  # more than 1000 events in the last 10 s: GOAWAY(ENHANCE_YOUR_CALM)
    """

    __slots__ = ("_times", "_totals", "limit", "max_fraction", "tripped", "window")

    def __init__(self, limit: int, window: float, max_fraction: float | None = None) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        if (
            not isinstance(window, (int, float))
            or isinstance(window, bool)
            or not math.isfinite(window)
            or window <= 0
        ):
            raise ValueError(f"window must be a finite number of seconds > 0, got {window!r}")
        self.limit = limit
        self.window = float(window)
        #: True once :meth:`record` has returned False.
        self.tripped = False
        if max_fraction is not None and (
            not isinstance(max_fraction, (int, float))
            or isinstance(max_fraction, bool)
            or not 0 < max_fraction <= 1
        ):
            raise ValueError(f"max_fraction must be in (0, 1] or None, got {max_fraction!r}")
        self.max_fraction = max_fraction
        self._times: deque[float] = deque(maxlen=limit)
        # The caller's running total at each remembered event (only with max_fraction).
        self._totals: deque[int] = deque(maxlen=limit)

    def __len__(self) -> int:
        """Events remembered (at most ``limit``; older ones may be outside the window)."""
        return len(self._times)

    def record(self, now: float, out_of: int = 0) -> bool:
        """Record one event at ``now``; False if it makes more than ``limit`` in a window.

        ``out_of``: with ``max_fraction``, the caller's running total of events of this
        kind (this one included); it must not go down.

        Once it has returned False it keeps returning False (:attr:`tripped`): the caller is
        expected to end the connection. ``now`` must not go backwards.
        """
        times = self._times
        fraction = self.max_fraction
        if len(times) == self.limit and now - times[0] < self.window:
            totals = self._totals
            # `limit` events since the oldest remembered: too many, unless they are a small
            # share of all the events of their kind counted since then.
            if fraction is None or self.limit > fraction * (out_of - totals[0]):
                self.tripped = True
        times.append(now)
        if fraction is not None:
            self._totals.append(out_of)
        return not self.tripped
