"""Throughput of the sans-io protocol layer alone (no sockets, no trio).

An orientation figure for the RPC layer: how many unary calls per second the codec and
the connection state machine allow before any I/O cost::

    .venv/bin/python benchmarks/protocol_bench.py

Each figure is the median of 5 runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import msgspec

from trio_micro.protocol import (
    Connection,
    FrameDecoder,
    FrameEncoder,
    Item,
    Request,
    Response,
    Role,
)

METHOD = "users.UserService/GetUser"
REQUEST_PAYLOAD = msgspec.msgpack.encode({"user_id": 12345})
RESPONSE_PAYLOAD = msgspec.msgpack.encode({"user_id": 12345, "name": "Ada", "source": "cache"})
METADATA = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def _median_rate(fn: Callable[[int], None], n: int, runs: int = 5) -> float:
    fn(min(n, 1000))  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def codec_pairs(n: int) -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    for i in range(1, n + 1):
        decoder.receive_data(encoder.encode(Request(i, METHOD, REQUEST_PAYLOAD, 200, METADATA)))
        decoder.receive_data(encoder.encode(Response(i, RESPONSE_PAYLOAD)))


def connection_calls(n: int) -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.initiate())
    client.receive_data(server.initiate())
    for _ in range(n):
        data = client.send_request(
            client.next_stream_id, METHOD, REQUEST_PAYLOAD, timeout_ms=200, metadata=METADATA
        )
        (request,) = server.receive_data(data)
        (_response,) = client.receive_data(server.send_response(request.id, RESPONSE_PAYLOAD))


def connection_pipelined(n: int, in_flight: int = 500) -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.initiate())
    client.receive_data(server.initiate())
    for _ in range(n // in_flight):
        out = b"".join(
            client.send_request(
                client.next_stream_id, METHOD, REQUEST_PAYLOAD, timeout_ms=200, metadata=METADATA
            )
            for _ in range(in_flight)
        )
        back = b"".join(
            server.send_response(event.id, RESPONSE_PAYLOAD) for event in server.receive_data(out)
        )
        if len(client.receive_data(back)) != in_flight:
            raise AssertionError("lost responses")


def large_items(n: int) -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    body = b"x" * (1 << 20)
    for i in range(1, n + 1):
        data = encoder.encode(Item(i, body))
        for offset in range(0, len(data), 1 << 16):
            decoder.receive_data(data[offset : offset + (1 << 16)])


def main() -> None:
    rows = [
        ("codec: encode+decode a REQUEST and its RESPONSE", codec_pairs, 100_000, "pairs/s"),
        (
            "connection: one unary call through both state machines",
            connection_calls,
            50_000,
            "calls/s",
        ),
        (
            "connection: unary calls, 500 in flight, batched bytes",
            connection_pipelined,
            100_000,
            "calls/s",
        ),
        ("codec: 1 MiB ITEM fed in 64 KiB chunks", large_items, 200, "frames/s"),
    ]
    print("| measurement | rate (median of 5) |\n|---|---|")
    for title, fn, n, unit in rows:
        print(f"| {title} | {_median_rate(fn, n):,.0f} {unit} |", flush=True)


if __name__ == "__main__":
    main()
