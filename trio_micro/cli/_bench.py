"""``trio-micro bench``: load one method with the same request, then report.

It looks the method up through reflection (as ``trio-micro call`` does), opens one
channel with a :class:`~trio_micro.cli._load.PeerCounter` (calls per replica), and runs
:func:`~trio_micro.cli._load.run_load`: ``--calls`` calls, ``--concurrency`` in flight,
at most ``--rate`` per second, each under a ``--timeout`` deadline. Progress goes to
standard error; the report (or ``--json``) to standard output.

Exit codes: 0 every call succeeded; 1 some call failed (the report says which codes);
``64 + N`` the method lookup ended with status code N (as for ``trio-micro call``); 2 bad
input; 130/143 stopped by SIGINT/SIGTERM (:mod:`._common`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from .. import rpc
from ._call import (
    add_target_arguments,
    call_metadata,
    check_target,
    coerce_request,
    deadline_exceeded,
    find_method,
    list_services,
    parse_method,
    parse_request,
    run_rpc_command,
    status_exit,
)
from ._common import EXIT_ERROR, EXIT_OK, epilog, integer, number, seconds
from ._load import LoadResult, PeerCounter, progress, run_load
from ._output import print_json, print_table, safe_text
from ._tls import open_command_channel

__all__: list[str] = []  # internal to the cli package

#: The latency quantiles reported, by label.
QUANTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))

EPILOG: Final = epilog(
    """\
targets:
  host:port                      one server
  registry://host:port/SERVICE   the replicas of SERVICE in a registry server (balanced)
  etcd://host:port/SERVICE       the replicas of SERVICE in etcd (balanced)""",
    ok="every call succeeded (1: some call failed, see the errors in the report)",
    more="  64+N the method lookup (reflection) ended with status code N, as for call",
)


def add_bench_parser(subparsers: Any) -> None:
    """Add the ``bench`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="load a method: throughput, latency percentiles, errors, calls per server",
        description="Call one method many times with the same request and report "
        "throughput, latency percentiles (p50/p90/p99/max, within 1%), errors by status "
        "code and calls per server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser, method=True)
    parser.add_argument(
        "-n", "--calls", type=integer(1), default=1000, help="calls to make (default 1000)"
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=integer(1),
        default=10,
        help="calls in flight at most (default 10)",
    )
    parser.add_argument(
        "-r",
        "--rate",
        type=number("calls per second"),
        default=None,
        help="calls started per second at most",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(inf=True),
        default=10.0,
        help="deadline of each call, and of the method lookup, in seconds (default 10)",
    )
    parser.add_argument(
        "--connections",
        type=integer(1),
        default=1,
        help="connections per server address (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run_bench(args: argparse.Namespace) -> int:
    """Run the parsed ``bench`` command; return the exit code."""
    return run_rpc_command("bench", bench_main, args)


async def bench_main(args: argparse.Namespace) -> int:
    """The ``bench`` command, in trio. Returns the exit code (see the module docs)."""
    service, name = parse_method(args.method)
    request = parse_request(args.request)
    check_target(args.target)
    counter = PeerCounter()
    opening = open_command_channel(args, interceptors=[counter], pool_size=args.connections)
    metadata = call_metadata(args)
    async with opening as channel:
        with trio.move_on_after(args.timeout) as scope:
            try:
                method = find_method(await list_services(channel), service, name)
            except rpc.RpcError as exc:
                return status_exit(exc)
            request = coerce_request(request, method.description.request_schema)
        if scope.cancelled_caught:
            return status_exit(deadline_exceeded(args.target, args.timeout))
        call = _caller(channel, method.wire_name, method.description, request, metadata, args)
        # Count only the load, not the lookup.
        counter.counts.clear()
        counter.failures.clear()
        if args.quiet:
            result = await run_load(
                call, total=args.calls, concurrency=args.concurrency, rate=args.rate
            )
        else:
            with progress(args.calls, method.description.name) as on_progress:
                result = await run_load(
                    call,
                    total=args.calls,
                    concurrency=args.concurrency,
                    rate=args.rate,
                    on_progress=on_progress,
                )
    report = _report(args, method.wire_name, result, counter)
    if args.json:
        print_json(report)
    else:
        _print_report(report, result)
    return EXIT_OK if result.failed == 0 else EXIT_ERROR


def _caller(
    channel: rpc.Channel,
    wire_name: str,
    description: rpc.MethodDescription,
    request: Any,
    metadata: dict[str, str] | None,
    args: argparse.Namespace,
) -> Callable[[int], Awaitable[None]]:
    timeout: float = args.timeout
    target: str = args.target
    idempotent = description.idempotent

    if description.kind == "server_stream":

        async def invoke() -> None:
            async with channel.call_stream(wire_name, request, metadata=metadata) as items:
                async for _ in items:
                    pass

    else:

        async def invoke() -> None:
            await channel.call(wire_name, request, idempotent=idempotent, metadata=metadata)

    if math.isinf(timeout):

        async def unbounded(index: int) -> None:
            await invoke()

        return unbounded

    async def bounded(index: int) -> None:
        with trio.move_on_after(timeout) as scope:
            await invoke()
        if scope.cancelled_caught:
            raise deadline_exceeded(target, timeout)

    return bounded


def _number(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _report(
    args: argparse.Namespace, method: str, result: LoadResult, counter: PeerCounter
) -> dict[str, Any]:
    return {
        "target": args.target,
        "method": method,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "calls": result.calls,
        "ok": result.ok,
        "failed": result.failed,
        "elapsed_s": round(result.elapsed, 6),
        "throughput": round(result.throughput(), 3),
        "latency_ms": {label: _number(result.latency_ms(q)) for label, q in QUANTILES}
        | {"mean": _number(result.latency.mean)},
        "errors": dict(result.errors),
        "first_errors": list(result.first_errors),
        "peers": dict(sorted(counter.counts.items())),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_report(report: dict[str, Any], result: LoadResult) -> None:
    print(
        f"{report['method']} at {report['target']}: {result.calls:,} calls in "
        f"{result.elapsed:.3f} s, {result.throughput():,.1f} calls/s, "
        f"{result.ok:,} ok, {result.failed:,} failed "
        f"(concurrency {report['concurrency']}"
        + (f", rate {report['rate']:g}/s)" if report["rate"] is not None else ")")
    )
    latency = report["latency_ms"]
    print_table(
        "latency of ok calls, ms",
        ("p50", "p90", "p99", "max", "mean"),
        [tuple(_ms(latency[k]) for k in ("p50", "p90", "p99", "max", "mean"))],
    )
    if result.errors:
        print_table(
            "errors",
            ("code", "calls"),
            [(code, f"{n:,}") for code, n in sorted(result.errors.items())],
        )
        for message in result.first_errors:
            print(safe_text(f"  e.g. {message}"))
    else:
        print("errors: none")
    peers = report["peers"]
    if peers:
        print_table(
            "calls per server",
            ("server", "calls", "share"),
            [
                (peer, f"{n:,}", f"{100 * n / max(1, result.calls):.1f}%")
                for peer, n in peers.items()
            ],
        )
