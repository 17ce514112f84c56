"""``trio-micro registry``: run a registry server until interrupted."""

from __future__ import annotations

import argparse
from typing import Any

import trio

from trio_micro.registry import open_registry_server


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {text!r}")
    return port


def add_registry_parser(subparsers: Any) -> None:
    """Add the ``registry`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "registry", help="run a registry server (service discovery for one machine)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=7000, help="TCP port (default: 7000)")


def run_registry(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or SIGINT); return the exit code."""

    async def main() -> None:
        async with open_registry_server(host=args.host, port=args.port) as server:
            print(f"registry listening on {server.target}", flush=True)
            await trio.sleep_forever()

    try:
        trio.run(main)
    except* KeyboardInterrupt:  # Ctrl-C is how it stops; it may come out of a nursery
        pass
    return 0
