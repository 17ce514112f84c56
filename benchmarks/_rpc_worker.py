"""Child-process side of ``rpc_bench.py``: one server or one client of one contender.

Not meant to be run by hand; ``rpc_bench.py`` starts it as::

    python benchmarks/_rpc_worker.py server CONTENDER [--cpu N] [--log-file PATH]
    python benchmarks/_rpc_worker.py client CONTENDER --port P --in-flight K --calls N ...

Server protocol with the parent: the server pins itself, starts listening on
127.0.0.1 port 0 and writes one line to its original stdout, ``READY <port>`` (or
``NA <reason>`` when the contender does not exist yet, then exits 0); everything else that
it prints to stdout (structlog's default) goes to /dev/null. It serves until its stdin
reaches EOF, then shuts down cleanly and exits 0. A parent that dies closes the pipe, so
servers never outlive it.

Client protocol: the client pins itself, opens ONE connection, makes ``--warmup`` calls at
the same concurrency, then the measured ``--calls`` (repeated until ``--min-seconds`` have
passed), and prints one JSON object as its last stdout line: ``{"calls", "seconds",
"rate"}``, plus ``{"p50_us", "p99_us", "mean_us"}`` when ``--in-flight`` is 1 (sequential
latency, each call timed).

Every contender answers the same messages from memory: msgpack (msgspec) ``GetUserRequest``
-> ``User``.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

# --- the messages, shared by every contender -------------------------------------------


class GetUserRequest(msgspec.Struct):
    user_id: int


class User(msgspec.Struct):
    user_id: int
    name: str
    source: str


_NAMES = ("Ada", "Grace", "Barbara", "Frances", "Radia", "Edsger", "Donald", "Niklaus")
USERS = {
    i: User(user_id=i, name=f"{_NAMES[i % len(_NAMES)]} #{i}", source="memory") for i in range(1000)
}


def lookup_user(user_id: int) -> User:
    user = USERS.get(user_id)
    if user is None:
        return User(user_id=user_id, name="unknown", source="memory")
    return user


def _request(n: int) -> GetUserRequest:
    return GetUserRequest(user_id=n % 1000)


def _check(request: GetUserRequest, reply: User) -> None:
    if reply.user_id != request.user_id:
        raise AssertionError(f"asked for user {request.user_id}, got {reply!r}")


def _pin(cpu: int | None) -> None:
    # Before any library starts a thread: threads inherit the affinity of their creator.
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


_to_parent: Any = None  # the server's report line goes here: the original stdout


def _take_stdout() -> None:
    """Keep the pipe to the parent for the report line only; stdout goes to /dev/null.

    Libraries may log to stdout (structlog does by default); that must neither come
    before the report line nor fill a pipe that the parent stops reading.
    """
    global _to_parent  # one per process
    _to_parent = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _tell_parent(line: str) -> None:
    _to_parent.write(line + "\n")
    _to_parent.close()


def _ready(port: int) -> None:
    _tell_parent(f"READY {port}")


def _not_available(reason: str) -> None:
    _tell_parent(f"NA {reason}")


def _report(result: dict[str, float]) -> None:
    print(json.dumps(result), flush=True)


def _latency_summary(samples_ns: list[int]) -> dict[str, float]:
    samples_ns.sort()
    n = len(samples_ns)
    return {
        "p50_us": samples_ns[n // 2] / 1000,
        "p99_us": samples_ns[min(n - 1, (n * 99) // 100)] / 1000,
        "mean_us": sum(samples_ns) / n / 1000,
    }


# --- the shared client driver, and how it runs workers under trio or asyncio ----------

RunWorkers = Callable[[Callable[[], Awaitable[None]], int], Awaitable[None]]


async def _run_trio_workers(worker: Callable[[], Awaitable[None]], count: int) -> None:
    """Run ``count`` copies of ``worker`` in a trio nursery and wait for all of them."""
    import trio

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(worker)


async def _run_asyncio_workers(worker: Callable[[], Awaitable[None]], count: int) -> None:
    """Run ``count`` copies of ``worker`` with ``asyncio.gather`` and wait for all of them."""
    import asyncio

    await asyncio.gather(*(worker() for _ in range(count)))


async def _drive(
    call: Callable[[GetUserRequest], Awaitable[User]],
    run_workers: RunWorkers,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Warm up, then measure ``call``: sequential latency or throughput (module docs).

    ``run_workers`` is :func:`_run_trio_workers` or :func:`_run_asyncio_workers`, for
    the event loop ``call`` belongs to; ``args`` gives ``in_flight``, ``calls``,
    ``warmup`` and ``min_seconds``.
    """
    in_flight: int = args.in_flight
    calls: int = args.calls
    warmup: int = args.warmup
    min_seconds: float = args.min_seconds

    async def burst(total: int) -> None:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                request = _request(remaining)
                _check(request, await call(request))

        await run_workers(worker, min(in_flight, total))

    await burst(warmup)
    if in_flight == 1:
        samples: list[int] = []
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for i in range(calls):
            request = _request(i)
            t0 = clock()
            reply = await call(request)
            samples.append(clock() - t0)
            _check(request, reply)
        seconds = time.perf_counter() - start
        return {"calls": calls, "seconds": seconds, "rate": calls / seconds} | _latency_summary(
            samples
        )
    done, start = 0, time.perf_counter()
    while True:  # at least `calls`, and at least `min_seconds` so fast peers aren't noise
        await burst(calls)
        done += calls
        seconds = time.perf_counter() - start
        if seconds >= min_seconds:
            return {"calls": done, "seconds": seconds, "rate": done / seconds}


async def _trio_wait_for_stdin_eof() -> None:
    import trio

    await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


# --- grpcio (grpc.aio), generic handler, no protoc ---------------------------------------

_GRPC_SERVICE = "bench.Bench"
_GRPC_METHOD = f"/{_GRPC_SERVICE}/GetUser"


def grpcio_server(args: argparse.Namespace) -> None:
    import asyncio

    import grpc  # type: ignore[import-untyped]

    async def get_user(request: GetUserRequest, context: Any) -> User:
        return lookup_user(request.user_id)

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            _GRPC_SERVICE,
            {
                "GetUser": grpc.unary_unary_rpc_method_handler(
                    get_user,
                    request_deserializer=msgspec.msgpack.Decoder(GetUserRequest).decode,
                    response_serializer=msgspec.msgpack.Encoder().encode,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        _ready(port)
        await asyncio.to_thread(sys.stdin.buffer.read)
        await server.stop(grace=1.0)

    asyncio.run(main())


def grpcio_client(args: argparse.Namespace) -> dict[str, float]:
    import asyncio

    import grpc

    async def main() -> dict[str, float]:
        # One channel to one address: one subchannel, one HTTP/2 connection.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            await channel.channel_ready()
            call = channel.unary_unary(
                _GRPC_METHOD,
                request_serializer=msgspec.msgpack.Encoder().encode,
                response_deserializer=msgspec.msgpack.Decoder(User).decode,
            )
            return await _drive(call, _run_asyncio_workers, args)

    return asyncio.run(main())


# --- raw trio echo: u32 length-prefixed msgpack frames, ids inside ----------------------
# The practical ceiling: no protocol beyond framing, the server answers inline in its
# connection task (no task per call), and both sides batch every write they can.


class RawCall(msgspec.Struct, array_like=True):
    id: int
    body: GetUserRequest


class RawReply(msgspec.Struct, array_like=True):
    id: int
    body: User


_RAW_ENCODER = msgspec.msgpack.Encoder()


def _append_frame(out: bytearray, message: Any) -> None:
    start = len(out)
    out += b"\0\0\0\0"
    _RAW_ENCODER.encode_into(message, out, -1)
    out[start : start + 4] = (len(out) - start - 4).to_bytes(4, "big")


def _split_frames(buffer: bytearray, decoder: msgspec.msgpack.Decoder[Any]) -> list[Any]:
    """Decode every complete frame at the front of ``buffer`` and remove them from it."""
    messages = []
    pos, size = 0, len(buffer)
    with memoryview(buffer) as view:
        while size - pos >= 4:
            end = pos + 4 + int.from_bytes(view[pos : pos + 4], "big")
            if end > size:
                break
            messages.append(decoder.decode(view[pos + 4 : end]))
            pos = end
    del buffer[:pos]
    return messages


def raw_server(args: argparse.Namespace) -> None:
    import trio

    decoder = msgspec.msgpack.Decoder(RawCall)

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while data := await stream.receive_some(65536):
            buffer += data
            out = bytearray()
            for call in _split_frames(buffer, decoder):
                _append_frame(out, RawReply(call.id, lookup_user(call.body.user_id)))
            if out:
                await stream.send_all(out)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
            (listener,) = await nursery.start(serve)
            _ready(listener.socket.getsockname()[1])
            await _trio_wait_for_stdin_eof()
            nursery.cancel_scope.cancel()

    trio.run(main)


def raw_client(args: argparse.Namespace) -> dict[str, float]:
    import outcome
    import trio

    async def main() -> dict[str, float]:
        stream = await trio.open_tcp_stream("127.0.0.1", args.port)
        decoder = msgspec.msgpack.Decoder(RawReply)
        waiters: dict[int, trio.lowlevel.Task] = {}
        pending = bytearray()
        writer_lot = trio.lowlevel.ParkingLot()
        next_id = 0

        async def writer() -> None:
            nonlocal pending
            while True:
                if not pending:
                    await writer_lot.park()
                    continue
                data, pending = pending, bytearray()
                await stream.send_all(data)

        async def reader() -> None:
            buffer = bytearray()
            while data := await stream.receive_some(65536):
                buffer += data
                for reply in _split_frames(buffer, decoder):
                    trio.lowlevel.reschedule(waiters.pop(reply.id), outcome.Value(reply.body))
            raise trio.BrokenResourceError("server closed the connection")

        async def call(request: GetUserRequest) -> User:
            nonlocal next_id
            call_id = next_id = next_id + 1
            _append_frame(pending, RawCall(call_id, request))
            writer_lot.unpark()
            waiters[call_id] = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                waiters.pop(call_id, None)
                return trio.lowlevel.Abort.SUCCEEDED

            reply: User = await trio.lowlevel.wait_task_rescheduled(abort)
            return reply

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
            result = await _drive(call, _run_trio_workers, args)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


# --- trio_micro.rpc ----------------------------------------------------------------------
# Written against the API of issue #3. Adjust here (only) if the landed API differs.


def _bench_service() -> type[Any]:
    from trio_micro import rpc

    class BenchService(rpc.Service, name="bench"):
        @rpc.unary
        async def get_user(self, req: GetUserRequest) -> User:
            return lookup_user(req.user_id)

    return BenchService


def _keyword(fn: Callable[..., Any], candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` that ``fn`` accepts as a keyword, if any."""
    parameters = inspect.signature(fn).parameters
    return next((name for name in candidates if name in parameters), None)


# Where the access-log interceptor may live (issue #3 names it "maybe rpc.AccessLogInterceptor").
_ACCESS_LOG_NAMES = (
    ("trio_micro.rpc", "AccessLogInterceptor"),
    ("trio_micro.rpc", "AccessLog"),
    ("trio_micro.observe", "AccessLogInterceptor"),
)


def _access_log_interceptor() -> Callable[[], Any] | None:
    import importlib

    for module, name in _ACCESS_LOG_NAMES:
        found = getattr(importlib.import_module(module), name, None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def trio_micro_server(args: argparse.Namespace) -> None:
    import importlib.util

    import trio

    if importlib.util.find_spec("trio_micro.rpc") is None:
        _not_available("trio_micro.rpc not implemented yet")
        return
    from trio_micro import rpc

    options: dict[str, Any] = {}
    if args.log_file:
        interceptor = _access_log_interceptor()
        serve = getattr(rpc, "serve", None)  # open_server takes serve's options as **options
        keyword = _keyword(serve, ("interceptors",)) if serve else None
        if interceptor is None or keyword is None:
            _not_available("not implemented")
            return
        from trio_micro import observe

        # What a production service would do: loggers keep their configuration.
        observe.configure_logging(
            format="json",
            file=args.log_file,
            cache_logger_on_first_use=True,
            flush_interval=args.log_flush_interval,
        )
        options[keyword] = [interceptor()]
    if args.rate_limit:
        # A limit no caller reaches: what the interceptor costs per admitted call.
        limiter = rpc.RateLimitInterceptor(1e9, burst=1_000_000)
        options["interceptors"] = [limiter, *options.get("interceptors", [])]
    if args.otel:
        from trio_micro import otel

        tracing = _otel_providers(args.otel)
        options["interceptors"] = [
            *options.get("interceptors", []),
            otel.OtelServerInterceptor(**tracing),
        ]
    service = _bench_service()

    async def main() -> None:
        async with rpc.open_server([service()], host="127.0.0.1", port=0, **options) as server:
            _ready(server.address[1])
            await _trio_wait_for_stdin_eof()

    if args.profile:
        from pyinstrument import Profiler

        # What /debug/profile runs: the whole thread sampled every millisecond.
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        try:
            trio.run(main)
        finally:
            profiler.stop()
    else:
        trio.run(main)


def _otel_providers(mode: str) -> dict[str, Any]:
    """The tracer and meter providers of the OTel contenders: the SDK's, or none (API)."""
    if mode == "api":
        return {}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


def trio_micro_client(args: argparse.Namespace) -> dict[str, float]:
    import trio

    from trio_micro import rpc

    service = _bench_service()
    options: dict[str, Any] = {}
    keyword = _keyword(rpc.open_channel, ("pool_size", "connections", "max_connections"))
    if keyword is not None:
        options[keyword] = 1  # one connection, like the peers

    if args.otel:
        from trio_micro import otel

        options["interceptors"] = [otel.OtelClientInterceptor(**_otel_providers(args.otel))]

    async def main() -> dict[str, float]:
        async with rpc.open_channel(f"127.0.0.1:{args.port}", **options) as channel:
            stub = channel.stub(service)
            return await _drive(stub.get_user, _run_trio_workers, args)

    return trio.run(main)


# --- trio_micro.aio: the asyncio client, against the trio_micro server above ---------------


def _aio_client(args: argparse.Namespace, *, use_uvloop: bool) -> dict[str, float]:
    import asyncio

    from trio_micro import aio

    service = _bench_service()

    async def main() -> dict[str, float]:
        async with aio.open_channel(f"127.0.0.1:{args.port}") as channel:
            stub = channel.stub(service)
            return await _drive(stub.get_user, _run_asyncio_workers, args)

    if not use_uvloop:
        return asyncio.run(main())
    import uvloop

    return uvloop.run(main())


def trio_micro_aio_client(args: argparse.Namespace) -> dict[str, float]:
    return _aio_client(args, use_uvloop=False)


def trio_micro_uvloop_client(args: argparse.Namespace) -> dict[str, float]:
    return _aio_client(args, use_uvloop=True)


# --- entry point -------------------------------------------------------------------------

SERVERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "grpcio": grpcio_server,
    "raw": raw_server,
    "trio_micro": trio_micro_server,
    # the asyncio clients call the same trio_micro server
    "trio_micro_aio": trio_micro_server,
    "trio_micro_uvloop": trio_micro_server,
}
CLIENTS: dict[str, Callable[[argparse.Namespace], dict[str, float]]] = {
    "grpcio": grpcio_client,
    "raw": raw_client,
    "trio_micro": trio_micro_client,
    "trio_micro_aio": trio_micro_aio_client,
    "trio_micro_uvloop": trio_micro_uvloop_client,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one side of one rpc_bench contender")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("contender", choices=sorted(SERVERS))
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--log-file", default=None, help="server: access log to this file")
    parser.add_argument(
        "--log-flush-interval",
        type=float,
        default=None,
        help="server: buffer the access log, flushed this often (seconds)",
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="server (trio_micro): add rpc.RateLimitInterceptor, keyed by peer, never reached",
    )
    parser.add_argument(
        "--otel",
        choices=("sdk", "api"),
        default=None,
        help="trio_micro: add the OTel interceptor, with the SDK or with the API alone",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="server (trio_micro): run pyinstrument (as /debug/profile does) all along",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument(
        "--min-seconds", type=float, default=0.0, help="throughput: repeat the calls until then"
    )
    args = parser.parse_args(argv)
    _pin(args.cpu)
    if args.role == "server":
        _take_stdout()
        SERVERS[args.contender](args)
    else:
        _report(CLIENTS[args.contender](args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
