"""``trio-micro health TARGET [SERVICE]``: exit 0 only when the target is serving.

Asks the server's health service (``trio_micro.health/check``, gRPC's health protocol;
see :mod:`trio_micro.rpc`) for SERVICE's status, the whole server's when SERVICE is left
out, prints it (``SERVING`` / ``NOT_SERVING``) and exits 0 only for ``SERVING``, so it
can be a Kubernetes exec probe::

    readinessProbe:
      exec: {command: [trio-micro, health, "127.0.0.1:50051"]}

Exit codes: 0 serving; 1 not serving (a draining server says so before it stops taking
calls); ``64 + N`` the check failed with status N, as for ``call``: 69 ``NOT_FOUND`` (no
such service), 78 ``UNAVAILABLE`` (unreachable), 68 ``DEADLINE_EXCEEDED`` (``--timeout``),
76 ``UNIMPLEMENTED`` (a server without the health service); 2 bad arguments; 130/143
stopped by a signal.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

import trio

from .. import rpc
from ._call import (
    STATUS_CODES_HELP,
    TARGETS_HELP,
    add_target_arguments,
    check_target,
    deadline_exceeded,
    run_rpc_command,
    status_exit,
)
from ._common import EXIT_ERROR, EXIT_OK, epilog, seconds
from ._tls import open_command_channel

__all__: list[str] = []  # internal to the cli package

_EPILOG: Final = epilog(
    TARGETS_HELP,
    """\
example (a Kubernetes exec probe):
  trio-micro health 127.0.0.1:50051 users --timeout 2""",
    ok="the service (or, without SERVICE, the server) is SERVING",
    more="  1    it answered NOT_SERVING (e.g. draining)\n"
    + STATUS_CODES_HELP
    + ",\n       76 UNIMPLEMENTED (no health service); 69 NOT_FOUND is an unknown SERVICE",
)


def add_health_parser(subparsers: Any) -> None:
    """Add the ``health`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "health",
        help="check a server's health (exit 0 only when serving)",
        description="Ask a server's health service (gRPC's health protocol) whether SERVICE "
        "(default: the whole server) is serving; print the status.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser, method=False)
    parser.add_argument(
        "service",
        metavar="SERVICE",
        nargs="?",
        default="",
        help="a service's name, e.g. users (default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(inf=True),
        default=10.0,
        help="give up after this many seconds, connecting included (default 10)",
    )


def run_health(args: argparse.Namespace) -> int:
    """Run the parsed ``health`` command; return the exit code."""
    return run_rpc_command("health", health_main, args)


async def health_main(args: argparse.Namespace) -> int:
    """The ``health`` command, in trio; returns the exit code (see the module docs)."""
    check_target(args.target)
    opening = open_command_channel(args)
    code = EXIT_OK
    with trio.move_on_after(args.timeout) as scope:
        async with opening as channel:
            try:
                answer = await channel.stub(rpc.HealthService).check(
                    rpc.HealthCheckRequest(args.service)
                )
            except rpc.RpcError as exc:
                code = status_exit(exc)
            else:
                print(answer.status.value, flush=True)
                if answer.status is not rpc.HealthStatus.SERVING:
                    what = f"service {args.service!r}" if args.service else "the server"
                    print(
                        f"trio-micro health: error: {what} is {answer.status.value}",
                        file=sys.stderr,
                        flush=True,
                    )
                    code = EXIT_ERROR
    if scope.cancelled_caught:
        return status_exit(deadline_exceeded(args.target, args.timeout))
    return code
