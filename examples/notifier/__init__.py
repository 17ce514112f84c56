"""The notifier: a batch worker that follows new orders and notifies their users.

It reads the order service's ``ListOrders(follow=True)`` stream, fans the orders out to
N workers with :func:`trio_micro.amap`, rate-limits each user with
:class:`trio_micro.KeyedRateLimiter`, retries a refusing downstream after
:class:`trio_micro.Backoff` delays, and on SIGTERM finishes or hands back what is in
flight (see :mod:`.worker`).

Run it as a process::

    python -m examples.notifier --orders registry://127.0.0.1:50050/orders --state cursor.txt
"""

from __future__ import annotations

from .worker import Downstream, LogDownstream, Notification, Notifier, NotifierStatistics

__all__ = ["Downstream", "LogDownstream", "Notification", "Notifier", "NotifierStatistics"]
