"""The demo's settings, its error, and its workload (Zipf-like user ids)."""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from examples.user_service.service import DB_QUERY

if TYPE_CHECKING:
    from .tls import DemoCertificates

#: The service the replicas run, and how the client calls it.
SERVICE_SPEC: Final = "examples.user_service:UserService"
SERVICE: Final = "users"
METHOD: Final = "users/get_user"
#: The order service the ``orders-N`` replicas run, and the client's CreateOrder.
ORDERS_SPEC: Final = "examples.orders:OrderService"
ORDERS: Final = "orders"
CREATE_ORDER: Final = "orders/create_order"
#: The notifier process, and the name of its child.
NOTIFIER: Final = "notifier"
#: Seconds the client gives each CreateOrder (its deadline crosses to the GetUser behind it).
CREATE_ORDER_DEADLINE: Final = 10.0
#: The order of stopping: the notifier, then orders, then users, then the rest.
STOP_ORDER: Final = (NOTIFIER, f"{ORDERS}-", f"{SERVICE}-")
#: The user service's log event for one database query.
DB_QUERY_EVENT: Final = DB_QUERY
#: The exponent of the Zipf-like law of user ids.
ZIPF_EXPONENT: Final = 1.1

NOTIFIER_READY: Final = re.compile(r"^notifier following orders on (\S+) after order \d+$")
REGISTRY_READY: Final = re.compile(r"^registry listening on (\S+)$")
SERVE_READY: Final = re.compile(r"^serving \S+ on (\S+)$")
#: Seconds a child may take to print its ready line (startup on a busy 2-core machine).
START_TIMEOUT: Final = 30.0
#: Seconds to wait for the channel to be connected to every replica.
DISCOVERY_TIMEOUT: Final = 20.0
#: Seconds a child may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 15.0
#: Seconds to wait for a child to be gone after SIGKILL.
KILL_TIMEOUT: Final = 5.0
QUANTILES: Final = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


class DemoError(Exception):
    """The demo cannot go on (a child did not start, the replicas were not found)."""


# ---------------------------------------------------------------------- the workload


def zipf_user_ids(
    users: int, n: int, *, exponent: float = ZIPF_EXPONENT, seed: int = 0
) -> list[int]:
    """Return ``n`` user ids in ``1..users`` drawn from a Zipf-like law.

    The user of popularity rank ``k`` (1 the most popular) is drawn with a weight of
    ``1 / k**exponent``; which user has which rank is a seeded shuffle, so the popular
    users are spread over the id range. The same arguments give the same list. Sampling
    is a binary search over the cumulative weights (O(log users) per id).

    Raises:
        TypeError / ValueError: ``users`` is not an int >= 1, ``n`` not an int >= 0,
            ``exponent`` not a finite number >= 0, or ``seed`` not an int.
    """
    for name, value, minimum in (("users", users, 1), ("n", n, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if isinstance(exponent, bool) or not isinstance(exponent, int | float):
        raise TypeError(f"exponent must be a number, got {exponent!r}")
    if not 0 <= exponent < math.inf:
        raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    by_rank = list(range(1, users + 1))
    rng.shuffle(by_rank)
    cumulative = list(itertools.accumulate(1 / k**exponent for k in range(1, users + 1)))
    total = cumulative[-1]
    last = users - 1
    return [
        by_rank[min(bisect.bisect_right(cumulative, rng.random() * total), last)] for _ in range(n)
    ]


@dataclass(frozen=True, kw_only=True)
class Config:
    users: int
    calls: int
    concurrency: int
    replicas: int
    workers: int
    ttl: float
    seed: int
    kill: bool
    run_dir: Path
    orders: int = 0  # order-service replicas; 0: the users-only demo
    order_share: float = 0.0  # the share of the calls that are CreateOrder
    notifier: bool = False
    tls: DemoCertificates | None = None  # --tls: every connection is mutual TLS


def order_calls(n: int, share: float, *, seed: int = 0) -> list[bool]:
    """Which of ``n`` calls are CreateOrder (True) rather than GetUser: each with
    probability ``share``, seeded (the same arguments give the same list)."""
    rng = random.Random(seed + 1)  # not the user ids' own sequence
    return [rng.random() < share for _ in range(n)]
