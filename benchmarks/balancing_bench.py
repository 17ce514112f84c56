"""Balancing overhead and discovery latency (issue #4), in one process on 127.0.0.1.

::

    .venv/bin/python benchmarks/balancing_bench.py            # 7 runs
    .venv/bin/python benchmarks/balancing_bench.py --quick    # a smoke run

* **Overhead**: unary calls/s with 64 in flight through a channel to 1 endpoint (the
  balancer is skipped: one ready connection) and to 3 endpoints with round robin and with
  power-of-two-choices, retries and ejection on (the defaults). Servers and client share
  the process and its one core, so the figures compare the channel's paths with each other,
  not with other frameworks (``rpc_bench.py`` does that). The table also gives the
  ``send_all`` calls on all sockets (client and servers) per call: how well each case
  batches frames, which is what separates the balancers here.
* **Discovery latency**: from the moment ``register()`` has returned to the first call
  answered by the new replica, with calls running back to back, for ``MemoryRegistry``,
  the registry server (``registry.open_registry_client``) and a real etcd (started on
  free ports with a temporary data dir, when the ``etcd`` binary is installed).
* **Hedging with one slow replica** (issue #18): 3 replicas, one answering after
  ``SLOW_S`` seconds, power-of-two-choices, 4 calls in flight (few, so that the one
  process, which runs servers and client on one core, is not the bottleneck: hedging
  cuts waiting on a slow replica, not CPU queueing); latency percentiles of
  plain calls and of ``rpc.hedged(stub.whoami, Empty(), delay=HEDGE_DELAY_S)``, and
  how many attempts reached a server per call. Runs interleaved, percentiles over the
  calls of all runs.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import msgspec
import trio

from trio_micro import observe, rpc
from trio_micro.registry import (
    MemoryRegistry,
    Registry,
    open_etcd_registry,
    open_registry_client,
    open_registry_server,
)


class Empty(msgspec.Struct):
    pass


class Name(msgspec.Struct):
    name: str


class Replica(rpc.Service, name="bench.replica"):
    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.calls = 0

    @rpc.unary(idempotent=True)
    async def whoami(self, req: Empty) -> Name:
        self.calls += 1
        if self.delay:
            await trio.sleep(self.delay)
        return Name(self.name)


SLOW_S = 0.050  # the slow replica's answer time
HEDGE_DELAY_S = 0.010  # when the hedged call sends its second attempt


async def hedging_latency(
    hedge: bool, calls: int, in_flight: int = 16
) -> tuple[list[float], float]:
    """Per-call latencies with one slow replica of three, and attempts per call."""
    replicas = [Replica("slow", SLOW_S), Replica("a"), Replica("b")]
    latencies: list[float] = []
    async with AsyncExitStack() as stack:
        targets = []
        for replica in replicas:
            server = await stack.enter_async_context(
                rpc.open_server([replica], host="127.0.0.1", port=0)
            )
            targets.append(f"127.0.0.1:{server.address[1]}")
        channel = await stack.enter_async_context(rpc.open_channel(targets))
        stub = channel.stub(Replica)
        while channel.statistics().ready < len(replicas):  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.001)

        async def worker(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                if hedge:
                    await rpc.hedged(stub.whoami, Empty(), delay=HEDGE_DELAY_S)
                else:
                    await stub.whoami(Empty())
                latencies.append(time.perf_counter() - start)

        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker, calls // in_flight)
    return latencies, sum(r.calls for r in replicas) / len(latencies)


class _SendCounter:
    """Counts ``trio.SocketStream.send_all`` calls (every socket, both ends) while on."""

    def __init__(self) -> None:
        self.sends = 0
        self._original = trio.SocketStream.send_all

    def install(self) -> None:
        original, counter = self._original, self

        async def send_all(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
            counter.sends += 1
            await original(stream, data)

        trio.SocketStream.send_all = send_all  # type: ignore[method-assign]

    def uninstall(self) -> None:
        trio.SocketStream.send_all = self._original  # type: ignore[method-assign]


class TwoRandomDraws:
    """Power of two choices with both candidates drawn at random (trio_micro's p2c until
    2026-11-27), for comparison: it batches frames worse (see the sends column)."""

    def __init__(self) -> None:
        self._random = random.Random().random

    def pick(self, ready: Sequence[rpc.Subchannel]) -> int:
        count = len(ready)
        first = int(self._random() * count)
        second = int(self._random() * (count - 1))
        if second >= first:
            second += 1
        return second if ready[second].outstanding < ready[first].outstanding else first


async def throughput(
    replicas: int,
    balancer: Callable[[], rpc.Balancer],
    calls: int,
    in_flight: int = 64,
    counter: _SendCounter | None = None,
) -> float:
    async with AsyncExitStack() as stack:
        targets = []
        for i in range(replicas):
            server = await stack.enter_async_context(
                rpc.open_server([Replica(str(i))], host="127.0.0.1", port=0)
            )
            targets.append(f"127.0.0.1:{server.address[1]}")
        channel = await stack.enter_async_context(rpc.open_channel(targets, balancer=balancer()))
        stub = channel.stub(Replica)
        while channel.statistics().ready < replicas:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.001)

        async def worker(n: int) -> None:
            for _ in range(n):
                await stub.whoami(Empty())

        async with trio.open_nursery() as nursery:  # warm-up
            for _ in range(in_flight):
                nursery.start_soon(worker, 20)
        sends = counter.sends if counter is not None else 0
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker, calls // in_flight)
        elapsed = time.perf_counter() - start
        if counter is not None:
            counter.sends -= sends  # leave only the timed calls' sends
        return (calls // in_flight * in_flight) / elapsed


async def discovery_latency(registry: Registry, samples: int) -> list[float]:
    latencies = []
    async with rpc.open_channel("bench", registry=registry) as channel:
        stub = channel.stub(Replica)
        first = Replica("first")
        async with (
            rpc.open_server([first], host="127.0.0.1", port=0) as server,
            registry.register("bench", f"127.0.0.1:{server.address[1]}"),
        ):
            await stub.whoami(Empty())
            for i in range(samples):
                new = Replica(f"new{i}")
                async with (
                    rpc.open_server([new], host="127.0.0.1", port=0) as other,
                    registry.register("bench", f"127.0.0.1:{other.address[1]}"),
                ):
                    start = time.perf_counter()
                    while new.calls == 0:
                        await stub.whoami(Empty())
                    latencies.append(time.perf_counter() - start)
    return latencies


async def main(runs: int, calls: int, samples: int) -> None:
    observe.configure_logging(format="console", level="warning", file=sys.stderr)
    cases: list[tuple[str, int, Callable[[], rpc.Balancer]]] = [
        ("1 endpoint", 1, rpc.PowerOfTwoChoices),
        ("3 endpoints, round robin", 3, rpc.RoundRobin),
        ("3 endpoints, power of two choices", 3, rpc.PowerOfTwoChoices),
        ("3 endpoints, two random draws (reference)", 3, TwoRandomDraws),
    ]
    results: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    sends: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    counter = _SendCounter()
    counter.install()
    try:
        for _ in range(runs):  # interleaved, so a noisy moment hits every case alike
            for name, replicas, balancer in cases:
                counter.sends = 0
                results[name].append(await throughput(replicas, balancer, calls, 64, counter))
                sends[name].append(counter.sends / (calls // 64 * 64))
    finally:
        counter.uninstall()
    direct = results[cases[0][0]]
    print(
        f"| channel | calls/s (64 in flight, median of {runs}) | min..max | vs 1 endpoint "
        "| socket sends per call |"
    )
    print("|---|---|---|---|---|")
    for name, values in results.items():
        # The ratio of each run to the same run's single endpoint, then the median.
        ratio = statistics.median(v / d for v, d in zip(values, direct, strict=True))
        print(
            f"| {name} | {statistics.median(values):,.0f} | "
            f"{min(values):,.0f}..{max(values):,.0f} | {ratio:.0%} | "
            f"{statistics.median(sends[name]):.3f} |"
        )
    print()
    await print_hedging(runs, calls // 10)
    print()
    print("| registry | discovery latency p50 | p99 | samples |")
    print("|---|---|---|---|")
    rows = [("MemoryRegistry", await discovery_latency(MemoryRegistry(), samples))]
    async with (
        open_registry_server() as server,
        open_registry_client(server.target) as client,
    ):
        rows.append(("registry server", await discovery_latency(client, samples)))
    if shutil.which("etcd") is None:
        print("| etcd | n/a (etcd not installed) | |")
    else:
        rows.append(("etcd", await _etcd_latency(samples)))
    for name, values in rows:
        p50 = statistics.median(values) * 1000
        p99 = _percentile(values, 0.99) * 1000
        print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {len(values)} |")


async def print_hedging(runs: int, calls: int) -> None:
    cases = {"plain calls": False, f"rpc.hedged, delay {HEDGE_DELAY_S * 1000:g} ms": True}
    latencies: dict[str, list[float]] = {name: [] for name in cases}
    attempts: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, hedge in cases.items():
            values, per_call = await hedging_latency(hedge, calls)
            latencies[name] += values
            attempts[name].append(per_call)
    print(
        f"| 3 replicas, one answering in {SLOW_S * 1000:g} ms, 4 in flight | p50 | p99 "
        "| max | attempts per call | calls |"
    )
    print("|---|---|---|---|---|---|")
    for name, values in latencies.items():
        print(
            f"| {name} | {statistics.median(values) * 1000:.2f} ms "
            f"| {_percentile(values, 0.99) * 1000:.2f} ms | {max(values) * 1000:.2f} ms "
            f"| {statistics.median(attempts[name]):.3f} | {len(values)} |"
        )


_REPO = str(Path(__file__).resolve().parent.parent)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _etcd_latency(samples: int) -> list[float]:
    # The tests' etcd helper: free ports on 127.0.0.1, a temporary data dir, stopped after.
    sys.path.insert(0, _REPO)
    from tests.registry._etcd_server import EtcdServer

    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as workdir:
        etcd = EtcdServer(Path(workdir))
        await trio.to_thread.run_sync(etcd.start)
        try:
            async with open_etcd_registry(etcd.url) as registry:
                return await discovery_latency(registry, samples)
        finally:
            etcd.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--runs", type=int, default=7, help="interleaved runs per case (7)")
    parser.add_argument(
        "--hedging", action="store_true", help="only the hedging table (3,000 calls per run)"
    )
    args = parser.parse_args()
    if args.hedging:
        observe.configure_logging(format="console", level="warning", file=sys.stderr)
        trio.run(print_hedging, args.runs, 3_000)
    elif args.quick:
        trio.run(main, 1, 2_000, 3)
    else:
        trio.run(main, args.runs, 30_000, 100)
