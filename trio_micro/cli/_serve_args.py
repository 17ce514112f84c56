"""``trio-micro serve``'s command line: the parser, the checks that need no I/O, and the
configuration they make (:class:`_ServeConfig`), which :mod:`._serve` runs.

Split from :mod:`._serve` along that seam: nothing here opens a socket, a file other than
a token or TLS file named by a flag, or a service (``resolve_service`` imports the module
``MODULE:ATTR`` names; ``enter_service`` in :mod:`._serve` opens it).
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from trio_micro import rpc
from trio_micro.registry import (
    parse_address,
)

from ._admission import add_admission_arguments
from ._common import (
    compression,
    epilog,
    key_value,
    port,
    seconds,
    usage_error,
    worker_count,
)
from ._gateway import add_http_port_argument  # issue #19
from ._limits import LimitOptions, add_limit_arguments, limit_options
from ._service_spec import resolve_service
from ._tls import (
    ClientTls,
    add_registry_token_argument,
    add_tls_arguments,
    client_tls,
    read_token_file,
    server_tls,
    token_flag_given,
)

__all__: list[str] = []  # internal to the cli package


LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_REGISTRY_SCHEMES: Final = ("registry", "etcd")


def _key_values(pairs: Sequence[tuple[str, str]] | None, *, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in pairs or ():
        if key in result:
            raise usage_error(f"{what} {key!r} given twice ({result[key]!r} and {value!r})")
        result[key] = value
    return result


def parse_registry_target(text: str) -> tuple[str, str]:
    """Split a ``--registry`` target into ``(scheme, "host:port")``; not a checkpoint.

    ``"host:port"`` and ``"registry://host:port"`` name a registry server (``trio-micro
    registry``); ``"etcd://host:port"`` an etcd v3 JSON gateway.

    Raises:
        CommandError: An unknown scheme or a malformed address (exit 2).
    """
    scheme, sep, authority = text.partition("://")
    if not sep:
        scheme, authority = "registry", text
    if scheme not in _REGISTRY_SCHEMES:
        raise usage_error(
            f"--registry must be HOST:PORT, registry://HOST:PORT or etcd://HOST:PORT, got {text!r}"
        )
    try:
        host, number = parse_address(authority)
    except ValueError as exc:
        raise usage_error(f"--registry: {exc}") from None
    return scheme, _format_address(host, number)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-file`` and ``--log-level``."""
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="append JSON-lines logs to PATH (default: human-readable logs on stderr)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="lowest level logged (default: info)",
    )


# ---------------------------------------------------------------------- the command


#: What SIGINT/SIGTERM do to a server command (serve, registry), for its --help.
SERVER_SIGNALS_HELP: Final = """\
SIGINT/SIGTERM: stop gracefully (calls in progress get --grace seconds), then exit
128 + the signal number (130, 143); a second signal cancels at once."""

_EPILOG = epilog(
    """\
MODULE:ATTR names an rpc.Service subclass (or instance). A class with a classmethod
open(**options) returning an async context manager is served as
`async with Cls.open(**options)`; any other class as Cls(**options). Options are the
-o KEY=VALUE pairs, as strings.""",
    """\
Prints one line when ready: `serving SERVICE[,SERVICE...] on HOST:PORT`. On a signal it
deregisters first.""",
    SERVER_SIGNALS_HELP,
    """\
example:
  trio-micro serve myapp.users:UserService -o db=data/users.db \\
      --port 50051 --registry 127.0.0.1:7000 --log-file logs/users-1.jsonl""",
)


def add_serve_parser(subparsers: Any) -> None:
    """Add the ``serve`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="run a service class as a process (until SIGINT/SIGTERM)",
        description="Run an rpc.Service as a process, optionally registered in a registry.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("service", metavar="MODULE:ATTR", help="the service, e.g. pkg.mod:Cls")
    parser.add_argument(
        "-o",
        "--option",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="an option for the service's open() or constructor (repeatable)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=0, help="TCP port (default: 0, any free port)")
    parser.add_argument(
        "--registry",
        metavar="TARGET",
        help="register in a registry: HOST:PORT or registry://HOST:PORT (trio-micro "
        "registry), or etcd://HOST:PORT",
    )
    add_registry_token_argument(
        parser,
        text="a file holding the shared token of the --registry server (trio-micro registry "
        "--token-file); the environment default is ignored with an etcd:// registry",
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="the address clients use, registered and printed (default: the bound address)",
    )
    parser.add_argument(
        "--ttl",
        type=seconds(),
        default=10.0,
        help="registration TTL in seconds; renewed every TTL/3 (default: 10)",
    )
    parser.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="registration metadata (repeatable)",
    )
    add_logging_arguments(parser)
    parser.add_argument(
        "--grace",
        type=seconds(zero=True),
        default=10.0,
        help="seconds in-flight calls may take to finish on shutdown (default: 10)",
    )
    parser.add_argument(
        "--debug-port",
        type=port,
        default=None,
        metavar="PORT",
        help="serve /metrics and /debug/* on 127.0.0.1:PORT (0: any free port); off by default",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log one record per call (rpc.AccessLogInterceptor)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="do not freeze the objects made at startup out of the garbage collector's "
        "full collections (gc.freeze, once listening)",
    )
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="run N worker processes (1-256, or 'auto': one per CPU) under a supervisor: "
        "all accept on --port (SO_REUSEPORT; 0: one free port chosen for all), and each "
        "also listens on a port of its own, which it registers (default: 1, no supervisor)",
    )
    parser.add_argument(
        "--compress",
        type=compression,
        metavar="ENCODING",
        help="compress answers of 1 KiB and more with this encoding when the call does not "
        "choose one and the client accepts it: zlib, zstd (with the zstd extra) or none "
        "(default: none; requests are always accepted compressed)",
    )
    add_http_port_argument(parser)  # --http-port (issue #19)
    add_tls_arguments(parser)
    add_admission_arguments(parser)
    add_limit_arguments(parser)  # --max-connections, --idle-timeout, ... (issue #15)


@dataclass(frozen=True, kw_only=True)
class _ServeConfig:
    spec: str
    target: type[rpc.Service] | rpc.Service
    options: dict[str, str]
    host: str
    port: int
    registry: tuple[str, str] | None
    advertise: str | None
    ttl: float
    metadata: dict[str, str]
    grace: float
    access_log: bool
    gc_freeze: bool = True
    debug_port: int | None = None
    log_file: str | None = None
    workers: int = 1
    http_port: int | None = None  # issue #19: the Connect gateway
    # TLS: the server's context (None: plain TCP), and how to reach --registry.
    server_tls: ssl.SSLContext | None = None
    client_tls: ClientTls = field(default_factory=ClientTls)
    registry_token: str | None = None  # never logged
    max_inflight: int | None = None
    rate_limit: tuple[float, int] | None = None
    rate_limit_key: str = "peer"
    limits: LimitOptions = field(default_factory=LimitOptions)
    compression: str | None = None  # --compress: the server's default for its answers


def _check_args(args: argparse.Namespace) -> _ServeConfig:
    """Validate everything that needs no I/O; raise :class:`CommandError`."""
    options = _key_values(args.option, what="-o/--option")
    metadata = _key_values(args.metadata, what="--metadata")
    registry = None if args.registry is None else parse_registry_target(args.registry)
    advertise = None
    if args.advertise is not None:
        try:
            advertise = _format_address(*parse_address(args.advertise))
        except ValueError as exc:
            raise usage_error(f"--advertise: {exc}") from None
    elif registry is not None and _is_wildcard(args.host):
        raise usage_error(
            f"--host {args.host!r} listens on every interface; pass --advertise HOST:PORT "
            "to say which address to register"
        )
    if args.workers > 1 and args.http_port is not None:
        raise usage_error(
            "--http-port with --workers: each worker would bind the HTTP port; run the "
            "gateway as a process of its own in front of them (trio-micro gateway TARGET)"
        )
    registry_token = None
    if args.registry_token_file:
        if registry is not None and registry[0] == "registry":
            registry_token = read_token_file(args.registry_token_file, "--registry-token-file")
        elif token_flag_given(args):  # only the environment default is ignored elsewhere
            why = "not etcd" if registry is not None else "given without --registry"
            raise usage_error(f"--registry-token-file is for registry:// registries: {why}")
    target = resolve_service(args.service)
    return _ServeConfig(
        spec=args.service,
        target=target,
        options=options,
        host=args.host,
        port=args.port,
        registry=registry,
        advertise=advertise,
        ttl=args.ttl,
        metadata=metadata,
        grace=args.grace,
        access_log=not args.no_access_log,
        gc_freeze=not args.no_gc_freeze,
        debug_port=args.debug_port,
        log_file=args.log_file,
        workers=args.workers,
        http_port=args.http_port,
        server_tls=server_tls(args),
        client_tls=client_tls(args),
        registry_token=registry_token,
        max_inflight=args.max_inflight,
        rate_limit=args.rate_limit,
        rate_limit_key=args.rate_limit_key,
        limits=limit_options(args),
        compression=args.compress,
    )


def _is_wildcard(host: str) -> bool:
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
