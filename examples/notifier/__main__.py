"""``python -m examples.notifier --orders TARGET``: run the notifier as a process.

It prints one ready line, ``notifier following orders on TARGET after order N``, then
notifies every new order until SIGTERM or SIGINT. On that signal it stops reading, lets
the notifications in flight finish for ``--grace`` seconds, writes the cursor (every
order up to it is done) to ``--state`` and prints ``notifier stopped: ...``. A later run
with the same ``--state`` resumes after that cursor: what was still in flight is handed
back, not lost.

With ``--tls-ca`` (and ``--tls-cert``/``--tls-key`` for mutual TLS) it reaches orders and
the registry behind a ``registry://`` target over TLS (the demo's ``--tls``).

Exit codes: 128 + the signal number after a stop by signal (as ``trio-micro serve``), 1
when the state file can't be read or written, 2 on bad arguments (a certificate file
that can't be used among them).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

import trio_micro.registry  # noqa: F401 - registers the registry:// and etcd:// targets
from examples.options import seconds, whole_number
from examples.orders.service import OrderService
from examples.targets import tls_context
from trio_micro import observe, rpc

from .worker import LogDownstream, Notifier

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_SIGNAL_BASE: Final = 128
READY: Final = "notifier following orders on {target} after order {cursor}"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m examples.notifier``."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.notifier",
        description="Notify the user of every new order, rate-limited per user.",
    )
    parser.add_argument(
        "--orders", required=True, metavar="TARGET", help="registry://HOST:PORT/orders or HOST:PORT"
    )
    parser.add_argument(
        "--state", type=Path, metavar="FILE", help="cursor file: read at start, written at stop"
    )
    parser.add_argument("--workers", type=whole_number, default=8, help="in flight (default 8)")
    parser.add_argument(
        "--rate", type=seconds, default=5.0, help="notifications/s per user (default 5)"
    )
    parser.add_argument("--burst", type=whole_number, default=2, help="per user (default 2)")
    parser.add_argument(
        "--grace", type=seconds, default=5.0, help="seconds to finish at stop (default 5)"
    )
    parser.add_argument("--log-file", type=Path, metavar="FILE", help="JSON-lines log file")
    tls = parser.add_argument_group("TLS (to orders and the registry: mutual TLS with a cert)")
    tls.add_argument("--tls-ca", metavar="FILE", help="CA that verifies the servers (PEM)")
    tls.add_argument("--tls-cert", metavar="FILE", help="client certificate to present (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    return parser


def read_cursor(state: Path | None) -> int:
    """The cursor saved in ``state``, 0 when there is none yet.

    Raises:
        OSError / ValueError: The file can't be read or holds no cursor.
    """
    if state is None or not state.exists():
        return 0
    text = state.read_text().strip()
    cursor = int(text)
    if cursor < 0:
        raise ValueError(f"{str(state)!r} holds {text!r}, not a cursor")
    return cursor


async def _run(
    args: argparse.Namespace, cursor: int, context: ssl.SSLContext | None
) -> tuple[Notifier, str]:
    stop = trio.Event()
    stopped_by = ""
    async with (
        rpc.open_channel(args.orders, ssl_context=context) as channel,
        trio.open_nursery() as nursery,
    ):
        notifier = Notifier(
            channel.stub(OrderService),
            LogDownstream(),
            cursor=cursor,
            workers=args.workers,
            rate=args.rate,
            burst=args.burst,
        )

        async def watch_signals() -> None:
            nonlocal stopped_by
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    stopped_by = stopped_by or signal.Signals(signum).name
                    stop.set()

        nursery.start_soon(watch_signals)
        print(READY.format(target=args.orders, cursor=cursor), flush=True)
        await notifier.run(stop, grace=args.grace)
        nursery.cancel_scope.cancel()
    return notifier, stopped_by


def main(argv: Sequence[str] | None = None) -> int:
    """Run the notifier with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        cursor = read_cursor(args.state)
    except (OSError, ValueError) as exc:
        print(f"notifier: error: cannot read the state file: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        context = tls_context(args.tls_ca, args.tls_cert, args.tls_key)
    except ValueError as exc:  # rpc.TlsFileError names the file
        print(f"notifier: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    observe.configure_logging(format="json", file=args.log_file)
    notifier, stopped_by = trio.run(_run, args, cursor, context)
    stats = notifier.statistics()
    try:
        if args.state is not None:
            args.state.write_text(f"{stats.cursor}\n")
    except OSError as exc:
        print(f"notifier: error: cannot write the state file: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"notifier stopped: {stats.sent} sent, {stats.failed} failed, {stats.refused} refused "
        f"and retried; every order up to {stats.cursor} done",
        flush=True,
    )
    return EXIT_SIGNAL_BASE + int(signal.Signals[stopped_by]) if stopped_by else 0


if __name__ == "__main__":
    raise SystemExit(main())
