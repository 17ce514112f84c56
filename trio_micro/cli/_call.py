"""``trio-micro call`` and ``trio-micro list``: one call by name, and what a server serves.

Both ask the server's reflection service (``trio_micro.reflection/list_services``) what
it serves. ``call`` uses that to pick a unary or a server-stream call, to retry only
idempotent methods, and to turn base64 strings into bytes where the request type has a
``bytes`` field (JSON has no bytes; replies show bytes as base64 the same way).

Targets: ``host:port`` (one server), or ``registry://host:port/SERVICE`` /
``etcd://host:port/SERVICE`` (the replicas of SERVICE found in a registry server or in
etcd; the call goes to one of them). ``--registry-token-file`` presents the registry
server's token (:mod:`._tls`).

Exit codes: 0 success; ``64 + N`` the call (for ``list``: the reflection call) ended
with status code N, printed as ``CODE: message`` on standard error, as grpcurl does: e.g.
69 ``NOT_FOUND``, 68 ``DEADLINE_EXCEEDED`` (``--timeout``), 78 ``UNAVAILABLE`` (target
unreachable; for a registry target also, at once: registry unreachable, or no endpoints
for the service), 80 ``UNAUTHENTICATED`` (the registry of a ``registry://`` target protects
lookups and got no or a wrong ``--registry-token-file``); 2 bad input (arguments, JSON, an
unknown method or target); 130/143 stopped by SIGINT/SIGTERM (:mod:`._common`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import trio

from .. import rpc
from ..observe import configure_logging
from ..protocol import DECODE_ERRORS, with_compression_hint
from ._common import (
    EXIT_OK,
    EXIT_STATUS_BASE,
    CommandError,
    Stopper,
    compression,
    epilog,
    key_value,
    run_trio,
    seconds,
    usage_error,
)
from ._output import print_json, print_table, safe_text
from ._tls import add_registry_token_argument, add_tls_arguments, open_command_channel

__all__: list[str] = []  # internal to the cli package

REFLECTION_METHOD: Final = "trio_micro.reflection/list_services"

TARGETS_HELP: Final = """\
targets:
  host:port                      one server
  registry://host:port/SERVICE   the replicas of SERVICE in a registry server
  etcd://host:port/SERVICE       the replicas of SERVICE in etcd"""

STATUS_CODES_HELP: Final = """\
  64+N a call ended with status code N (printed as CODE: message on stderr), as
       grpcurl does: e.g. 68 DEADLINE_EXCEEDED (--timeout), 69 NOT_FOUND,
       78 UNAVAILABLE (target unreachable; registry unreachable or no endpoints
       for the service, reported at once), 80 UNAUTHENTICATED (the registry
       protects lookups: no or a wrong --registry-token-file)"""

_EPILOG: Final = epilog(TARGETS_HELP, ok="success", more=STATUS_CODES_HELP)


def add_target_arguments(parser: argparse.ArgumentParser, *, method: bool) -> None:
    """Add TARGET (and METHOD JSON when ``method``) and the options they share."""
    parser.add_argument("target", metavar="TARGET", help="host:port, registry://.. or etcd://..")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log connections etc. (stderr)"
    )
    add_registry_token_argument(parser)
    add_tls_arguments(parser)
    if method:
        parser.add_argument(
            "method",
            metavar="SERVICE.METHOD",
            help="e.g. users.get_user (or users/get_user)",
        )
        parser.add_argument(
            "request",
            metavar="JSON",
            nargs="?",
            default="{}",
            help="the request as a JSON object (default {}; - reads standard input); "
            "bytes fields take base64. Client- and bidi-stream methods take JSON lines, one "
            "request per line: here, on standard input (-) or in a file (@PATH)",
        )
        parser.add_argument(
            "-m",
            "--metadata",
            type=key_value,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="send this metadata pair (repeatable)",
        )
        parser.add_argument(
            "--compress",
            type=compression,
            metavar="ENCODING",
            help="compress payloads of 1 KiB and more, both ways, if the server accepts "
            "the encoding: zlib, zstd (with the zstd extra) or none (default: the server's "
            "choice for its answers, none for requests)",
        )


def call_metadata(args: argparse.Namespace) -> dict[str, str] | None:
    """The call's metadata: the ``--metadata`` pairs, and ``--compress`` as the hint
    (docs/protocol.md §14) that picks the call's encoding both ways."""
    return with_compression_hint(dict(args.metadata) or None, args.compress, None)


def add_call_parsers(subparsers: Any) -> None:
    """Add the ``call`` and ``list`` commands to the ``trio-micro`` subparsers."""
    call = subparsers.add_parser(
        "call",
        help="make one call and print the JSON reply",
        description="Make one call by name and print the reply as JSON (a server- or "
        "bidi-stream: one JSON line per item, as they arrive). Client- and bidi-stream "
        "methods send one request per JSON line. Bytes are shown as base64.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(call, method=True)
    call.add_argument(
        "--timeout",
        type=seconds(inf=True),
        default=10.0,
        help="give up after this many seconds, connecting included (default 10; inf: never)",
    )
    listing = subparsers.add_parser(
        "list",
        help="list the services and methods a server serves",
        description="List services and methods (kind, idempotent, request fields) through "
        "the server's reflection service.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(listing, method=False)
    listing.add_argument("--json", action="store_true", help="print JSON for machines")
    listing.add_argument(
        "--timeout", type=seconds(inf=True), default=10.0, help="give up after this many seconds"
    )


# --- input checks -----------------------------------------------------------------------


def check_target(target: str) -> None:
    """Raise a usage error unless ``target`` is an address or a known scheme target."""
    try:
        if "://" in target:
            from .. import registry  # registers the etcd:// and registry:// schemes

            split = rpc.split_target(target)
            if split is not None and target.startswith(("etcd://", "registry://")):
                registry.check_service(split[2])  # what its resolver would refuse later
        else:
            rpc.Endpoint.parse(target)
    except (TypeError, ValueError) as exc:
        raise usage_error(f"bad TARGET: {exc}") from None


def parse_method(text: str) -> tuple[str, str]:
    """Split ``SERVICE.METHOD`` or ``SERVICE/METHOD`` (service names may contain dots)."""
    sep = "/" if "/" in text else "."
    service, found, name = text.rpartition(sep)
    if not found or not service or not name:
        raise usage_error(f"expected SERVICE.METHOD (or SERVICE/METHOD), got {text!r}")
    return service, name


def parse_request(text: str) -> Any:
    """Decode the JSON request (``-``: read standard input); it must be an object that
    msgpack can carry: nested at most :data:`MAX_REQUEST_DEPTH` deep, integers in
    [-2**63, 2**64 - 1]."""
    if text == "-":
        text = sys.stdin.read()
    try:
        value = json.loads(text)
    except (ValueError, *DECODE_ERRORS) as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, RecursionError):
            exc = ValueError("nested too deeply")
        raise usage_error(f"the request is not valid JSON: {exc}: {_clip(text)!r}") from None
    if not isinstance(value, dict):
        raise usage_error(f"the request must be a JSON object like {{}}, got {_clip(text)!r}")
    _check_request(value, text)
    return value


#: How deep ``call``'s JSON request may nest (objects and arrays).
MAX_REQUEST_DEPTH: Final = 64
_INT_RANGE: Final = range(-(2**63), 2**64)


def _check_request(value: object, text: str) -> None:
    """Refuse what msgpack can't encode: deep nesting, integers out of its range."""
    todo: list[tuple[object, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > MAX_REQUEST_DEPTH:
                raise usage_error(
                    f"the request is nested deeper than {MAX_REQUEST_DEPTH} levels: {_clip(text)!r}"
                )
            todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
        elif isinstance(item, int) and not isinstance(item, bool) and item not in _INT_RANGE:
            raise usage_error(
                f"the request has an integer outside msgpack's range [-2**63, 2**64 - 1]: "
                f"{_clip(str(item))}"
            )


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- reflection -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Method:
    """A method found through reflection."""

    service: str
    description: rpc.MethodDescription

    @property
    def wire_name(self) -> str:
        return f"{self.service}/{self.description.name}"


async def list_services(channel: rpc.Channel) -> rpc.ListServicesResponse:
    """Ask the server behind ``channel`` what it serves. A checkpoint.

    Raises:
        CommandError: The server does not serve reflection (exit 2).
        rpc.RpcError: The call failed otherwise.
    """
    try:
        reply = await channel.call(REFLECTION_METHOD, {}, idempotent=True)
    except rpc.RpcError as exc:
        if exc.code is rpc.Status.UNIMPLEMENTED:
            raise usage_error(
                "the target does not serve trio_micro.reflection (started with "
                "reflection=False?), so its methods can't be looked up"
            ) from None
        raise
    try:
        return msgspec.convert(reply, rpc.ListServicesResponse)
    except msgspec.ValidationError as exc:
        raise rpc.RpcError(
            rpc.Status.INTERNAL, f"bad reply from {REFLECTION_METHOD}: {exc}"
        ) from None


def find_method(services: rpc.ListServicesResponse, service: str, name: str) -> Method:
    """Return the method ``service/name``, or raise a usage error naming what exists."""
    for described in services.services:
        if described.name != service:
            continue
        for method in described.methods:
            if method.name == name:
                return Method(service, method)
        known = ", ".join(m.name for m in described.methods) or "none"
        raise usage_error(f"service {service!r} has no method {name!r} (it has: {known})")
    known = ", ".join(s.name for s in services.services) or "none"
    raise usage_error(f"the target serves no service {service!r} (it serves: {known})")


# --- request coercion: base64 strings into bytes ----------------------------------------


def _resolve(schema: Any, defs: Mapping[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        schema = defs.get(ref.rpartition("/")[2], {}) if isinstance(ref, str) else {}
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _is_bytes(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "string" and schema.get("contentEncoding") == "base64"


def coerce_request(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn base64 strings into bytes wherever ``schema`` (a JSON schema) expects bytes.

    Raises:
        CommandError: A bytes field holds a string that is not base64 (exit 2).
    """
    defs = schema.get("$defs", {})
    return _coerce(value, schema, defs if isinstance(defs, dict) else {}, "$")


def _coerce(value: Any, schema: Any, defs: Mapping[str, Any], path: str) -> Any:
    node = _resolve(schema, defs)
    if isinstance(value, str):
        options = [_resolve(s, defs) for s in node.get("anyOf", [node])]
        plain = any(s.get("type") == "string" and not _is_bytes(s) for s in options)
        if any(_is_bytes(s) for s in options) and not plain:
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise usage_error(
                    f"{path} is a bytes field: expected base64, got {_clip(value)!r}"
                ) from None
        return value
    if isinstance(value, dict) and node.get("type") == "object":
        properties = node.get("properties", {})
        extra = node.get("additionalProperties", {})
        return {
            key: _coerce(item, properties.get(key, extra), defs, f"{path}.{key}")
            for key, item in value.items()
        }
    if isinstance(value, list) and node.get("type") == "array":
        prefix = node.get("prefixItems", [])
        items = node.get("items", {})
        return [
            _coerce(item, prefix[i] if i < len(prefix) else items, defs, f"{path}[{i}]")
            for i, item in enumerate(value)
        ]
    return value


def describe_fields(schema: Mapping[str, Any]) -> str:
    """``"user_id: integer, payload?: bytes"`` for a request schema (``?``: optional)."""
    defs = schema.get("$defs", {})
    defs = defs if isinstance(defs, dict) else {}
    node = _resolve(schema, defs)
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return _type_name(schema, defs)
    required = set(node.get("required", []))
    return ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_name(sub, defs)}"
        for name, sub in properties.items()
    )


def _type_name(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> str:
    if not isinstance(schema, dict) or depth > 8:
        return "any"
    if "$ref" in schema and isinstance(schema["$ref"], str):
        return str(schema["$ref"].rpartition("/")[2])
    if "anyOf" in schema:
        return " | ".join(_type_name(s, defs, depth + 1) for s in schema["anyOf"])
    if _is_bytes(schema):
        return "bytes"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array[{_type_name(schema.get('items', {}), defs, depth + 1)}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object[{_type_name(schema['additionalProperties'], defs, depth + 1)}]"
    return kind if isinstance(kind, str) else "any"


# --- output and exit codes -------------------------------------------------------------


def status_exit(exc: rpc.RpcError) -> int:
    """Print ``CODE: message`` and the details, one per line, on standard error; return the
    exit code of that status, ``64 + code`` (as grpcurl). The server's words are escaped
    (:func:`safe_text`): they can't drive the terminal or forge a line."""
    print(safe_text(str(exc)), file=sys.stderr)
    for key, value in exc.details.items():
        print(safe_text(f"  {key}: {value}"), file=sys.stderr)
    sys.stderr.flush()
    return EXIT_STATUS_BASE + int(exc.code)


def deadline_exceeded(target: str, timeout: float) -> rpc.RpcError:
    """The error for a command that ran out of ``--timeout``."""
    return rpc.RpcError(
        rpc.Status.DEADLINE_EXCEEDED, f"no answer from {target} within {timeout:g} s (--timeout)"
    )


def run_rpc_command(
    command: str, body: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """Run ``body(args)`` with :func:`._common.run_trio`, the logs of the library on stderr.

    Library logs go to standard error (warnings and worse; ``-v``: info too), so that
    standard output holds only results.
    """
    configure_logging(
        format="console", file=sys.stderr, level="info" if args.verbose else "warning"
    )

    async def main(stopper: Stopper) -> int:
        return await body(args)

    return run_trio(command, main)


# --- call -------------------------------------------------------------------------------


def run_call(args: argparse.Namespace) -> int:
    """Run the parsed ``call`` command; return the exit code."""
    return run_rpc_command("call", call_main, args)


async def call_main(args: argparse.Namespace) -> int:
    """The ``call`` command, in trio: check the input, look the method up, call, print.

    Returns the exit code; raises :class:`~._common.CommandError` for bad input (also
    from within the channel's nursery, so possibly in an exception group). Output goes to
    standard output (the reply) and standard error (a status).
    """
    service, name = parse_method(args.method)
    request = args.request  # parsed once the method's kind is known
    if request != "-" and not request.startswith("@") and "\n" not in request.strip():
        parse_request(request)  # bad JSON: a usage error before connecting
    check_target(args.target)
    opening = open_command_channel(args)
    metadata = call_metadata(args)
    code = EXIT_OK
    with trio.move_on_after(args.timeout) as scope:
        async with opening as channel:
            # The status becomes the exit code in here, where the call's error is known.
            try:
                await _call(channel, service, name, request, metadata)
            except rpc.RpcError as exc:
                code = status_exit(exc)
    if scope.cancelled_caught:
        return status_exit(deadline_exceeded(args.target, args.timeout))
    return code


async def _call(
    channel: rpc.Channel,
    service: str,
    name: str,
    request: Any,
    metadata: dict[str, str] | None,
) -> None:
    method = find_method(await list_services(channel), service, name)
    if method.description.kind in ("client_stream", "bidi_stream"):
        await _call_streaming(channel, method, request, metadata)
        return
    request = coerce_request(parse_request(request), method.description.request_schema)
    if method.description.kind == "server_stream":
        async with channel.call_stream(method.wire_name, request, metadata=metadata) as items:
            async for item in items:
                print_json(item)
    else:
        reply = await channel.call(
            method.wire_name,
            request,
            idempotent=method.description.idempotent,
            metadata=metadata,
        )
        print_json(reply)


async def _request_lines(source: str) -> AsyncGenerator[tuple[int, str], None]:
    """The numbered lines of a stream call's requests: ``-`` standard input, ``@PATH`` a
    file (read in a worker thread, so answers print while requests are still read), else
    the JSON argument itself."""
    if source == "-":
        lines = trio.wrap_file(sys.stdin)
    elif source.startswith("@"):
        try:
            lines = await trio.open_file(source[1:], encoding="utf-8")
        except OSError as exc:
            raise usage_error(f"can't read the requests from {source[1:]!r}: {exc}") from None
    if source == "-" or source.startswith("@"):
        number = 0
        try:
            async for line in lines:
                number += 1
                yield number, line
        finally:
            if source != "-":
                await lines.aclose()
    else:
        for number, line in enumerate(source.splitlines(), 1):
            yield number, line


async def _call_streaming(
    channel: rpc.Channel, method: Method, source: str, metadata: dict[str, str] | None
) -> None:
    """Send each JSON line of ``source`` as one request; print each answer as it arrives."""
    schema = method.description.request_schema
    bidi = method.description.kind == "bidi_stream"
    async with channel.stream_call(method.wire_name, bidi=bidi, metadata=metadata) as (
        send,
        receive,
    ):

        async def feed() -> None:
            async with send, aclosing(_request_lines(source)) as lines:
                async for number, line in lines:
                    if line.strip():
                        try:
                            value = parse_request(line)
                        except CommandError as exc:
                            raise usage_error(f"request line {number}: {exc}") from None
                        await send.send(coerce_request(value, schema))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for item in receive:
                print_json(item)


# --- list -------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    """Run the parsed ``list`` command; return the exit code."""
    return run_rpc_command("list", list_main, args)


async def list_main(args: argparse.Namespace) -> int:
    """The ``list`` command, in trio. Returns the exit code (see the module docs)."""
    check_target(args.target)
    opening = open_command_channel(args)
    code = EXIT_OK
    with trio.move_on_after(args.timeout) as scope:
        async with opening as channel:
            try:
                services = await list_services(channel)
            except rpc.RpcError as exc:
                code = status_exit(exc)
            else:
                _print_services(services, as_json=args.json)
    if scope.cancelled_caught:
        return status_exit(deadline_exceeded(args.target, args.timeout))
    return code


def _print_services(services: rpc.ListServicesResponse, *, as_json: bool) -> None:
    if as_json:
        print_json(services)
        return
    rows = [
        (
            service.name,
            method.name,
            method.kind,
            "yes" if method.idempotent else "no",
            describe_fields(method.request_schema),
        )
        for service in sorted(services.services, key=lambda s: s.name)
        for method in service.methods
    ]
    count = len(services.services)
    print_table(
        f"{count} service{'' if count == 1 else 's'}, {len(rows)} methods",
        ("service", "method", "kind", "idempotent", "request"),
        rows,
    )
