"""``trio-micro serve MODULE:ATTR``: run a service as a process, until SIGINT or SIGTERM.

The service is found and opened by :mod:`._service_spec` (``MODULE:ATTR``, ``-o`` options).

Lifecycle
---------
Listen (``rpc.open_server`` with reflection and, unless ``--no-access-log``, the access
log), register every service with ``--registry`` if given, then print exactly one line
to stdout, ``serving SERVICE[,SERVICE...] on HOST:PORT`` (the address clients use: the
``--advertise`` address, else the bound one). On SIGINT or SIGTERM, in this order:
deregister (``/readyz`` turns 503), turn every health status ``NOT_SERVING`` (health
watchers hear it), then shut the server down gracefully (``GOAWAY``, in-flight calls get
``--grace`` seconds, then are cancelled), close the service, log ``serve.stopped`` and
exit ``128 +`` the signal number (130, 143), as every command does (:mod:`._common`). A
second signal during that drain cancels everything at once (logged as ``serve.forced``, with
``forced=true`` in ``serve.stopped``). A signal before the line was printed stops at once
(nothing was being served).

Exit status: 130/143 after a stop by signal, 1 when the service could not be started
(import, options, bind, registry), 2 for malformed arguments. Errors are one line on
stderr: ``trio-micro serve: error: ...``.

Garbage collection: once the service is open and listening, and before the ``serving``
line, every object the collector tracks is frozen (:func:`trio_micro.observe.tune_gc`
with ``freeze=True``, :func:`gc.freeze`): the modules, the service and its caches stop
being scanned by every full collection, which otherwise paused a loaded user-service
replica for 14-30 ms at a time (``benchmarks/overload_bench.py``). Frozen objects are never
collected; ``--no-gc-freeze`` turns it off.

Admission control (see docs/rpc.md): ``--max-inflight N`` refuses calls beyond N
running at once; ``--rate-limit RATE[/BURST]`` gives each caller (``--rate-limit-key
peer`` or ``metadata:NAME``) RATE calls a second. Both answer ``RESOURCE_EXHAUSTED`` at
once; with ``--debug-port`` both are counted on ``/metrics``
(``trio_micro_rpc_server_refused_calls_total``, ``trio_micro_rpc_rate_limit_*``).

Log events: ``serve.gc_frozen``, ``serve.started``, ``serve.stopping``, ``serve.deregistered``,
``serve.not_serving``, ``serve.forced``, ``serve.stopped``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import pathlib
import signal
import ssl
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
import trio

from trio_micro import observe, rpc
from trio_micro.registry import (
    RegistryError,
    parse_address,
)
from trio_micro.supervise import WorkerContext

from ._admission import add_admission_arguments, admission_interceptors
from ._common import (
    EXIT_OK,
    CommandError,
    Stopper,
    compression,
    epilog,
    key_value,
    port,
    run_trio,
    seconds,
    usage_error,
    worker_count,
)
from ._gateway import add_http_port_argument, enter_http_gateway  # issue #19
from ._limits import LimitOptions, add_limit_arguments, limit_options
from ._service_spec import enter_service, resolve_service
from ._tls import (
    ClientTls,
    add_registry_token_argument,
    add_tls_arguments,
    client_tls,
    open_registry,
    read_token_file,
    server_tls,
    token_flag_given,
)

__all__: list[str] = []  # internal to the cli package

log: Final = structlog.get_logger("serve")

#: Set by the supervisor of `serve --workers N` for its workers: the port they share.
ENV_SHARED_PORT: Final = "TRIO_MICRO_SERVE_SHARED_PORT"
#: "1" when the supervisor serves --debug-port: each worker then serves its own on a
#: private loopback port, which the supervisor scrapes.
ENV_WORKER_DEBUG: Final = "TRIO_MICRO_SERVE_WORKER_DEBUG"

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


# ---------------------------------------------------------------------- logging


def configure_command_logging(log_file: str | None, level: str) -> None:
    """JSON lines appended to ``log_file``, or the console renderer on stderr.

    Raises:
        CommandError: ``log_file`` can't be opened.
    """
    try:
        if log_file is None:
            observe.configure_logging(format="console", file=sys.stderr, level=level)
        else:
            observe.configure_logging(format="json", file=log_file, level=level)
    except OSError as exc:
        raise CommandError(f"cannot open the log file {log_file!r}: {exc.strerror}") from None


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


def listen_error(host: str, port: int, group: BaseExceptionGroup[OSError]) -> CommandError:
    """The :class:`CommandError` for a server that could not bind ``host:port``."""
    exc = group.exceptions[0]
    reason = getattr(exc, "strerror", None) or exc
    return CommandError(f"cannot listen on {host}:{port}: {reason}")


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


async def _serve(
    config: _ServeConfig, stopper: Stopper, worker: WorkerContext | None = None
) -> None:
    """Serve until the first signal; as one of a supervisor's workers when ``worker``."""
    async with AsyncExitStack() as stack:
        # Unwinds in reverse: deregister, close the registry client, shut the server
        # down gracefully (open_server does it on a normal exit), close the service.
        service = await enter_service(stack, config.spec, config.target, config.options)
        names = [service.__rpc_name__]
        limiters = admission_interceptors(config.rate_limit, config.rate_limit_key)
        interceptors: list[rpc.ServerInterceptor] = [*limiters]
        if config.access_log:
            interceptors.append(rpc.AccessLogInterceptor())
        debug_port = config.debug_port
        if worker is not None:  # the supervisor serves the --debug-port; ours is private
            debug_port = 0 if os.environ.get(ENV_WORKER_DEBUG) == "1" else None
        if debug_port is not None:
            interceptors.append(rpc.MetricsInterceptor())
        try:
            if worker is None:
                server = await stack.enter_async_context(
                    rpc.open_server(
                        [service],
                        host=config.host,
                        port=config.port,
                        interceptors=interceptors,
                        reflection=True,
                        grace_period=config.grace,
                        ssl_context=config.server_tls,
                        max_inflight=config.max_inflight,
                        compression=config.compression,
                        **config.limits,
                    )
                )
            else:
                shared = int(os.environ[ENV_SHARED_PORT])
                listeners = [
                    *await rpc.open_tcp_listeners(shared, host=config.host, reuse_port=True),
                    *await rpc.open_tcp_listeners(0, host=config.host),
                ]
                server = await stack.enter_async_context(
                    rpc.open_server(
                        [service],
                        listeners=listeners,
                        interceptors=interceptors,
                        reflection=True,
                        grace_period=config.grace,
                        ssl_context=config.server_tls,
                        max_inflight=config.max_inflight,
                        compression=config.compression,
                        **config.limits,
                    )
                )
        except* OSError as group:
            raise listen_error(config.host, config.port, group) from None
        if worker is None:
            address = config.advertise or _format_address(*server.address[:2])
        else:  # its own port, at the advertised host: registry clients reach this worker
            own_port = server.addresses[-1][1]
            host = parse_address(config.advertise)[0] if config.advertise else config.host
            address = _format_address(host, own_port)
        readiness = _Readiness(server, registering=config.registry is not None)
        debug = None
        if debug_port is not None:
            stack.callback(rpc.register_server_metrics(server))
            for limiter in limiters:
                stack.callback(
                    observe.register_stats_source(
                        "rpc_rate_limit",
                        limiter.statistics,
                        counters=("admitted", "refused", "keys_evicted"),
                    )
                )
            observe.register_process_metrics()
            # Live tasks and blocked-loop events on /metrics; the monitor times every task
            # step, a cost paid only with --debug-port.
            monitor = await stack.enter_async_context(observe.open_task_monitor())
            stack.callback(observe.register_task_monitor(monitor))
            debug = await stack.enter_async_context(
                observe.open_debug_server(port=debug_port, ready=readiness)
            )
            log.info("serve.debug_endpoint", url=debug.url)
            if worker is None:
                print(f"debug endpoint: {debug.url}", file=sys.stderr, flush=True)
        if config.http_port is not None:  # issue #19: the Connect gateway, same process
            await enter_http_gateway(stack, server, [service], config.host, config.http_port)
        stopper.fields.update(services=names, address=address)
        registrations = AsyncExitStack()  # closed by _drain, first thing on the way out
        where = None
        if config.registry is not None:
            scheme, authority = config.registry
            where = f"{scheme}://{authority}"
            try:
                registry = await stack.enter_async_context(
                    open_registry(scheme, authority, config.client_tls, config.registry_token)
                )
                # Deregisters before the client closes, also when a registration fails.
                stack.push_async_callback(registrations.aclose)
                for name in names:
                    await registrations.enter_async_context(
                        registry.register(name, address, ttl=config.ttl, metadata=config.metadata)
                    )
            except* RegistryError as group:
                raise CommandError(f"cannot register with {where}: {group.exceptions[0]}") from None
            readiness.registered = True
        stack.push_async_callback(_drain, server, registrations, readiness)
        if config.gc_freeze:
            # What startup made lives as long as the process: keep full collections
            # from scanning it again and again (their pauses were the overload tail).
            observe.tune_gc(freeze=True)
            log.info("serve.gc_frozen", objects=gc.get_freeze_count())
        stopper.serving()
        log.info(
            "serve.started",
            services=names,
            address=address,
            listening=[_format_address(*a[:2]) for a in server.addresses],
            registry=where,
        )
        if worker is None:
            print(f"serving {','.join(names)} on {address}", flush=True)
        else:
            worker.report_ready(
                address=address,
                port=server.addresses[-1][1],
                shared_port=server.address[1],
                debug_port=None if debug is None else debug.address[1],
            )
        await stopper.wait()


class _Readiness:
    """``/readyz``: serving (health ``SERVING``) and, with ``--registry``, registered."""

    def __init__(self, server: rpc.Server, *, registering: bool) -> None:
        self._server = server
        self._registering = registering
        self.registered = False
        self.stopping = False

    def __call__(self) -> bool:
        health = self._server.health
        return (
            not self.stopping
            and (health is None or health.serving)
            and (self.registered or not self._registering)
        )


async def _drain(server: rpc.Server, registrations: AsyncExitStack, readiness: _Readiness) -> None:
    """The first steps of a stop: not ready, deregister, NOT_SERVING -- then (the caller's
    exit stack goes on) the server's GOAWAY and grace period."""
    readiness.stopping = True
    if readiness.registered:
        await registrations.aclose()
        readiness.registered = False
        log.info("serve.deregistered")
    if server.health is not None:
        await server.health.shutdown()  # at most a second; a second signal cuts it short
        log.info("serve.not_serving")


def run_serve(args: argparse.Namespace) -> int:
    """Run ``trio-micro serve`` with parsed arguments; return the exit status."""

    worker = WorkerContext.from_environ()
    if worker is not None:  # one of `serve --workers N`'s processes
        worker.check_supervisor()
        # Bound before trio.run, so that every task's context (the signal handling's too)
        # carries it: each of the worker's records says which worker wrote it.
        structlog.contextvars.bind_contextvars(worker=worker.index)

    async def main(stopper: Stopper) -> int:
        config = _check_args(args)
        if worker is not None:
            configure_command_logging(
                worker_log_file(config.log_file, worker.index), args.log_level
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_when_orphaned, worker, stopper)
                await _serve(config, stopper, worker)
                nursery.cancel_scope.cancel()
            return EXIT_OK
        configure_command_logging(args.log_file, args.log_level)
        if config.workers > 1:
            from ._workers import supervise_serve

            await supervise_serve(config, args.argv, stopper)
        else:
            await _serve(config, stopper)
        return EXIT_OK

    return run_trio("serve", main, events="serve")


async def _stop_when_orphaned(worker: WorkerContext, stopper: Stopper) -> None:
    """A worker whose supervisor died stops as on SIGTERM (it drains), once."""
    await worker.wait_supervisor_gone()
    log.warning("serve.supervisor_gone", supervisor_pid=worker.supervisor_pid)
    stopper.receive(signal.SIGTERM)


def worker_log_file(log_file: str | None, index: int) -> str | None:
    """``logs/users.jsonl`` -> ``logs/users.worker0.jsonl``: one file per worker process
    (``trio-micro logs`` reads them all; the records carry ``worker``)."""
    if log_file is None:
        return None
    path = pathlib.Path(log_file)
    return str(path.with_name(f"{path.stem}.worker{index}{path.suffix}"))
