"""``trio-micro registry``: run a registry server until SIGINT or SIGTERM.

Prints one line to stdout once it listens, ``registry listening on HOST:PORT`` (with
``--port 0``, the port the system chose). On SIGINT or SIGTERM it shuts down gracefully
(watch streams end, calls in progress get ``--grace`` seconds), logs ``serve.stopped``
and exits ``128 +`` the signal number; a second signal cancels at once, as for
``trio-micro serve`` (the signal policy and exit codes of :mod:`._common`).

``--token-file`` / ``--allow-identity`` / ``--protect-lookups`` say who may write (and
read): see :class:`~trio_micro.registry.RegistryService`. A token file that can't be used
is a usage error (exit 2) that never shows its content.
"""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import Any

from trio_micro.registry import DEFAULT_WARMUP, open_registry_server

from ._common import EXIT_OK, Stopper, epilog, port, run_trio, seconds, usage_error
from ._serve import configure_command_logging, listen_error
from ._serve_args import SERVER_SIGNALS_HELP, add_logging_arguments
from ._tls import add_tls_arguments, read_token_file, server_tls


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
    auth = parser.add_argument_group(
        "who may register",
        description="By default anyone who reaches the server may register and deregister. "
        "With --token-file and/or --allow-identity, register/keep_alive/deregister need the "
        "token (serve --registry-token-file) or a client certificate (--tls-ca: mutual TLS) "
        "whose common name or a SAN is allowed; others get UNAUTHENTICATED (no or a wrong "
        "token) or PERMISSION_DENIED (a certificate not allowed). Lookups stay open unless "
        "--protect-lookups.",
    )
    auth.add_argument("--token-file", metavar="FILE", help="a file holding the shared token")
    auth.add_argument(
        "--allow-identity",
        action="append",
        metavar="NAME",
        help="a client-certificate name (CN or SAN) that may register (repeatable; needs --tls-ca)",
    )
    auth.add_argument(
        "--protect-lookups",
        action="store_true",
        help="resolve and watch need the same credentials",
    )
    add_logging_arguments(parser)
    add_tls_arguments(parser)
    parser.add_argument(
        "--grace",
        type=seconds(zero=True),
        default=5.0,
        help="seconds calls in progress may take to finish on shutdown (default: 5)",
    )
    parser.add_argument(
        "--warmup",
        type=seconds(zero=True),
        default=DEFAULT_WARMUP,
        help="seconds after start during which a client reopening a watch keeps its last "
        "endpoints until they register again, instead of hearing none (default: "
        f"{DEFAULT_WARMUP:g}; 0: off)",
    )


def run_registry(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""

    async def main(stopper: Stopper) -> int:
        ssl_context = server_tls(args)
        token = None if not args.token_file else read_token_file(args.token_file, "--token-file")
        identities = args.allow_identity or ()
        if identities and not args.tls_ca:
            raise usage_error("--allow-identity needs --tls-ca (client certificates)")
        if args.protect_lookups and token is None and not identities:
            raise usage_error("--protect-lookups needs --token-file or --allow-identity")
        configure_command_logging(args.log_file, args.log_level)
        async with AsyncExitStack() as stack:
            try:
                registry = await stack.enter_async_context(
                    open_registry_server(
                        host=args.host,
                        port=args.port,
                        grace_period=args.grace,
                        ssl_context=ssl_context,
                        token=token,
                        allow_identities=identities,
                        protect_lookups=args.protect_lookups,
                        warmup=args.warmup,
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
