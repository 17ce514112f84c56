"""Client-streaming, server-streaming and bidi ping-pong: trio_micro.rpc against grpcio-aio (#16).

Run::

    .venv/bin/python benchmarks/streams_bench.py                 # 5 interleaved runs
    .venv/bin/python benchmarks/streams_bench.py --runs 3 --messages 100000 --memory-seconds 10

Each contender's server runs in a subprocess of its own (this script with ``--serve``);
the client runs here. Workloads, one connection, the same msgspec payloads everywhere
(``Num(n)``, a few bytes):

* ``upload``: a client-stream of ``--messages`` messages, one summary back (messages/s);
* ``download``: trio_micro's existing server-stream of as many messages, in the same run;
* ``pingpong``: ``--round-trips`` request/answer pairs on one bidi stream (round trips/s);
* ``memory``: a trio_micro client sends as fast as the server's credit lets it to a handler
  that never reads, for ``--memory-seconds``; the server's RSS is sampled at the start and
  the end (flow control holds: it stays flat).

Runs are interleaved (trio_micro, grpcio, trio_micro, ...) and the table shows medians and
the ratios of medians. grpcio is in the ``bench`` dependency group.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trio_micro import rpc  # noqa: E402  (after the path fix-up)


class Num(msgspec.Struct):
    n: int


class Total(msgspec.Struct):
    total: int
    count: int


_encode = msgspec.msgpack.Encoder().encode
_decode_num = msgspec.msgpack.Decoder(Num).decode
_decode_total = msgspec.msgpack.Decoder(Total).decode


class Bench(rpc.Service, name="bench"):
    @rpc.client_stream
    async def upload(self, requests: rpc.RequestStream[Num]) -> Total:
        total = count = 0
        async for item in requests:
            total += item.n
            count += 1
        return Total(total, count)

    @rpc.server_stream
    async def download(self, req: Num) -> AsyncIterator[Num]:
        for n in range(req.n):
            yield Num(n)

    @rpc.bidi_stream
    async def echo(
        self, requests: rpc.RequestStream[Num], responses: rpc.ResponseSender[Num]
    ) -> None:
        async for item in requests:
            await responses.send(item)

    @rpc.client_stream
    async def sink(self, requests: rpc.RequestStream[Num]) -> Total:
        import trio

        await trio.sleep_forever()
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- servers


def serve_trio() -> None:
    import trio

    async def main() -> None:
        async with rpc.open_server([Bench()], host="127.0.0.1", port=0) as server:
            print(f"PORT {server.address[1]}", flush=True)
            await trio.sleep_forever()

    trio.run(main)


def serve_grpc() -> None:
    import asyncio

    import grpc

    async def upload(requests: AsyncIterator[bytes], context: object) -> bytes:
        total = count = 0
        async for payload in requests:
            total += _decode_num(payload).n
            count += 1
        return _encode(Total(total, count))

    async def echo(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for payload in requests:
            yield _encode(_decode_num(payload))

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench",
            {
                "upload": grpc.stream_unary_rpc_method_handler(upload),
                "echo": grpc.stream_stream_rpc_method_handler(echo),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"PORT {port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


# ---------------------------------------------------------------------------- clients


def trio_client(port: int, workload: str, messages: int, round_trips: int) -> float:
    """Run one workload against the trio_micro server; return items (or round trips) per s."""
    import trio

    async def main() -> float:
        async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
            bench = channel.stub(Bench)
            start = trio.current_time()
            if workload == "upload":
                async with bench.upload() as (send, receive):
                    for n in range(messages):
                        await send.send(Num(n))
                    await send.aclose()
                    total = await receive.receive()
                assert total.count == messages
                count = messages
            elif workload == "download":
                count = 0
                async for _ in bench.download(Num(messages)):
                    count += 1
                assert count == messages
            else:
                async with bench.echo() as (send2, receive2):
                    for n in range(round_trips):
                        await send2.send(Num(n))
                        await receive2.receive()
                    await send2.aclose()
                count = round_trips
            return count / (trio.current_time() - start)

    return trio.run(main)


def grpc_client(port: int, workload: str, messages: int, round_trips: int) -> float:
    import asyncio

    import grpc

    async def main() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            start = time.perf_counter()
            if workload == "upload":
                method = channel.stream_unary("/bench/upload")

                async def requests() -> AsyncIterator[bytes]:
                    for n in range(messages):
                        yield _encode(Num(n))

                total = _decode_total(await method(requests()))
                assert total.count == messages
                count = messages
            else:
                call = channel.stream_stream("/bench/echo")()
                for n in range(round_trips):
                    await call.write(_encode(Num(n)))
                    _decode_num(await call.read())
                await call.done_writing()
                count = round_trips
            return count / (time.perf_counter() - start)

    return asyncio.run(main())


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory(port: int, pid: int, seconds: float) -> tuple[int, int, int]:
    """Flood a handler that never reads for ``seconds``; return (server RSS KiB at start,
    at the end, messages the client got to send)."""
    import trio

    async def main() -> tuple[int, int, int]:
        sent = 0
        async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
            before = _rss_kib(pid)
            with trio.move_on_after(seconds):
                async with channel.stub(Bench).sink() as (send, _):
                    while True:
                        await send.send(Num(sent))
                        sent += 1
            return before, _rss_kib(pid), sent

    return trio.run(main)


# ---------------------------------------------------------------------------- driver


def _start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, bufsize=0
    )
    assert proc.stdout is not None
    while not (line := proc.stdout.readline()).startswith(b"PORT "):  # after any log lines
        if not line:
            raise RuntimeError(f"the {kind} server did not start")
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)  # keep it drained
    return proc, int(line.split()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["trio", "grpc"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=5_000)
    parser.add_argument("--memory-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.serve == "trio":
        serve_trio()
        return 0
    if args.serve == "grpc":
        serve_grpc()
        return 0
    trio_proc, trio_port = _start("trio")
    grpc_proc, grpc_port = _start("grpc")
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):  # interleaved
            for key, run in (
                ("trio_micro upload", lambda: trio_client(trio_port, "upload", args.messages, 0)),
                (
                    "trio_micro download",
                    lambda: trio_client(trio_port, "download", args.messages, 0),
                ),
                ("grpcio-aio upload", lambda: grpc_client(grpc_port, "upload", args.messages, 0)),
                (
                    "trio_micro pingpong",
                    lambda: trio_client(trio_port, "pingpong", 0, args.round_trips),
                ),
                (
                    "grpcio-aio pingpong",
                    lambda: grpc_client(grpc_port, "pingpong", 0, args.round_trips),
                ),
            ):
                results.setdefault(key, []).append(run())
        before, after, sent = memory(trio_port, trio_proc.pid, args.memory_seconds)
    finally:
        _stop(trio_proc)
        _stop(grpc_proc)
    med = {key: statistics.median(values) for key, values in results.items()}
    print(
        f"load: {os.cpu_count()} CPUs, loadavg {os.getloadavg()[0]:.2f}; runs={args.runs}, "
        f"messages={args.messages}, round_trips={args.round_trips}"
    )
    print("| workload | median /s | min..max |")
    print("|---|---|---|")
    for key, values in results.items():
        print(f"| {key} | {med[key]:,.0f} | {min(values):,.0f}..{max(values):,.0f} |")
    print()
    for label, over, under, target in (
        ("upload vs trio_micro download", "trio_micro upload", "trio_micro download", ">= 0.8x"),
        ("upload vs grpcio-aio upload", "trio_micro upload", "grpcio-aio upload", ">= 5x"),
        ("pingpong vs grpcio-aio", "trio_micro pingpong", "grpcio-aio pingpong", "none"),
    ):
        print(f"{label}: {med[over] / med[under]:.2f}x (target {target})")
    print(
        f"memory: non-reading handler, {args.memory_seconds:.0f} s of flooding: server RSS "
        f"{before / 1024:.1f} MiB -> {after / 1024:.1f} MiB; the client got to send {sent} "
        "messages (the server's credit)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
