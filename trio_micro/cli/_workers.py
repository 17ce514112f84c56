"""``trio-micro serve --workers N``: the supervisor's side.

The supervisor imports the service once (so a module that does not import fails once, in
one line, before any worker starts), makes sure ``--port`` can be shared (with port 0 it
picks one free port for all the workers), and starts N copies of the same command line as
workers (:class:`trio_micro.supervise.Supervisor`). Each worker (:func:`._serve._serve`
with a :class:`~trio_micro.supervise.WorkerContext`) accepts on the shared port with
``SO_REUSEPORT`` -- outside clients connect there and the kernel spreads their connections
-- and on a port of its own, which it registers: a registry-driven channel keeps one
connection per endpoint, so it spreads calls over the workers only if each is an endpoint.

The supervisor prints ``serving SERVICE on HOST:PORT`` (the shared address) once every
worker is ready. On SIGINT/SIGTERM it sends each worker SIGTERM (each deregisters and drains
for ``--grace``), waits, and exits 128 + N; a second signal SIGKILLs them. A worker that
crashes is restarted with backoff (``supervise.worker.exited``; counted in
``trio_micro_supervisor_restarts_total``). ``--debug-port`` serves the supervisor's pages,
with every worker's metrics on ``/metrics`` labelled ``worker`` (and the supervisor's own as
``worker="supervisor"``); ``/debug/stats`` lists each worker with its own debug URL (its
task and memory pages). ``--log-file F`` is the supervisor's log; worker i writes
``F``'s ``.worker<i>`` sibling (:func:`._serve.worker_log_file`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog
import trio

from trio_micro import observe, rpc
from trio_micro.supervise import Supervisor, WorkerMetricsRegistry, WorkerStartError

from ._common import CommandError, Stopper
from ._serve import ENV_SHARED_PORT, ENV_WORKER_DEBUG
from ._serve_args import _format_address, _ServeConfig

__all__: list[str] = []  # internal to the cli package

log = structlog.get_logger("serve")


async def _shared_port(config: _ServeConfig) -> int:
    """Check that ``--port`` can be shared (or pick a free one for port 0); a checkpoint.

    The probe listens for an instant only: a listening socket of the supervisor's own would
    take its share of connections and never accept them.
    """
    try:
        listeners = await rpc.open_tcp_listeners(config.port, host=config.host, reuse_port=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise CommandError(
            f"cannot listen on {_format_address(config.host, config.port)} for "
            f"{config.workers} workers: {reason}"
        ) from None
    port: int = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    return port


async def supervise_serve(config: _ServeConfig, argv: Sequence[str], stopper: Stopper) -> None:
    """Run ``config.workers`` workers of ``trio-micro serve ARGV`` until the first signal.

    Raises:
        CommandError: The port can't be shared, or a worker could not start.
    """
    port = await _shared_port(config)
    env = {
        ENV_SHARED_PORT: str(port),
        ENV_WORKER_DEBUG: "1" if config.debug_port is not None else "",
    }
    command = [sys.executable, "-m", "trio_micro", *argv]
    supervisor = Supervisor(lambda index: command, config.workers, grace=config.grace, env=env)
    address = config.advertise or _format_address(config.host, port)
    async with AsyncExitStack() as stack:
        if config.debug_port is not None:
            registry = WorkerMetricsRegistry(supervisor)
            stack.callback(
                observe.register_stats_source(
                    "supervisor",
                    supervisor.statistics,
                    counters=("restarts", "start_failures"),
                    registry=registry,
                )
            )
            for index in range(config.workers):
                stack.callback(
                    observe.register_stats_source(
                        "supervisor_worker",
                        _worker_reader(supervisor, index),
                        labels={"slot": str(index)},
                        counters=("restarts",),
                        registry=registry,
                    )
                )
            debug = await stack.enter_async_context(
                observe.open_debug_server(
                    port=config.debug_port, registry=registry, before_scrape=registry.refresh
                )
            )
            log.info("serve.debug_endpoint", url=debug.url)
            print(f"debug endpoint: {debug.url}", file=sys.stderr, flush=True)
        stopper.on_forced(supervisor.kill)
        stopper.fields.update(address=address, workers=config.workers)
        async with trio.open_nursery() as nursery:
            try:
                workers = await nursery.start(supervisor.run)
            except WorkerStartError as exc:
                raise CommandError(str(exc)) from None
            stopper.serving()
            log.info(
                "serve.started",
                services=[config.target.__rpc_name__],
                address=address,
                workers=[dict(w.ready) for w in workers],
                registry=None if config.registry is None else "/".join(config.registry),
            )
            print(f"serving {config.target.__rpc_name__} on {address}", flush=True)
            await stopper.wait()
            nursery.cancel_scope.cancel()  # SIGTERM each worker; wait for their drains


def _worker_reader(supervisor: Supervisor, index: int) -> Any:
    def read() -> dict[str, object]:
        status = supervisor.workers()[index]
        ready = status.ready
        debug_port = ready.get("debug_port")
        return {
            "pid": status.pid,
            "restarts": status.restarts,
            "ready": bool(ready),
            "address": ready.get("address"),
            "debug_url": None if debug_port is None else f"http://127.0.0.1:{debug_port}/",
        }

    return read
