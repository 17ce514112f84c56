"""Issue #15, CPU fairness: under ``hostile_bench``'s ``many-within-limits`` attack, is the
server's event loop hogged, or is it the machine?

Starts ``trio-micro serve examples.user_service:UserService`` as ``hostile_bench`` does,
probes it on one connection with calls that touch no database (``health.check``, and a
cached ``get_user``), runs the attack for ``--hold`` seconds, and prints the probe's
latencies, its five longest calls (seconds into the attack, ms), and what the kernel says of
the server's event-loop thread over the attack (``/proc/PID/task/PID/schedstat``): time on
a CPU and time runnable but waiting for one. A loop hogged by one connection's work shows
as much time on CPU; a loaded machine as much time waiting::

    .venv/bin/python benchmarks/hostile_loop_probe.py --hold 4 --runs 2
    .venv/bin/python benchmarks/hostile_loop_probe.py -- -o threads=1
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

import trio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import hostile_bench

from examples.user_service.service import GetUserRequest, UserService
from trio_micro import observe, rpc


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the thread ``pid`` of process ``pid`` ran, and waited runnable."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as stat:
        ran, waited, _ = map(int, stat.read().split())
    return ran / 1e9, waited / 1e9


async def probe(channel: rpc.Channel, stamps: list[tuple[float, float]], stop: trio.Event) -> None:
    health, users = channel.stub(rpc.HealthService), channel.stub(UserService)
    while not stop.is_set():
        start = time.perf_counter()
        with trio.fail_after(30):
            await health.check(rpc.HealthCheckRequest(""))
            await users.get_user(GetUserRequest(user_id=1))  # cached after the first
        stamps.append((start, time.perf_counter() - start))
        await trio.sleep(0.005)


async def run(pid: int, address: str, hold: float) -> None:
    host, port = address.rsplit(":", 1)
    stamps: list[tuple[float, float]] = []
    stop = trio.Event()
    async with rpc.open_channel(address, retry=None) as channel, trio.open_nursery() as nursery:
        await channel.stub(UserService).get_user(GetUserRequest(user_id=1))
        nursery.start_soon(probe, channel, stamps, stop)
        await trio.sleep(0.5)
        stamps.clear()
        start, before = time.perf_counter(), schedstat(pid)
        await hostile_bench.attack("many-within-limits", host, int(port), hold, [0])
        wall, after = time.perf_counter() - start, schedstat(pid)
        stop.set()
    during = sorted(d for t, d in stamps if t < start + wall)
    top = sorted(stamps, key=lambda s: -s[1])[:5]
    print(
        f"probe calls {len(during)}: p50 {during[len(during) // 2] * 1000:.1f} ms, "
        f"max {during[-1] * 1000:.1f} ms; longest (s into the attack, ms): "
        f"{[(round(t - start, 2), round(d * 1000)) for t, d in top]}"
    )
    print(
        f"server loop thread over {wall:.2f} s: on a CPU {after[0] - before[0]:.2f} s, "
        f"runnable but waiting for a CPU {after[1] - before[1]:.2f} s; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--code", default=None, help="run the server from this checkout")
    parser.add_argument("serve_args", nargs="*", help="extra serve flags, after --")
    args = parser.parse_args(argv)
    observe.configure_logging(level="error")
    with tempfile.TemporaryDirectory() as tmp:
        db = hostile_bench.seed_database(tmp)
        for _ in range(args.runs):
            proc, address = hostile_bench.start_server(db, args.code, args.serve_args)
            try:
                trio.run(run, proc.pid, address, args.hold)
            finally:
                proc.terminate()
                proc.wait(60)


if __name__ == "__main__":
    main()
