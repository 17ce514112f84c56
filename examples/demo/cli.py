"""``python -m examples.demo``: arguments, the run folder, and the exit code."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

import trio

from examples.options import count, seconds, share, whole_number
from trio_micro import observe

from .config import ORDERS_SPEC, SERVICE_SPEC, Config, DemoError
from .processes import busy_ports, kill_all_now, leftovers, remove_empty_outputs
from .report import (
    GROUP_BY,
    build_summary,
    logs_summary,
    print_summary,
    read_replica_logs,
    verdict,
)
from .run import Run, supervise
from .system import say
from .system_report import (
    notifier_figures,
    pick_trace,
    print_services,
    print_trace,
    read_call_records,
    service_tables,
    write_report,
)
from .tls import make_certificates

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_SIGNAL_BASE: Final = 128

_EPILOG: Final = """\
The run folder (--out, default ./demo-output/<time>) receives the JSON-lines logs of every
process (registry.jsonl, users-N.jsonl, orders-N.jsonl, notifier.jsonl, client.jsonl), their
stderr if any (*.stderr.txt), the databases (data/users.db, data/orders.db), summary.json (the
summary, for machines) and report.html (the report of the logs, with the service graph).

exit codes:
  0    every call succeeded and every process stopped cleanly
  1    some call failed, or a process did not start or stop cleanly (see the report)
  2    bad arguments
  128+N  interrupted by signal N (Ctrl-C: 130); the children are stopped first
"""


# ---------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The demo's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Start a registry, replicas of the example user and order services and "
        "the notifier as processes, find them through the registry, make GetUser and "
        "CreateOrder calls (which call GetUser) with Zipf-like user ids, kill one users "
        "replica with SIGKILL halfway (no call may fail), stop everything cleanly, then "
        "summarise the logs of every process: per-service tables, the waterfall of one of "
        "the slowest CreateOrders, and report.html with the service graph.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--users", type=whole_number, default=10_000, help="users in the database (default 10000)"
    )
    parser.add_argument(
        "-n", "--calls", type=whole_number, default=20_000, help="calls in all (default 20000)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=whole_number, default=200, help="calls in flight (default 200)"
    )
    parser.add_argument(
        "--replicas", type=whole_number, default=3, help="user-service replicas (default 3)"
    )
    parser.add_argument(
        "--workers",
        type=whole_number,
        default=1,
        help="worker processes per users replica (trio-micro serve --workers; default 1)",
    )
    parser.add_argument(
        "--orders",
        type=count,
        default=2,
        help="order-service replicas (default 2; 0: GetUser calls only, no notifier)",
    )
    parser.add_argument(
        "--order-share",
        type=share,
        default=0.3,
        help="share of the calls that are CreateOrder (default 0.3)",
    )
    parser.add_argument("--no-notifier", action="store_true", help="do not run the notifier")
    parser.add_argument(
        "--ttl",
        type=seconds,
        default=2.0,
        help="registration TTL of the replicas in seconds (default 2)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the user-id sequence (default 0)"
    )
    parser.add_argument(
        "--no-kill", action="store_true", help="do not kill a replica halfway through"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS everywhere: a throwaway CA and certificates in a temporary folder "
        "(removed at exit); every server requires a client certificate",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder, new or empty (default: ./demo-output/<date-time>)",
    )
    return parser


def _check_args(args: argparse.Namespace) -> Config:
    if not args.no_kill and args.replicas < 2:
        raise DemoError(
            f"--replicas {args.replicas}: killing one needs at least 2 (or pass --no-kill)"
        )
    return Config(
        users=args.users,
        calls=args.calls,
        concurrency=args.concurrency,
        replicas=args.replicas,
        workers=args.workers,
        ttl=args.ttl,
        seed=args.seed,
        kill=not args.no_kill,
        run_dir=_run_dir(args.out),
        orders=args.orders,
        order_share=args.order_share if args.orders else 0.0,
        notifier=bool(args.orders) and not args.no_notifier,
    )


def _run_dir(out: Path | None) -> Path:
    """Create the run folder (an existing one must be empty) and return its absolute path."""
    if out is None:
        base = Path("demo-output") / datetime.now().strftime("%Y%m%d-%H%M%S")
        out = base
        for n in itertools.count(2):
            if not out.exists():
                break
            out = base.with_name(f"{base.name}-{n}")
    try:
        if out.exists():
            if not out.is_dir():
                raise DemoError(f"--out {str(out)!r} exists and is not a folder")
            if any(out.iterdir()):
                raise DemoError(f"--out {str(out)!r} is not empty (logs are appended to)")
        (out / "data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the run folder {str(out)!r}: {exc.strerror}") from None
    return out.resolve()


# ---------------------------------------------------------------------- the command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with ``argv`` (default: ``sys.argv[1:]``); return the exit code (see
    the package docs)."""
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trio-micro-demo-tls-") as certs:
        try:
            config = _check_args(args)
            if args.tls:
                config = dataclasses.replace(config, tls=make_certificates(Path(certs)))
        except DemoError as exc:
            print(f"demo: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return _main(config)


def _main(config: Config) -> int:
    run = Run(config)
    run_dir = config.run_dir
    system = f", {config.orders} replicas of {ORDERS_SPEC}" if config.orders else ""
    system += " and the notifier" if config.notifier else ""
    calls = "GetUser" + (f" and {config.order_share:.0%} CreateOrder" if config.orders else "")
    say(
        f"demo: {config.replicas} replicas x {config.workers} workers of {SERVICE_SPEC}"
        f"{system}; {config.users:,} users, {config.calls:,} calls: {calls} "
        f"({config.concurrency} in flight)"
        + ("; one users replica is killed halfway" if config.kill else "")
        + ("; mutual TLS everywhere (throwaway CA)" if config.tls else "")
    )
    say(f"run folder: {run_dir}")
    observe.configure_logging(format="json", file=run_dir / "client.jsonl")
    try:
        trio.run(supervise, run)
    except KeyboardInterrupt:  # a Ctrl-C before the signal handling began or after it ended
        run.signal = run.signal or "SIGINT"
    except BaseException as exc:
        error = _demo_error(exc)
        if error is None:
            raise
        run.error = error
        print(f"demo: error: {error}", file=sys.stderr, flush=True)
    finally:
        kill_all_now(run.children)
    remove_empty_outputs(run.children)
    run.leftovers = leftovers(run.children)
    run.busy_ports = busy_ports(run.children)
    run.duration = time.monotonic() - run.started
    logs = {c.name: read_replica_logs(c) for c in run.replicas()}
    summary = build_summary(run, logs)
    records = read_call_records(run_dir)
    summary["services"] = service_tables(run, records)
    summary["notifier"] = notifier_figures(run)
    summary["trace"] = pick_trace(records) if config.orders else None
    print_summary(summary)
    print_services(summary)
    report = run_dir / "report.html"
    problems = verdict(summary)
    if run.signal is None:
        try:
            if logs_summary(run_dir) != 0:
                problems.append("`trio-micro logs summary` failed")
            if config.orders and print_trace(run_dir, summary["trace"]) != 0:
                problems.append("`trio-micro logs trace` failed")
            write_report(run_dir, report, records, summary["trace"], group_by=GROUP_BY)
        except Exception:  # a bug there must not hide the demo's own results
            traceback.print_exc()
            problems.append("the logs' report crashed (traceback above)")
    summary["report"] = str(report) if report.exists() else None
    summary["problems"] = problems
    code = EXIT_OK if not problems else EXIT_FAILED
    if run.signal is not None:
        code = EXIT_SIGNAL_BASE + int(signal.Signals[run.signal])
    summary["exit_code"] = code
    summary_path = run_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    print()
    print(f"logs:    {run_dir}/*.jsonl")
    if summary["report"]:
        print(f"report:  {report}")
    print(f"summary: {summary_path}")
    if problems:
        print(f"demo FAILED ({run.duration:.1f} s): " + "; ".join(problems))
    else:
        print(
            f"demo OK ({run.duration:.1f} s): {summary['calls']:,} calls, none failed"
            + (", one replica killed halfway" if config.kill else "")
            + "; every process stopped cleanly"
        )
    return code


def _demo_error(exc: BaseException) -> str | None:
    """The message(s) of the :class:`DemoError` s that ``exc`` is or holds, else None.

    None when ``exc`` holds anything else (a bug, which is raised with its traceback).
    """
    if isinstance(exc, DemoError):
        return str(exc)
    if not isinstance(exc, BaseExceptionGroup):
        return None
    errors, rest = exc.split(DemoError)
    if errors is None or rest is not None:
        return None
    leaves: list[BaseException] = []
    stack: list[BaseException] = [errors]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    return "; ".join(str(e) for e in leaves)
