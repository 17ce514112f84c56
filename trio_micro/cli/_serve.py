"""``trio-micro serve MODULE:ATTR``: run a service as a process, until SIGINT or SIGTERM.

The service is found and opened by :mod:`._service_spec` (``MODULE:ATTR``, ``-o`` options);
the command line -- the parser, its checks and the configuration they make -- is
:mod:`._serve_args`. This module runs that configuration.

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
import os
import pathlib
import signal
import sys
from contextlib import AsyncExitStack
from typing import Final

import structlog
import trio

from trio_micro import observe, rpc
from trio_micro.registry import (
    RegistryError,
    parse_address,
)
from trio_micro.supervise import WorkerContext

from ._admission import admission_interceptors
from ._common import (
    EXIT_OK,
    CommandError,
    Stopper,
    run_trio,
)
from ._gateway import enter_http_gateway  # issue #19
from ._serve_args import (
    _check_args,
    _format_address,
    _ServeConfig,
)
from ._serve_args import add_serve_parser as add_serve_parser  # the command table's name
from ._service_spec import enter_service
from ._tls import (
    open_registry,
)

__all__: list[str] = []  # internal to the cli package

log: Final = structlog.get_logger("serve")

#: Set by the supervisor of `serve --workers N` for its workers: the port they share.
ENV_SHARED_PORT: Final = "TRIO_MICRO_SERVE_SHARED_PORT"
#: "1" when the supervisor serves --debug-port: each worker then serves its own on a
#: private loopback port, which the supervisor scrapes.
ENV_WORKER_DEBUG: Final = "TRIO_MICRO_SERVE_WORKER_DEBUG"

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


def listen_error(host: str, port: int, group: BaseExceptionGroup[OSError]) -> CommandError:
    """The :class:`CommandError` for a server that could not bind ``host:port``."""
    exc = group.exceptions[0]
    reason = getattr(exc, "strerror", None) or exc
    return CommandError(f"cannot listen on {host}:{port}: {reason}")


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
