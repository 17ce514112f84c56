"""Entry point of the ``trio-micro`` command.

Only argv, files and the terminal are touched here; everything else is
imported from the library.

Each command lives in its own module, imported only when needed: a command line that
starts with a command name builds the parser of that command alone, so that
``trio-micro logs`` does not import Trio, the RPC layer or httpx (start-up time is part of
every ``logs`` run), and ``--version`` alone builds none. Anything else (no command,
``--help``, an unknown command) builds the whole tree.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from .._version import __version__
from ._common import apply_environment_defaults

# command -> (module, function that adds its parser, function that runs it), in the order
# of `trio-micro --help`. One module may add several commands (call and list).
_COMMANDS: Final[dict[str, tuple[str, str, str]]] = {
    "logs": ("._logs", "add_logs_parser", "run_logs"),
    "registry": ("._registry", "add_registry_parser", "run_registry"),
    "serve": ("._serve", "add_serve_parser", "run_serve"),
    "gateway": ("._gateway", "add_gateway_parser", "run_gateway"),
    "call": ("._call", "add_call_parsers", "run_call"),
    "list": ("._call", "add_call_parsers", "run_list"),
    "schema": ("._schema", "add_schema_parser", "run_schema"),
    "bench": ("._bench", "add_bench_parser", "run_bench"),
    "health": ("._health", "add_health_parser", "run_health"),
    "demo": ("._demo", "add_demo_parser", "run_demo"),
    "completion": ("._completion", "add_completion_parser", "run_completion"),
}


def _function(module: str, name: str) -> Callable[..., Any]:
    function: Callable[..., Any] = getattr(importlib.import_module(module, __package__), name)
    return function


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser of the ``trio-micro`` command.

    Args:
        command: Add only the sub-parser of this command (and import only its module);
            ``""``: none; ``None``: every command.

    Raises:
        KeyError: ``command`` is not a command.
    """
    parser = argparse.ArgumentParser(
        prog="trio-micro",
        description="High-concurrency microservices on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"trio-micro {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = list(_COMMANDS) if command is None else [command] if command else []
    # dict.fromkeys: each module's parsers once (call and list share one), in order.
    for module, add in dict.fromkeys(_COMMANDS[name][:2] for name in names):
        _function(module, add)(commands)
    apply_environment_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Options before the command name (--help) need the whole tree; --version none.
    if argv and argv[0] in _COMMANDS:
        parser = build_parser(argv[0])
    else:
        parser = build_parser("" if argv == ["--version"] else None)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":  # demo says where the demo is, whatever follows
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    args.argv = argv  # what a command that re-runs itself in worker processes passes on
    module, _add, run = _COMMANDS[args.command]
    code: int = _function(module, run)(args)
    return code
