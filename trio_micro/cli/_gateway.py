"""``trio-micro gateway`` and ``serve --http-port``: the Connect HTTP/JSON gateway.

``trio-micro gateway TARGET --port P`` serves the methods behind TARGET (an address, or
``registry://HOST:PORT/SERVICE`` / ``etcd://...``: the channel follows the registry) over
HTTP, routes from the servers' reflection. ``trio-micro serve ... --http-port P`` runs the
same gateway in the serving process, in front of its own server (a loopback channel to
it: the same handlers and the same interceptors as RPC calls).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog

from .. import gateway, rpc
from ._call import check_target
from ._common import EXIT_OK, Stopper, epilog, port, run_trio
from ._tls import (
    add_registry_token_argument,
    add_tls_arguments,
    client_tls,
    open_target_channel,
    registry_token,
)

__all__: list[str] = []

log = structlog.get_logger("serve")


def add_http_port_argument(parser: argparse.ArgumentParser) -> None:
    """``serve --http-port``."""
    parser.add_argument(
        "--http-port",
        type=port,
        default=None,
        metavar="PORT",
        help="also serve the Connect HTTP/JSON gateway on --host:PORT (0: any free port); "
        "off by default",
    )


async def enter_http_gateway(
    stack: AsyncExitStack,
    server: rpc.Server,
    services: Sequence[rpc.Service],
    host: str,
    http_port: int,
) -> str:
    """Start the gateway in front of ``server`` for the life of ``stack``; return its URL."""
    own_host, own_port = server.address[:2]
    channel = await stack.enter_async_context(rpc.open_channel(f"{own_host}:{own_port}"))
    routes = gateway.routes_of(services)
    bound = await stack.enter_async_context(
        gateway.open_gateway(channel, host=host, port=http_port, routes=routes)
    )
    url = _url(*bound)
    log.info("serve.http_gateway", url=url)
    print(f"http gateway: {url}", file=sys.stderr, flush=True)
    return url


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def add_gateway_parser(subparsers: Any) -> None:
    """Add the ``gateway`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "gateway",
        help="serve services over HTTP/JSON (the Connect protocol)",
        description="Serve the methods behind TARGET over HTTP with the Connect protocol: "
        "POST /SERVICE/METHOD with a JSON body.",
        epilog=epilog(
            "example:\n  trio-micro gateway registry://127.0.0.1:7000/users --port 8080\n"
            "  curl -d '{\"user_id\": 1}' -H 'Content-Type: application/json' "
            "http://127.0.0.1:8080/users/get_user",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="HOST:PORT, or registry://HOST:PORT/SERVICE or etcd://HOST:PORT/SERVICE",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=0, help="TCP port (default: 0, any free port)")
    add_registry_token_argument(parser)
    add_tls_arguments(parser)  # to reach the services (and their registry); HTTP stays plain
    from ._serve_args import add_logging_arguments  # (here: _serve_args imports us)

    add_logging_arguments(parser)


def run_gateway(args: argparse.Namespace) -> int:
    """Run ``trio-micro gateway`` with parsed arguments; return the exit status."""
    from ._serve import configure_command_logging, listen_error  # (_serve imports us)

    async def main(stopper: Stopper) -> int:
        check_target(args.target)
        opening = open_target_channel(args.target, client_tls(args), token=registry_token(args))
        configure_command_logging(args.log_file, args.log_level)
        async with opening as channel:
            try:
                opened = gateway.open_gateway(channel, host=args.host, port=args.port)
                bound = await opened.__aenter__()
            except* OSError as group:
                raise listen_error(args.host, args.port, group) from None
            url = _url(*bound)
            stopper.fields.update(address=url)
            stopper.serving()
            log.info("gateway.serving", url=url, target=args.target)
            print(f"gateway for {args.target} on {url}", flush=True)
            try:
                await stopper.wait()
            finally:
                await opened.__aexit__(None, None, None)
        return EXIT_OK

    return run_trio("gateway", main, events="serve")
