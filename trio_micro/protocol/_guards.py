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

    Args:
        limit: Events tolerated within any ``window`` seconds (>= 1).
        window: The window's length in seconds (> 0, finite).

    ::

        guard = WindowCounter(limit=1000, window=10.0)
        if not guard.record(now):
            ...  # more than 1000 events in the last 10 s: GOAWAY(ENHANCE_YOUR_CALM)
    """

    __slots__ = ("_times", "limit", "tripped", "window")

    def __init__(self, limit: int, window: float) -> None:
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
        self._times: deque[float] = deque(maxlen=limit)

    def __len__(self) -> int:
        """Events remembered (at most ``limit``; older ones may be outside the window)."""
        return len(self._times)

    def record(self, now: float) -> bool:
        """Record one event at ``now``; False if it makes more than ``limit`` in a window.

        Once it has returned False it keeps returning False (:attr:`tripped`): the caller is
        expected to end the connection. ``now`` must not go backwards.
        """
        times = self._times
        if len(times) == self.limit and now - times[0] < self.window:
            self.tripped = True
        times.append(now)
        return not self.tripped
