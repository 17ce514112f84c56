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
* ``pingpong`` also runs on a bare trio socket (``raw-trio``: the client sends a
  5-byte message with ``send_all`` and waits for it in ``receive_some``; the server echoes
  it), the floor under any RPC on trio: what a round trip costs in trio's I/O alone;
* ``memory``: a trio_micro client sends as fast as the server's credit lets it to a handler
  that never reads, for ``--memory-seconds``; the server's RSS is sampled at the start and
  the end (flow control holds: it stays flat).

``--aio`` adds the asyncio client (``trio_micro.aio``, on asyncio's own loop and on uvloop)
as contenders of each workload against the same trio_micro server: the same
``run_workload`` code drives its stub, since its stream calls have the trio client's shape.

Runs are interleaved (trio_micro, grpcio, trio_micro, ...) and the table shows medians and
the ratios of medians. grpcio is in the ``bench`` dependency group.

``--tree DIR`` (repeatable) adds the trio_micro of another checkout (e.g. the branch point,
``git worktree add /tmp/before main``) as a contender of its own, server and client, measured
in the same interleaved runs: a before/after comparison on a busy machine. Every client runs
in a subprocess of its own too. Besides items/s the table gives the CPU time per item (or
round trip) of the client and of the server process (user + system, all threads): on a
shared machine wall-clock rates follow the other sessions' load, CPU costs much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
# The checkout whose trio_micro a server or client subprocess runs (--tree).
sys.path.insert(0, os.environ.get("STREAMS_BENCH_TREE", str(ROOT)))

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


def serve_raw_trio() -> None:
    import trio

    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
        await trio.serve_listeners(echo, listeners)

    trio.run(main)


def raw_trio_client(port: int, round_trips: int) -> tuple[float, float]:
    """Ping-pong on a bare trio socket: round trips per s and this process's CPU seconds."""
    import trio

    async def main() -> tuple[float, float]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        start = trio.current_time()
        cpu = time.process_time()
        for _ in range(round_trips):
            await stream.send_all(b"ping!")
            await stream.receive_some(65536)
        return round_trips / (trio.current_time() - start), time.process_time() - cpu

    return trio.run(main)


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


def trio_client(port: int, workload: str, messages: int, round_trips: int) -> tuple[float, float]:
    """Run one workload against the trio_micro server; return items (or round trips) per s
    and the CPU seconds this process spent on them."""
    import trio

    async def main() -> tuple[float, float]:
        async with rpc.open_channel(f"127.0.0.1:{port}") as channel:
            return await timed_workload(channel.stub(Bench), workload, messages, round_trips)

    return trio.run(main)


async def timed_workload(
    bench: Bench, workload: str, messages: int, round_trips: int
) -> tuple[float, float]:
    """``run_workload``'s items (or round trips) per s and this process's CPU seconds."""
    start = time.perf_counter()
    cpu = time.process_time()
    count = await run_workload(bench, workload, messages, round_trips)
    return count / (time.perf_counter() - start), time.process_time() - cpu


async def run_workload(bench: Bench, workload: str, messages: int, round_trips: int) -> int:
    """One workload on a trio_micro stub; return the items (or round trips) it made.
    Also what ``streams_cost.py`` runs."""
    if workload == "upload":
        async with bench.upload() as (send, receive):
            for n in range(messages):
                await send.send(Num(n))
            await send.aclose()
            total = await receive.receive()
        assert total.count == messages
        return messages
    if workload == "download":
        count = 0
        async for _ in bench.download(Num(messages)):
            count += 1
        assert count == messages
        return count
    async with bench.echo() as (send2, receive2):
        for n in range(round_trips):
            await send2.send(Num(n))
            await receive2.receive()
        await send2.aclose()
    return round_trips


def aio_client(
    port: int, workload: str, messages: int, round_trips: int, *, use_uvloop: bool
) -> tuple[float, float]:
    """``trio_client``'s run with the asyncio client (``trio_micro.aio``), on asyncio's loop
    or on uvloop's."""
    import asyncio

    from trio_micro import aio

    async def main() -> tuple[float, float]:
        async with aio.open_channel(f"127.0.0.1:{port}") as channel:
            return await timed_workload(channel.stub(Bench), workload, messages, round_trips)

    if use_uvloop:
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def grpc_client(port: int, workload: str, messages: int, round_trips: int) -> tuple[float, float]:
    import asyncio

    import grpc

    async def main() -> tuple[float, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            start = time.perf_counter()
            cpu = time.process_time()
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
            return count / (time.perf_counter() - start), time.process_time() - cpu

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


def _env(tree: Path | None) -> dict[str, str]:
    return {**os.environ, "STREAMS_BENCH_TREE": str(tree or ROOT)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_main(kind: str, port: int, workload: str, messages: int, round_trips: int) -> None:
    """A client subprocess: run one workload, print its rate and CPU seconds as JSON."""
    if kind == "trio":
        rate, cpu = trio_client(port, workload, messages, round_trips)
    elif kind == "raw-trio":
        rate, cpu = raw_trio_client(port, round_trips)
    elif kind in ("aio", "aio-uvloop"):
        rate, cpu = aio_client(
            port, workload, messages, round_trips, use_uvloop=kind == "aio-uvloop"
        )
    else:
        rate, cpu = grpc_client(port, workload, messages, round_trips)
    print(json.dumps({"rate": rate, "cpu": cpu}), flush=True)


def _run_client(
    kind: str,
    tree: Path | None,
    server: subprocess.Popen[bytes],
    port: int,
    workload: str,
    args: argparse.Namespace,
) -> tuple[float, float, float]:
    """One run of a workload in a client subprocess: (items/s, client CPU µs per item,
    server CPU µs per item)."""
    n = args.round_trips if workload == "pingpong" else args.messages
    before = _cpu_seconds(server.pid)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            kind,
            str(port),
            workload,
            str(args.messages),
            str(args.round_trips),
        ],
        env=_env(tree),
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    server_cpu = _cpu_seconds(server.pid) - before
    result = json.loads(out.strip().splitlines()[-1])
    return result["rate"], result["cpu"] / n * 1e6, server_cpu / n * 1e6


def _start(kind: str, tree: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdout=subprocess.PIPE,
        bufsize=0,
        env=_env(tree),
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
    parser.add_argument("--serve", choices=["trio", "grpc", "raw-trio"])
    parser.add_argument("--client", nargs=5, metavar=("KIND", "PORT", "WORKLOAD", "N", "RT"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=5_000)
    parser.add_argument("--memory-seconds", type=float, default=10.0)
    parser.add_argument(
        "--tree", type=Path, action="append", default=[], help="another checkout to compare"
    )
    parser.add_argument(
        "--aio", action="store_true", help="add the asyncio client (trio_micro.aio) as contenders"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["upload", "download", "pingpong"],
        help="run only these workloads (and no memory check)",
    )
    args = parser.parse_args(argv)
    if args.serve == "trio":
        serve_trio()
        return 0
    if args.serve == "grpc":
        serve_grpc()
        return 0
    if args.serve == "raw-trio":
        serve_raw_trio()
        return 0
    if args.client:
        kind, port, workload, messages, round_trips = args.client
        client_main(kind, int(port), workload, int(messages), int(round_trips))
        return 0
    trees: list[tuple[str, Path | None]] = [("trio_micro", None)]
    trees += [(f"trio_micro@{tree.resolve().name}", tree.resolve()) for tree in args.tree]
    servers = {label: _start("trio", tree) for label, tree in trees}
    grpc_server = _start("grpc")
    raw_server = _start("raw-trio")
    contenders: list[tuple[str, str, Path | None, tuple[subprocess.Popen[bytes], int], str]] = []
    for workload in args.only or ("upload", "download", "pingpong"):
        for label, tree in trees:
            contenders.append((f"{label} {workload}", "trio", tree, servers[label], workload))
        if args.aio:
            for kind in ("aio", "aio-uvloop"):
                key = f"trio_micro.{kind} {workload}"
                contenders.append((key, kind, None, servers["trio_micro"], workload))
        if workload != "download":
            contenders.append((f"grpcio-aio {workload}", "grpc", None, grpc_server, workload))
    if "pingpong" in (args.only or ["pingpong"]):
        contenders.append(("raw-trio socket pingpong", "raw-trio", None, raw_server, "pingpong"))
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for _ in range(args.runs):  # interleaved
            for key, kind, tree, (proc, port), workload in contenders:
                results.setdefault(key, []).append(
                    _run_client(kind, tree, proc, port, workload, args)
                )
        trio_proc, trio_port = servers["trio_micro"]
        if not args.only:
            before, after, sent = memory(trio_port, trio_proc.pid, args.memory_seconds)
    finally:
        for proc, _ in [*servers.values(), grpc_server, raw_server]:
            _stop(proc)
    med = {key: statistics.median(r[0] for r in values) for key, values in results.items()}
    print(
        f"load: {os.cpu_count()} CPUs, loadavg {os.getloadavg()[0]:.2f}; runs={args.runs}, "
        f"messages={args.messages}, round_trips={args.round_trips}"
    )
    print("| workload | median /s | min..max | CPU µs/item: client | server |")
    print("|---|---|---|---|---|")
    for key, values in results.items():
        rates = [r[0] for r in values]
        client = statistics.median(r[1] for r in values)
        server = statistics.median(r[2] for r in values)
        print(
            f"| {key} | {med[key]:,.0f} | {min(rates):,.0f}..{max(rates):,.0f} "
            f"| {client:.1f} | {server:.1f} |"
        )
    print()
    for kind in ("aio", "aio-uvloop") if args.aio else ():
        for workload in ("upload", "download", "pingpong"):
            over, under = f"trio_micro.{kind} {workload}", f"trio_micro {workload}"
            if over in med and under in med:
                print(f"{kind} client vs trio client, {workload}: {med[over] / med[under]:.2f}x")
    for label, _ in trees:
        for what, over, under, target in (
            ("upload vs download", f"{label} upload", f"{label} download", ">= 0.8x"),
            ("upload vs grpcio-aio upload", f"{label} upload", "grpcio-aio upload", ">= 5x"),
            ("pingpong vs grpcio-aio", f"{label} pingpong", "grpcio-aio pingpong", "none"),
            ("pingpong vs raw-trio", f"{label} pingpong", "raw-trio socket pingpong", "none"),
        ):
            if over in med and under in med:
                print(f"{label}: {what}: {med[over] / med[under]:.2f}x (target {target})")
    if args.only:
        return 0
    print(
        f"memory: non-reading handler, {args.memory_seconds:.0f} s of flooding: server RSS "
        f"{before / 1024:.1f} MiB -> {after / 1024:.1f} MiB; the client got to send {sent} "
        "messages (the server's credit)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
