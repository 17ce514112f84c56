"""Microseconds per call spent in the OpenTelemetry interceptors alone (issue #17).

Runs each interceptor's ``intercept`` in a loop with a no-op ``proceed`` inside one trio
run: with the SDK (every span sampled, a ``BatchSpanProcessor`` whose exporter drops the
spans, histograms aggregated in memory; the providers of ``rpc_bench.py``'s
``trio_micro_otel`` contender) and with the API alone. The server's calls carry a
``traceparent`` and run with trio_micro's call span current, as the server sets them::

    .venv/bin/python benchmarks/otel_cost.py [--calls 20000] [--runs 3]

Prints the median of ``--runs`` runs per mode and side (modes interleaved).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio
from _rpc_worker import _otel_providers

from trio_micro import observe, otel, rpc

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _proceed() -> None:
    pass


async def _server_us(interceptor: otel.OtelServerInterceptor, calls: int) -> float:
    scope = trio.CancelScope()
    total = 0.0
    for _ in range(calls):
        call = rpc.ServerCall(
            "users", "get_user", "unary", "127.0.0.1:5555",
            {observe.TRACEPARENT: TRACEPARENT}, float("inf"), 1, scope, "127.0.0.1:6000",
        )  # fmt: skip
        with observe.use_span(observe.child_of_traceparent(TRACEPARENT)):
            start = time.perf_counter()
            await interceptor.intercept(call, _proceed)
            total += time.perf_counter() - start
    return total / calls * 1e6


async def _client_us(interceptor: otel.OtelClientInterceptor, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call = rpc.ClientCall("users", "get_user", "unary", {}, None)
        call.peer = "127.0.0.1:6000"
        await interceptor.intercept(call, _proceed)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    modes: dict[str, dict[str, Any]] = {"sdk": _otel_providers("sdk"), "api": {}}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for mode, providers in modes.items():
            sides: dict[str, Callable[[], Any]] = {
                "server": lambda p=providers: _server_us(
                    otel.OtelServerInterceptor(**p), args.calls
                ),
                "client": lambda p=providers: _client_us(
                    otel.OtelClientInterceptor(**p), args.calls
                ),
            }
            for side, run in sides.items():
                results.setdefault((mode, side), []).append(trio.run(run))
    print(f"median of {args.runs} runs of {args.calls:,} calls, us per call")
    for (mode, side), values in results.items():
        print(f"  {mode:3} {side:6} {statistics.median(values):7.1f}")


if __name__ == "__main__":
    main()
