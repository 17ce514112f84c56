"""``trio-micro registry``: run a registry server until SIGINT or SIGTERM.

Prints one line to stdout once it listens, ``registry listening on HOST:PORT`` (with
``--port 0``, the port the system chose). On SIGINT or SIGTERM it shuts down gracefully
(watch streams end, calls in progress get ``--grace`` seconds), logs ``serve.stopped``
and exits ``128 +`` the signal number; a second signal cancels at once, as for
``trio-micro serve`` (the signal policy and exit codes of :mod:`._common`).
"""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import Any

from trio_micro.registry import open_registry_server

from ._common import EXIT_OK, Stopper, epilog, port, run_trio, seconds
from ._serve import (
    SERVER_SIGNALS_HELP,
    add_logging_arguments,
    configure_command_logging,
    listen_error,
)
from ._tls import add_tls_arguments, server_tls


def add_registry_parser(subparsers: Any) -> None:
    """Add the ``registry`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "registry",
        help="run a registry server (service discovery for one machine)",
        description="Run a registry server until SIGINT/SIGTERM. Prints "
        "`registry listening on HOST:PORT` when ready.",
        epilog=epilog(SERVER_SIGNALS_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=port, default=7000, help="TCP port, 0 for any free one (default: 7000)"
    )
    add_logging_arguments(parser)
    add_tls_arguments(parser)
    parser.add_argument(
        "--grace",
        type=seconds(zero=True),
        default=5.0,
        help="seconds calls in progress may take to finish on shutdown (default: 5)",
    )


def run_registry(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""

    async def main(stopper: Stopper) -> int:
        ssl_context = server_tls(args)
        configure_command_logging(args.log_file, args.log_level)
        async with AsyncExitStack() as stack:
            try:
                registry = await stack.enter_async_context(
                    open_registry_server(
                        host=args.host,
                        port=args.port,
                        grace_period=args.grace,
                        ssl_context=ssl_context,
                    )
                )
            except* OSError as group:
                raise listen_error(args.host, args.port, group) from None
            stopper.fields.update(services=["registry"], address=registry.target)
            stopper.serving()
            print(f"registry listening on {registry.target}", flush=True)
            await stopper.wait()
            # Leaving the stack: watch streams end, then the graceful shutdown.
        return EXIT_OK

    return run_trio("registry", main, events="serve")
