"""Entry point of the ``trio-micro`` command.

Only argv, files and the terminal are touched here; everything else is
imported from the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from ._bench import add_bench_parser, run_bench
from ._call import add_call_parsers, run_call, run_list
from ._demo import add_demo_parser, run_demo
from ._logs import add_logs_parser, run_logs
from ._registry import add_registry_parser, run_registry
from ._serve import add_serve_parser, run_serve


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``trio-micro`` command."""
    parser = argparse.ArgumentParser(
        prog="trio-micro",
        description="High-concurrency microservices on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"trio-micro {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_logs_parser(commands)
    add_registry_parser(commands)
    add_serve_parser(commands)
    add_call_parsers(commands)  # call, list
    add_bench_parser(commands)
    add_demo_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "logs":
        return run_logs(args)
    if args.command == "registry":
        return run_registry(args)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "call":
        return run_call(args)
    if args.command == "list":
        return run_list(args)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "demo":
        return run_demo(args)
    parser.print_help(sys.stdout)
    return 0
