"""``trio-micro schema TARGET --format openapi|jsonschema``: schemas out, from reflection.

Asks the server's reflection service (as ``trio-micro list`` does) and prints one JSON
document: OpenAPI 3.1 for the gateway's HTTP API, or JSON Schema (2020-12) of every
method's request and response, so that other languages can generate clients. Exit codes
are ``list``'s.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

from .. import gateway, rpc
from ._call import (
    _EPILOG,
    add_target_arguments,
    check_target,
    deadline_exceeded,
    list_services,
    run_rpc_command,
    status_exit,
)
from ._common import EXIT_OK, CommandError, seconds
from ._output import print_json
from ._tls import open_command_channel

__all__: list[str] = []


def add_schema_parser(subparsers: Any) -> None:
    """Add the ``schema`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "schema",
        help="print an OpenAPI or JSON Schema document of a server's methods",
        description="Print what reflection knows as an OpenAPI 3.1 document (the HTTP "
        "gateway's API) or as JSON Schema, for generating clients in other languages.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser, method=False)
    parser.add_argument(
        "--format", choices=("openapi", "jsonschema"), default="openapi", help="(default: openapi)"
    )
    parser.add_argument(
        "--timeout", type=seconds(inf=True), default=10.0, help="give up after this many seconds"
    )


def run_schema(args: argparse.Namespace) -> int:
    """Run the parsed ``schema`` command; return the exit code."""
    return run_rpc_command("schema", schema_main, args)


async def schema_main(args: argparse.Namespace) -> int:
    """The ``schema`` command, in trio. Returns the exit code."""
    check_target(args.target)
    opening = open_command_channel(args)
    listed: rpc.ListServicesResponse | None = None
    code = EXIT_OK
    with trio.move_on_after(args.timeout) as scope:
        async with opening as channel:
            try:
                listed = await list_services(channel)
            except rpc.RpcError as exc:
                code = status_exit(exc)
    if scope.cancelled_caught:
        return status_exit(deadline_exceeded(args.target, args.timeout))
    if listed is None:
        return code
    try:
        if args.format == "openapi":
            document = gateway.openapi_document(listed, title=f"trio_micro at {args.target}")
        else:
            document = gateway.json_schema_document(listed)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print_json(document, indent=2)
    return EXIT_OK
