"""The Connect HTTP gateway against the native protocol: same handler, same server, same run.

One server process (pinned to core 0) serves ``bench/get_user`` over the native protocol
and, like ``trio-micro serve --http-port``, over the gateway (``gateway.serve_gateway``
with a loopback channel to the server). The client process (this one, core 1) measures,
interleaved run by run:

* ``native``: ``rpc.open_channel`` stub calls, one connection;
* ``gateway``: HTTP/1.1 ``POST /bench/get_user`` with a JSON body on keep-alive
  connections, from a minimal trio client (so the figure is the server's cost, not an
  HTTP library's).

Workloads: throughput with 16 calls in flight (16 HTTP connections; 16 tasks on the one
native connection) for at least a second, and sequential latency (p50/p99 of one call at
a time)::

    .venv/bin/python benchmarks/gateway_bench.py            # 3 runs
    .venv/bin/python benchmarks/gateway_bench.py --runs 5 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import msgspec
import trio

from trio_micro import gateway, rpc


class GetUserRequest(msgspec.Struct):
    user_id: int


class User(msgspec.Struct):
    user_id: int
    name: str


class BenchService(rpc.Service, name="bench"):
    @rpc.unary
    async def get_user(self, req: GetUserRequest) -> User:
        return User(req.user_id, f"user {req.user_id}")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


async def _serve() -> None:
    async with (
        rpc.open_server([BenchService()], host="127.0.0.1", port=0) as server,
        rpc.open_channel(f"127.0.0.1:{server.address[1]}") as channel,
        gateway.open_gateway(channel, routes=gateway.routes_of([BenchService])) as http,
    ):
        print("PORTS", server.address[1], http[1], file=sys.stderr, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection making one call at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def call(self, user_id: int) -> bytes:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buffer = b""
        body = b'{"user_id": %d}' % user_id
        await self.stream.send_all(
            b"POST /bench/get_user HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive_some()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lower = head.lower()
        length = int(lower.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(rest) < length:
            rest += await self.stream.receive_some()
        answer, self.buffer = rest[:length], rest[length:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"gateway answered {head!r} {answer!r}")
        if b"connection: close" in lower:
            await self.stream.aclose()
            self.stream = None
        return answer


async def _throughput(calls: list[Callable[[int], Awaitable[object]]], seconds: float) -> float:
    done = 0
    deadline = trio.current_time() + seconds

    async def worker(call: Callable[[int], Awaitable[object]]) -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await call(done % 1000 + 1)
            done += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(worker, call)
    return done / (time.perf_counter() - start)


async def _latency(call: Callable[[int], Awaitable[object]], n: int) -> tuple[float, float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        await call(i + 1)
        samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    return samples[n // 2] / 1000, samples[(n * 99) // 100] / 1000


async def _measure(
    native_port: int, http_port: int, args: argparse.Namespace
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    async with rpc.open_channel(f"127.0.0.1:{native_port}") as channel:
        stub = channel.stub(BenchService)

        async def native(user_id: int) -> object:
            return await stub.get_user(GetUserRequest(user_id))

        connections = [HttpConnection(http_port) for _ in range(args.in_flight)]
        contenders = {
            "native": ([native] * args.in_flight, native),
            "gateway": ([c.call for c in connections], connections[0].call),
        }
        for calls, one in contenders.values():  # warm up
            await _throughput(calls, 0.3)
            await _latency(one, 100)
        for run in range(args.runs):
            for name, (calls, one) in contenders.items():
                rate = await _throughput(calls, args.seconds)
                p50, p99 = await _latency(one, args.latency_calls)
                for key, value in (("rate", rate), ("p50", p50), ("p99", p99)):
                    results.setdefault(f"{name}.{key}", []).append(value)
                print(
                    f"<!-- run {run + 1} {name}: {rate:,.0f}/s p50 {p50:.0f} us -->",
                    file=sys.stderr,
                )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--latency-calls", type=int, default=2000)
    args = parser.parse_args()
    if args.serve:
        _pin(0)
        trio.run(_serve)
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,  # the server's log lines
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        while not line.startswith(b"PORTS "):
            if not line:
                raise RuntimeError("the server exited before it listened")
            line = server.stderr.readline()
        native_port, http_port = map(int, line.split()[1:])
        _pin(1)
        results = trio.run(_measure, native_port, http_port, args)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    median = {key: statistics.median(values) for key, values in results.items()}
    command = " ".join([".venv/bin/python", "benchmarks/gateway_bench.py", *sys.argv[1:]])
    print(f"# gateway_bench: `{command}`\n")
    print(
        f"{os.cpu_count()} cores; server on core 0, client on core 1; medians of {args.runs} "
        f"interleaved runs; throughput: {args.in_flight} calls in flight for {args.seconds:g} s; "
        f"latency: {args.latency_calls:,} sequential calls.\n"
    )
    print("| path | calls/s | p50 us | p99 us |\n|---|---|---|---|")
    for name in ("native", "gateway"):
        print(
            f"| {name} | {median[name + '.rate']:,.0f} | {median[name + '.p50']:.0f} | "
            f"{median[name + '.p99']:.0f} |"
        )
    ratio = median["gateway.rate"] / median["native.rate"]
    print(f"\ngateway / native throughput: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
