"""One run of the demo: start the processes, run the client's load, stop everything."""

from __future__ import annotations

import functools
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from trio_micro import observe, rpc
from trio_micro.cli import LoadResult, PeerCounter, progress, run_load
from trio_micro.registry import open_registry_client

from ..user_service.service import CreateUserRequest, UserService
from .config import (
    CREATE_ORDER,
    CREATE_ORDER_DEADLINE,
    DISCOVERY_TIMEOUT,
    METHOD,
    ORDERS,
    REGISTRY_READY,
    SERVE_READY,
    SERVICE,
    SERVICE_SPEC,
    Config,
    DemoError,
    order_calls,
    zipf_user_ids,
)
from .processes import Child, child_env, kill_all_now, seed_database, start_child, stop_all
from .system import say, start_orders_and_notifier, tls_flags


@dataclass
class Run:
    """What one run saw, filled in as it goes."""

    config: Config
    children: list[Child] = field(default_factory=list)
    seeded: str = ""
    result: LoadResult | None = None
    counter: PeerCounter = field(default_factory=PeerCounter)
    sources: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    orders_created: int = 0
    trace: dict[str, Any] = field(default_factory=dict)  # the waterfall shown, for the summary
    retries_throttled: int = 0
    debug_url: str | None = None
    client: dict[str, Any] = field(default_factory=dict)  # the client's task/memory figures
    signal: str | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    busy_ports: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0

    def replicas(self, service: str = SERVICE) -> list[Child]:
        """The children serving ``service``, in the order of their names (users-1, ...)."""
        replicas = [c for c in self.children if c.name.startswith(f"{service}-")]
        return sorted(replicas, key=lambda c: int(c.name.rpartition("-")[2]))

    def ordered_children(self) -> list[Child]:
        """The registry (and any other helper process) first, then the replicas."""
        replicas = self.replicas() + self.replicas(ORDERS)
        return [c for c in self.children if c not in replicas] + replicas


async def supervise(run: Run) -> None:
    """Run the demo, stopping every child however it ends (see the module docs)."""
    children = run.children
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as outer:
                work = trio.CancelScope()
                outer.start_soon(_watch_signals, signals, work, run)
                with work:
                    try:
                        await _work(run)
                    finally:
                        with trio.CancelScope(shield=True):
                            await stop_all(children)
                outer.cancel_scope.cancel()
    finally:
        kill_all_now(children)  # only does anything after a second signal or a bug


async def _watch_signals(signals: Any, work: trio.CancelScope, run: Run) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if run.signal is None:
            run.signal = name
            print(f"\n{name}: stopping the demo and its processes...", file=sys.stderr)
            work.cancel()
        else:
            print(f"{name} again: killing the processes now", file=sys.stderr)
            kill_all_now(run.children)


async def _work(run: Run) -> None:
    config = run.config
    env = child_env()
    python = [sys.executable, "-m", "trio_micro"]
    db = config.run_dir / "data" / "users.db"
    async with trio.open_nursery() as drains:
        # 1. the database and the registry (at the same time), then the replicas
        async with trio.open_nursery() as nursery:

            async def seed() -> None:
                run.seeded = await seed_database(config, env, db)

            nursery.start_soon(seed)
            registry = await start_child(
                drains,
                run.children,
                "registry",
                [*python, "registry", "--host", "127.0.0.1", "--port", "0", *tls_flags(config)],
                REGISTRY_READY,
                config,
                env,
            )
        say(f"{run.seeded}")
        say(f"registry listening on {registry.address} (pid {registry.pid})")
        replica_argv = [*python, "serve", SERVICE_SPEC, "--host", "127.0.0.1", "--port", "0"]
        replica_argv += ["--registry", f"registry://{registry.address}"]
        replica_argv += ["--ttl", f"{config.ttl:g}", "-o", f"db={db}"]
        replica_argv += ["--workers", str(config.workers), *tls_flags(config)]
        async with trio.open_nursery() as nursery:
            for i in range(1, config.replicas + 1):
                nursery.start_soon(
                    start_child,
                    drains,
                    run.children,
                    f"{SERVICE}-{i}",
                    replica_argv,
                    SERVE_READY,
                    config,
                    env,
                )
        for child in run.replicas():
            workers = ", ".join(f"{w.address} (pid {w.pid})" for w in child.workers)
            say(f"{child.name} serving on {child.address} (pid {child.pid}); workers: {workers}")
        await start_orders_and_notifier(run, drains, registry, env)
        # 2. the client
        await _client(run, registry)
        drains.cancel_scope.cancel()  # the children are stopped by the caller


async def _import_batch(reg: Any, tls: dict[str, Any]) -> None:
    """Import ``IMPORTED_USERS`` new users through ImportUsers, a client stream (on a
    channel of its own, so the load's per-replica counts stay the load's)."""
    async with (
        rpc.open_channel(SERVICE, registry=reg, **tls) as channel,
        channel.stub(UserService).import_users() as (send, receive),
    ):
        for i in range(IMPORTED_USERS):
            await send.send(CreateUserRequest(f"Imported {i}", f"imported{i}@example.com"))
        await send.aclose()
        summary = await receive.receive()
    say(
        f"imported {summary.imported:,} users with ImportUsers (a client stream) in "
        f"{summary.transactions} transactions"
    )


IMPORTED_USERS = 1000


async def _client(run: Run, registry: Child) -> None:
    """Find the replicas, run the load (killing one halfway), with the debug endpoint up.

    The task monitor and the memory monitor log into ``client.jsonl``; the number of live
    tasks before and after the load is the leak check.
    """
    config = run.config
    assert registry.address is not None
    ids = zipf_user_ids(config.users, config.calls, seed=config.seed)
    is_order = order_calls(config.calls, config.order_share, seed=config.seed)
    tls: dict[str, Any] = {}
    if config.tls is not None:  # the demo's own certificate: demo-client
        certs = config.tls
        tls["ssl_context"] = rpc.client_ssl_context(
            ca=str(certs.ca), certfile=str(certs.client_cert), keyfile=str(certs.client_key)
        )
    async with (
        observe.open_task_monitor(leak_threshold=max(1000, 4 * config.concurrency)) as monitor,
        observe.open_memory_monitor(interval=1.0),
        open_registry_client(registry.address, **tls) as reg,
        rpc.open_channel(SERVICE, registry=reg, interceptors=[run.counter], **tls) as channel,
        rpc.open_channel(ORDERS, registry=reg, interceptors=[run.counter], **tls) as orders,
        trio.open_nursery() as nursery,
    ):
        await _start_debug_endpoint(run, nursery)
        await _wait_discovered(run, channel, SERVICE)
        if config.orders:
            await _wait_discovered(run, orders, ORDERS)
        await _import_batch(reg, tls)
        victim = run.replicas()[-1] if config.kill else None
        kill_at = max(1, config.calls // 2)
        sources = run.sources

        async def call(index: int) -> None:
            if is_order[index]:
                request = {"user_id": ids[index], "item": "book", "quantity": 1 + index % 5}
                with trio.fail_after(CREATE_ORDER_DEADLINE):  # crosses to GetUser behind it
                    await orders.call(CREATE_ORDER, request)
                run.orders_created += 1
                return
            reply = await channel.call(METHOD, {"user_id": ids[index]}, idempotent=True)
            source = reply.get("source", "?") if isinstance(reply, dict) else "?"
            sources[source] = sources.get(source, 0) + 1

        what = f"{config.calls:,} calls ({config.concurrency} in flight)"
        tasks_before = monitor.statistics().live_tasks
        with progress(config.calls, what) as show:

            def on_progress(done: int, failed: int) -> None:
                show(done, failed)
                if victim is not None and victim.killed_at is None and done >= kill_at:
                    victim.killed_at = done
                    victim.kill_tree()
                    print(
                        f"killed {victim.name} (pid {victim.pid}, {victim.address}) with "
                        f"SIGKILL after {done:,} calls",
                        file=sys.stderr,
                        flush=True,
                    )

            run.result = await run_load(
                call, total=config.calls, concurrency=config.concurrency, on_progress=on_progress
            )
        for stats in (channel.statistics(), orders.statistics()):
            run.retries += stats.retries
            run.retries_throttled += stats.retries_throttled
        tasks = monitor.statistics()
        run.client = {
            "live_tasks_before_load": tasks_before,
            "live_tasks_after_load": tasks.live_tasks,
            "task_high_water": tasks.high_water,
            "leak_warnings": tasks.leak_warnings,
            "blocked_loop_steps": tasks.blocked_steps,
            "longest_step_ms": round(tasks.longest_step * 1000, 3),
            "peak_rss_bytes": observe.memory_snapshot().peak_rss_bytes,
        }
        nursery.cancel_scope.cancel()


async def _wait_discovered(run: Run, channel: rpc.Channel, service: str) -> None:
    """Wait until the channel has a ready connection to every worker of every replica."""
    wanted = {w.address for c in run.replicas(service) for w in c.workers}
    stats = channel.statistics()
    with trio.move_on_after(DISCOVERY_TIMEOUT):
        while True:
            stats = channel.statistics()
            if wanted <= set(stats.endpoints) and stats.ready >= len(wanted):
                say(
                    f"client: found {len(wanted)} endpoints of {service!r} in the registry "
                    f"(replicas x workers), connected to each"
                )
                return
            await trio.sleep(0.05)
    raise DemoError(
        f"the client did not connect to every replica within {DISCOVERY_TIMEOUT:g} s: "
        f"wanted {sorted(a for a in wanted if a)}, the registry gave {list(stats.endpoints)}, "
        f"{stats.ready} connections ready"
    )


async def _start_debug_endpoint(run: Run, nursery: trio.Nursery) -> None:
    """Serve the debug endpoint from the client process while the load runs."""
    host, port = await nursery.start(
        functools.partial(observe.serve_debug, host="127.0.0.1", port=0)
    )
    run.debug_url = f"http://{host}:{port}"
    say(
        f"debug endpoint of the client: {run.debug_url}/debug/tasks "
        "(also /metrics, /debug/memory, /debug/stats) while the demo runs"
    )
