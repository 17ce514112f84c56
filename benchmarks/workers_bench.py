"""``trio-micro serve --workers N`` (issue #13): does a second core help, and what does the
supervisor cost?

::

    .venv/bin/python benchmarks/workers_bench.py             # 3 interleaved runs per case
    .venv/bin/python benchmarks/workers_bench.py --quick     # a smoke run

* **CPU-bound**: a handler doing about 200 µs of pure-Python work per call
  (``benchmarks/_workers_service.py``, calibrated here first), served with ``--workers 1``
  and ``--workers 2``, 64 calls in flight from one client process through a registry
  channel (the registry server runs in the client process). Calls/s, p50/p99, and the
  client's own CPU (seconds of CPU per second of wall time): on a 2-core machine the
  client shares the cores with the workers, which caps what 2 workers can show.
* **I/O-bound**: the user service (SQLite + cache, ``examples/user_service``), the same way.
* **Idle RSS**: a supervisor with 2 workers vs 2 separate ``serve`` processes.

Runs alternate between the cases (``--workers 1``, then 2, then 1, ...), so a busy machine
slows both alike; the table gives medians and the per-run ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
import trio

from trio_micro import rpc
from trio_micro.registry import open_registry_client, open_registry_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._workers_service import spin

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 64


def calibrate(target_us: float = 200.0) -> int:
    """Loop count for which ``spin`` takes about ``target_us`` here (median of 200)."""
    loops = 1000
    for _ in range(3):
        times = []
        for _ in range(200):
            start = time.perf_counter()
            spin(loops)
            times.append(time.perf_counter() - start)
        loops = max(1, round(loops * target_us / (statistics.median(times) * 1e6)))
    return loops


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them (trio forks from a
    worker thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


@asynccontextmanager
async def served(argv: list[str]) -> AsyncIterator[trio.Process]:
    """``python -m trio_micro serve ...`` until its ``serving`` line; SIGTERM afterwards."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_micro", "serve", *argv, "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(f"serve exited: {argv}")
                line += chunk
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(30):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def load(
    channel: rpc.Channel, method: str, payload: dict[str, int], calls: int
) -> dict[str, float]:
    """``calls`` calls, ``CONCURRENCY`` in flight; calls/s, latency, client CPU per second."""
    latencies: list[float] = []
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            await channel.call(method, payload, idempotent=True)
            latencies.append(time.perf_counter() - start)

    cpu = time.process_time()
    wall = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "calls_per_s": calls / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "client_cpu": cpu / wall,
    }


async def throughput(
    spec: str, options: list[str], method: str, payload: dict[str, int], runs: int, calls: int
) -> dict[int, list[dict[str, float]]]:
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    async with (
        open_registry_server(port=0) as registry_server,
        open_registry_client(registry_server.target) as registry,
    ):
        for _ in range(runs):
            for workers in (1, 2):
                argv = [spec, *options, "--workers", str(workers), "--port", "0"]
                argv += ["--registry", f"registry://{registry_server.target}", "--ttl", "5"]
                async with (
                    served(argv),
                    rpc.open_channel(method.split("/")[0], registry=registry) as channel,
                ):
                    with trio.fail_after(30):
                        while len(channel.statistics().endpoints) < workers:  # noqa: ASYNC110
                            await trio.sleep(0.05)
                    await load(channel, method, payload, calls // 10)  # warm-up
                    results[workers].append(await load(channel, method, payload, calls))
    return results


def report(title: str, results: dict[int, list[dict[str, float]]]) -> None:
    print(f"\n{title}")
    print("| workers | calls/s (median) | p50 ms | p99 ms | client CPU s/s | runs (calls/s) |")
    print("|---|---|---|---|---|---|")
    for workers, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        runs = ", ".join(f"{r['calls_per_s']:,.0f}" for r in rows)
        print(
            f"| {workers} | {med['calls_per_s']:,.0f} | {med['p50_ms']:.2f} | "
            f"{med['p99_ms']:.2f} | {med['client_cpu']:.2f} | {runs} |"
        )
    ratios = [
        b["calls_per_s"] / a["calls_per_s"] for a, b in zip(results[1], results[2], strict=True)
    ]
    print(
        f"\n2 workers / 1 worker: median {statistics.median(ratios):.2f}x "
        f"(per run: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


async def idle_rss(db: Path) -> None:
    spec = ["examples.user_service:UserService", "-o", f"db={db}", "--port", "0"]
    async with served([*spec, "--workers", "2"]) as supervisor:
        await trio.sleep(2)
        workers = children(supervisor.pid)
        supervised = [rss_kib(supervisor.pid), *(rss_kib(pid) for pid in workers)]
    async with served(spec) as one, served(spec) as two:
        await trio.sleep(2)
        separate = [rss_kib(one.pid), rss_kib(two.pid)]
    print("\nIdle RSS (MiB): supervisor + 2 workers vs 2 separate serve processes")
    print("| setup | processes (MiB) | total MiB |")
    print("|---|---|---|")
    print(
        f"| --workers 2 | {' + '.join(f'{k / 1024:.1f}' for k in supervised)} | "
        f"{sum(supervised) / 1024:.1f} |"
    )
    print(
        f"| 2 x serve | {' + '.join(f'{k / 1024:.1f}' for k in separate)} | "
        f"{sum(separate) / 1024:.1f} |"
    )


async def main(runs: int, calls: int) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no client logs
    loops = calibrate()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"calibrated: {loops} loops of spin() take about 200 us here")
    cpu = await throughput(
        "benchmarks._workers_service:CpuService",
        ["-o", f"loops={loops}"],
        "cpu/burn",
        {"n": 1},
        runs,
        calls,
    )
    report(f"CPU-bound handler (~200 us/call), {CONCURRENCY} in flight, {calls:,} calls", cpu)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "users.db"
        seed = [sys.executable, "-m", "examples.user_service", "seed", "--db", str(db)]
        await trio.run_process([*seed, "--users", "10000"], cwd=ROOT, stdout=subprocess.DEVNULL)
        io = await throughput(
            "examples.user_service:UserService",
            ["-o", f"db={db}"],
            "users/get_user",
            {"user_id": 7},
            runs,
            calls,
        )
        report(f"I/O-bound handler (user service, cached user), {CONCURRENCY} in flight", io)
        await idle_rss(db)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run, few calls")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per case (3)")
    parser.add_argument("--calls", type=int, default=6000, help="calls per run (6000)")
    args = parser.parse_args()
    trio.run(main, 1 if args.quick else args.runs, 1000 if args.quick else args.calls)
