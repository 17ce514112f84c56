"""Channels that follow a service through a registry: live endpoint changes, unknown
services, bad addresses, target strings, and replicas that die under load.

Real sockets on 127.0.0.1 and real time (registrations renew over the network), with every
wait bounded and waiting for a condition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    EtcdRegistry,
    MemoryRegistry,
    Registry,
    RegistryUnavailableError,
    open_registry_client,
    open_registry_server,
)

from ..rpc.replicas import Empty, ReplicaService, address, wait_until
from ._etcd_server import EtcdServer, free_port

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0


@asynccontextmanager
async def replica(
    registry: Registry, name: str, *, service: str = "replica", ttl: float = 10.0
) -> AsyncIterator[ReplicaService]:
    """An in-process replica, registered while the block runs."""
    svc = ReplicaService(name)
    async with (
        rpc.open_server([svc], host="127.0.0.1", port=0) as server,
        registry.register(service, address(server), ttl=ttl),
    ):
        yield svc


def endpoint_count(channel: rpc.Channel) -> int:
    return len(channel.statistics().endpoints)


async def test_channel_follows_replicas_added_and_removed_live() -> None:
    registry = MemoryRegistry()
    # Waits for ready: a call right after registering may come before the watch has it.
    async with rpc.open_channel("replica", registry=registry, wait_for_ready=True) as channel:
        stub = channel.stub(ReplicaService)
        async with replica(registry, "a") as a:
            assert (await stub.whoami(Empty())).name == "a"
            async with replica(registry, "b") as b:
                # A new replica gets calls soon after it registers.
                with trio.fail_after(WAIT):
                    while b.calls == 0:
                        await stub.whoami(Empty())
                assert endpoint_count(channel) == 2
            with trio.fail_after(WAIT):
                await wait_until(lambda: endpoint_count(channel) == 1)
            before = b.calls
            for _ in range(50):
                assert (await stub.whoami(Empty())).name == "a"
            assert b.calls == before
            assert a.calls >= 50


async def test_deregistered_replica_finishes_its_running_calls() -> None:
    registry = MemoryRegistry()
    a = ReplicaService("a", delay=0.2)
    async with (
        rpc.open_server([a], host="127.0.0.1", port=0) as server,
        rpc.open_channel("replica", registry=registry, wait_for_ready=True) as channel,
        trio.open_nursery() as nursery,
    ):
        results: list[str] = []

        async def call() -> None:
            results.append((await channel.stub(ReplicaService).write(Empty())).name)

        async with registry.register("replica", address(server)):
            nursery.start_soon(call)
            with trio.fail_after(WAIT):
                await wait_until(lambda: a.calls == 1)
        # Deregistered while its call runs: drained, not cut off.
        with trio.fail_after(WAIT):
            await wait_until(lambda: endpoint_count(channel) == 0)
            await wait_until(lambda: results == ["a"])
        with trio.fail_after(WAIT):
            await wait_until(lambda: server.statistics().connections == 0)


async def test_unknown_service_fails_fast_naming_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel("nobody-registered-this", registry=MemoryRegistry()) as channel:
        stub = channel.stub(ReplicaService)
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(rpc.RpcError) as info:
            await stub.whoami(Empty())
        assert info.value.code is rpc.Status.UNAVAILABLE
        assert info.value.message == "service 'nobody-registered-this' has no endpoints"
        assert trio.current_time() == start  # the resolver's first answer: at once
        assert str(channel.resolver_status) == "resolved (0 endpoints)"


async def test_waiting_for_ready_an_unknown_service_waits_discovery_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel(
        "nobody", registry=MemoryRegistry(), discovery_timeout=3, wait_for_ready=True
    ) as channel:
        start = trio.current_time()
        with pytest.raises(rpc.RpcError, match="no endpoints for service 'nobody' within"):
            await channel.stub(ReplicaService).whoami(Empty())
        assert trio.current_time() - start == pytest.approx(3)


async def test_waiting_for_ready_an_unknown_service_ends_at_the_callers_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rpc.open_channel("nobody", registry=MemoryRegistry()) as channel:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(2), rpc.wait_for_ready():
            await channel.stub(ReplicaService).whoami(Empty())
        assert trio.current_time() - start == pytest.approx(2)


async def test_a_call_waiting_for_a_service_proceeds_when_it_registers() -> None:
    registry = MemoryRegistry()
    async with rpc.open_channel("replica", registry=registry) as channel:
        stub = channel.stub(ReplicaService)
        async with trio.open_nursery() as nursery:
            names: list[str] = []

            async def call() -> None:
                with rpc.wait_for_ready():
                    names.append((await stub.whoami(Empty())).name)

            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            async with replica(registry, "late"):
                with trio.fail_after(WAIT):
                    await wait_until(lambda: names == ["late"])


@dataclass(frozen=True)
class Record:
    address: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class ListResolver:
    """A resolver that yields fixed sets, then waits forever."""

    def __init__(self, *sets: Sequence[Record]) -> None:
        self.sets = sets

    async def watch(self, service: str) -> AsyncGenerator[Sequence[Record], None]:
        for item in self.sets:
            yield item
        await trio.sleep_forever()


async def test_malformed_addresses_from_the_registry_are_skipped_and_logged() -> None:
    good = ReplicaService("good")
    async with rpc.open_server([good], host="127.0.0.1", port=0) as server:
        resolver = ListResolver([Record("not an address"), Record(address(server))])
        with capture_logs() as logs:
            async with rpc.open_channel("svc", registry=resolver) as channel:
                assert (await channel.stub(ReplicaService).whoami(Empty())).name == "good"
                assert channel.statistics().endpoints == (address(server),)
    bad = [log for log in logs if log["event"] == "rpc.channel.bad_address"]
    assert bad[0]["address"] == "'not an address'"


async def test_bad_service_name_ends_the_channel() -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="service must be")):
        async with rpc.open_channel("no/slashes", registry=MemoryRegistry()):
            await trio.sleep_forever()


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("nope://h:1/svc", {}, "no resolver for the scheme"),
        ("registry://h:1", {}, "must look like"),
        ("registry:///svc", {}, "must look like"),
        ("svc", {"registry": object()}, "rpc.Resolver"),
        ("h:1", {"registry": MemoryRegistry(), "pool_size": 0}, "pool_size"),
        ("etcd://h:1/svc", {"registry": MemoryRegistry()}, "service name"),
    ],
)
async def test_bad_targets_are_refused(
    target: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        async with rpc.open_channel(target, **kwargs):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_registry_target_string_resolves_through_the_registry_server() -> None:
    async with (
        open_registry_server() as server,
        open_registry_client(server.target) as registry,
        replica(registry, "a"),
        rpc.open_channel(f"registry://{server.target}/replica") as channel,
    ):
        with trio.fail_after(WAIT):
            assert (await channel.stub(ReplicaService).whoami(Empty())).name == "a"


async def test_etcd_target_string_resolves_through_etcd(etcd_server: EtcdServer) -> None:
    service = f"replica-{os.getpid()}-{id(etcd_server)}"
    authority = etcd_server.url.removeprefix("http://")
    async with (
        EtcdRegistry(etcd_server.url) as registry,
        replica(registry, "etcd-a", service=service, ttl=2),
        rpc.open_channel(f"etcd://{authority}/{service}") as channel,
    ):
        with trio.fail_after(WAIT):
            assert (await channel.stub(ReplicaService).whoami(Empty())).name == "etcd-a"


# ---------------------------------------------------------------- under load


@dataclass
class Load:
    """Idempotent calls from a few workers; counts answers per replica, and failures."""

    stub: ReplicaService
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[rpc.RpcError] = field(default_factory=list)
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def worker(self) -> None:
        while not self.stopped:
            try:
                self.counts[(await self.stub.whoami(Empty())).name] += 1
            except rpc.RpcError as exc:
                self.failures.append(exc)
            await trio.sleep(0.002)  # a steady load, not a flood

    def phase(self) -> Counter[str]:
        """Start counting afresh; return the counts so far."""
        counts, self.counts = self.counts, Counter()
        return counts

    async def wait_calls(self, n: int) -> None:
        with trio.fail_after(WAIT):
            await wait_until(lambda: self.total >= n)


@asynccontextmanager
async def load(channel: rpc.Channel, workers: int = 8) -> AsyncIterator[Load]:
    state = Load(channel.stub(ReplicaService))
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(state.worker)
        try:
            yield state
        finally:
            state.stopped = True


async def start_replica(
    nursery: trio.Nursery, registry: str, name: str, started: dict[str, trio.Process]
) -> None:
    """A replica in its own process, registered with the registry server (TTL 1 s)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.registry._replica", registry, "replica", name, "1"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    ready = trio.Event()

    async def read_output() -> None:  # until EOF, so that the pipe never fills up
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            lines = buffer.split(b"\n")
            buffer = lines.pop()
            if any(line.startswith(b"ready ") for line in lines):
                ready.set()

    nursery.start_soon(read_output)
    try:
        with trio.fail_after(30):
            await ready.wait()
    finally:
        started[name] = process


@asynccontextmanager
async def processes(registry: str, names: list[str]) -> AsyncIterator[dict[str, trio.Process]]:
    """Replica processes by name; all killed on exit."""
    started: dict[str, trio.Process] = {}
    async with trio.open_nursery() as nursery:
        try:
            async with trio.open_nursery() as starting:
                for name in names:
                    starting.start_soon(start_replica, nursery, registry, name, started)
            yield started
        finally:
            for process in started.values():
                if process.returncode is None:
                    process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                for process in started.values():
                    await process.wait()
            nursery.cancel_scope.cancel()


async def test_sigkilled_replica_process_loses_no_calls() -> None:
    async with (
        open_registry_server() as server,
        open_registry_client(server.target) as registry,
        processes(server.target, ["r0", "r1", "r2"]) as replicas,
        rpc.open_channel("replica", registry=registry) as channel,
    ):
        with trio.fail_after(WAIT):
            await wait_until(lambda: channel.statistics().ready == 3)
        async with load(channel) as calls:
            await calls.wait_calls(600)
            before = calls.phase()
            assert set(before) == {"r0", "r1", "r2"}
            replicas["r0"].send_signal(signal.SIGKILL)
            with trio.fail_after(WAIT):
                await replicas["r0"].wait()
                # The registry drops it when its 1 s lease runs out.
                await wait_until(lambda: endpoint_count(channel) == 2)
            calls.phase()
            await calls.wait_calls(1000)
            after = calls.phase()
        assert calls.failures == []
        assert set(after) == {"r1", "r2"}
        assert min(after.values()) > 300  # r0's share went to both others


async def run_registry_server(
    port: int, *, task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED
) -> None:
    """A registry server on ``port`` until the scope it reports is cancelled (a crash)."""
    with trio.CancelScope() as scope:
        async with open_registry_server(port=port):
            task_status.started(scope)
            await trio.sleep_forever()


async def wait_reachable(registry: Registry) -> None:
    """Until the registry answers (its client reconnects with backoff)."""
    while True:
        try:
            await registry.resolve("replica")
        except RegistryUnavailableError:
            await trio.sleep(0.05)
        else:
            return


async def test_registry_server_restart_mid_load(nursery: trio.Nursery) -> None:
    port = free_port()
    a, b, c = ReplicaService("a"), ReplicaService("b"), ReplicaService("c")
    crash: trio.CancelScope = await nursery.start(run_registry_server, port)
    async with (
        rpc.open_server([a], host="127.0.0.1", port=0) as server_a,
        rpc.open_server([b], host="127.0.0.1", port=0) as server_b,
        rpc.open_server([c], host="127.0.0.1", port=0) as server_c,
        open_registry_client(f"127.0.0.1:{port}") as registry,
        registry.register("replica", address(server_a), ttl=1),
        registry.register("replica", address(server_b), ttl=1),
        # Fails fast (the default): the registry comes back empty, and its warm-up holds the
        # reopened watch's first answer until a and b register again, so the channel never
        # hears "no endpoints" and keeps calling them.
        rpc.open_channel("replica", registry=registry) as channel,
        load(channel) as calls,
    ):
        await calls.wait_calls(300)
        crash.cancel()  # the registry is gone: the known endpoints keep working
        calls.phase()
        await calls.wait_calls(300)
        assert set(calls.phase()) == {"a", "b"}
        # Back, empty: a and b register again when their keepalive finds the lease gone,
        # and a replica registering now is found.
        await nursery.start(run_registry_server, port)
        with trio.fail_after(WAIT):
            await wait_reachable(registry)
        async with registry.register("replica", address(server_c), ttl=1):
            with trio.fail_after(WAIT):
                await wait_until(lambda: c.calls > 0)
                await wait_until(lambda: endpoint_count(channel) == 3)
            calls.phase()
            await calls.wait_calls(300)
            assert set(calls.phase()) == {"a", "b", "c"}
    assert calls.failures == []
    nursery.cancel_scope.cancel()


async def test_etcd_stopped_and_restarted_mid_load(own_etcd_server: EtcdServer) -> None:
    await trio.to_thread.run_sync(own_etcd_server.start)
    a, b, c = ReplicaService("a"), ReplicaService("b"), ReplicaService("c")
    async with (
        rpc.open_server([a], host="127.0.0.1", port=0) as server_a,
        rpc.open_server([b], host="127.0.0.1", port=0) as server_b,
        rpc.open_server([c], host="127.0.0.1", port=0) as server_c,
        EtcdRegistry(own_etcd_server.url) as registry,
        registry.register("replica", address(server_a), ttl=2),
        registry.register("replica", address(server_b), ttl=2),
        rpc.open_channel("replica", registry=registry) as channel,
        load(channel) as calls,
    ):
        with trio.fail_after(WAIT):
            await wait_until(lambda: endpoint_count(channel) == 2)
        await calls.wait_calls(300)
        await trio.to_thread.run_sync(own_etcd_server.stop)
        calls.phase()
        await calls.wait_calls(300)  # etcd is down: the known endpoints keep working
        assert set(calls.phase()) == {"a", "b"}
        await trio.to_thread.run_sync(own_etcd_server.start)
        async with registry.register("replica", address(server_c), ttl=2):
            with trio.fail_after(15):
                await wait_until(lambda: c.calls > 0)
                await wait_until(lambda: endpoint_count(channel) == 3)
    assert calls.failures == []
