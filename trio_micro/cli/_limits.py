"""``trio-micro serve``'s connection and memory limits: ``--max-connections``,
``--max-connections-per-peer``, ``--max-concurrent-streams``, ``--idle-timeout`` and
``--stall-timeout`` (docs/rpc.md,
"Limits and worst-case memory"), parsed into :func:`trio_micro.rpc.serve`'s options. Unlike
the library, whose limits are off unless asked for, the command has finite defaults: a
process started from the command line faces whatever connects to it. Kept apart from
:mod:`._serve` so that module stays about serving.
"""

from __future__ import annotations

import argparse
from typing import Final, TypedDict

from ._common import integer, seconds

__all__: list[str] = []  # internal to the cli package

#: The command's defaults; see the module docs.
MAX_CONNECTIONS: Final = 1000
MAX_CONNECTIONS_PER_PEER: Final = 100
MAX_CONCURRENT_STREAMS: Final = 100
IDLE_TIMEOUT: Final = 300.0
STALL_TIMEOUT: Final = 30.0


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the limit flags (see the module docs)."""
    parser.add_argument(
        "--max-connections",
        type=integer(1),
        default=MAX_CONNECTIONS,
        metavar="N",
        help="refuse connections beyond N at once, with a GOAWAY saying so (the client "
        f"fails UNAVAILABLE instead of waiting) (default: {MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--max-connections-per-peer",
        type=integer(1),
        default=MAX_CONNECTIONS_PER_PEER,
        metavar="N",
        help="the same, for the connections from one IP address "
        f"(default: {MAX_CONNECTIONS_PER_PEER})",
    )
    parser.add_argument(
        "--max-concurrent-streams",
        type=integer(1),
        default=MAX_CONCURRENT_STREAMS,
        metavar="N",
        help="calls one connection may have running at once, advertised to clients (which "
        "wait for a free slot); a client that sends more is disconnected "
        f"(GOAWAY TOO_MANY_STREAMS) (default: {MAX_CONCURRENT_STREAMS})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds(inf=True),
        default=IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a connection with no call for this long, gracefully (GOAWAY); 'inf': "
        f"never (default: {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--stall-timeout",
        type=seconds(inf=True),
        default=STALL_TIMEOUT,
        metavar="SECONDS",
        help="fail a server-stream whose client grants no CREDIT for this long "
        f"(RESOURCE_EXHAUSTED), freeing its handler; 'inf': never (default: {STALL_TIMEOUT:g})",
    )


class LimitOptions(TypedDict, total=False):
    """The :func:`trio_micro.rpc.serve` options set by these flags (none: the library's)."""

    max_connections: int
    max_connections_per_peer: int
    max_concurrent_streams: int
    idle_timeout: float
    stall_timeout: float


def limit_options(args: argparse.Namespace) -> LimitOptions:
    """The :func:`trio_micro.rpc.serve` options the limit flags ask for."""
    return LimitOptions(
        max_connections=args.max_connections,
        max_connections_per_peer=args.max_connections_per_peer,
        max_concurrent_streams=args.max_concurrent_streams,
        idle_timeout=args.idle_timeout,
        stall_timeout=args.stall_timeout,
    )
