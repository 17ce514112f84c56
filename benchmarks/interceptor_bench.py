"""The cost of one server interceptor per call, in isolation (issue #14).

::

    .venv/bin/python benchmarks/interceptor_bench.py

Times, in one trio run and interleaved (medians of 5 rounds of 200,000 calls): an empty
``answer`` step awaited directly (what a server without interceptors does), the same step
through one :class:`~trio_micro.rpc.RateLimitInterceptor` (a limit no caller reaches, keyed
by peer) called the way the server's chain calls its outermost interceptor,
and ``KeyedRateLimiter.acquire_nowait`` alone. No sockets: this is the CPU the interceptor
adds to each admitted call, which ``rpc_bench.py``'s ``trio_micro_ratelimit`` contender
measures end to end.

The interceptor takes the time from ``call.received`` (the server's read of the request),
set here once per round as a server sets it once per read; ``acquire`` reads the clock,
``acquire_now`` is given it by keyword (``now=t``), ``acquire_at`` by position, as the
interceptor gives it.

For instruction counts, ``--count STEP N`` runs only one step N times (``empty``,
``current_time``, ``perf_counter``, ``acquire``, ``acquire_now``, ``acquire_at``,
``intercept``); the difference of two runs under valgrind is the step's cost per call,
whatever the load::

    for n in 10000 110000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/interceptor_bench.py --count acquire $n; done
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

import trio

from trio_micro import rpc

CALLS = 200_000
ROUNDS = 5


class _Call:
    """The fields of a ServerCall that the rate-limit interceptor reads."""

    peer = "127.0.0.1:40000"
    metadata: ClassVar[dict[str, str]] = {}
    service = "bench"
    method = "echo"
    received: float | None = None  # set by the bench, as the server sets it per read


async def _main() -> None:
    limiter = rpc.RateLimitInterceptor(1e9, burst=1_000_000)
    call = _Call()

    async def answer() -> None:
        pass

    def innermost() -> Awaitable[None]:
        return answer()

    results: dict[str, list[float]] = {"direct": [], "chain": [], "acquire": []}
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CALLS):
            await answer()
        results["direct"].append(time.perf_counter() - start)
        call.received = trio.current_time()
        start = time.perf_counter()
        for _ in range(CALLS):
            await limiter.intercept(call, innermost)  # type: ignore[arg-type]
        results["chain"].append(time.perf_counter() - start)
        keyed = limiter._limiter
        start = time.perf_counter()
        for _ in range(CALLS):
            keyed.acquire_nowait("127.0.0.1")
        results["acquire"].append(time.perf_counter() - start)
    ns = {name: statistics.median(times) / CALLS * 1e9 for name, times in results.items()}
    print("| step | ns per call (median of 5 x 200,000) |")
    print("|---|---|")
    print(f"| empty answer, awaited directly | {ns['direct']:,.0f} |")
    print(f"| the same through one RateLimitInterceptor | {ns['chain']:,.0f} |")
    print(f"| KeyedRateLimiter.acquire_nowait alone | {ns['acquire']:,.0f} |")
    print(f"\ninterceptor cost per admitted call: {ns['chain'] - ns['direct']:,.0f} ns")


async def _count(step: str, n: int) -> None:
    limiter = rpc.RateLimitInterceptor(1e9, burst=1_000_000)
    keyed = limiter._limiter
    call = _Call()
    now = call.received = trio.current_time()

    def innermost() -> None:
        return None

    steps: dict[str, Callable[[], object]] = {
        "empty": lambda: None,
        "current_time": trio.current_time,
        "perf_counter": time.perf_counter,
        "acquire": lambda: keyed.acquire_nowait("127.0.0.1"),
        "acquire_now": lambda: keyed.acquire_nowait("127.0.0.1", now=now),
        "acquire_at": lambda: keyed.acquire_nowait("127.0.0.1", 1, now),
        "intercept": lambda: limiter.intercept(call, innermost),  # type: ignore[arg-type]
    }
    run = steps[step]
    for _ in range(n):
        run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count"]:
        trio.run(_count, sys.argv[2], int(sys.argv[3]))
    else:
        trio.run(_main)
