"""Compression (#16 step 5): bytes on the wire and calls/s with and without, and the threshold.

Run::

    .venv/bin/python benchmarks/compression_bench.py              # 5 interleaved runs
    .venv/bin/python benchmarks/compression_bench.py --threshold  # where zlib starts to pay

The default mode serves the example user service (``examples/user_service``, a SQLite
database of 1,000 seeded users in a temporary directory) and a channel in one process, and
measures two shapes of a 1,000-user page, each with ``compression="none"``, ``"zlib"`` and
``"zstd"`` (when the extra is installed; the channel's option, whose hint makes the server
compress its answers too):

* ``ListUsers``: the service's own server-stream, ``page_size=1000, limit=1000``: 1,000
  ITEMs of one ``User`` each (about 70 bytes: under the 1 KiB threshold, so sent as they
  are -- per-message compression can't help small messages);
* ``ListUsers/t0``: the same stream from a channel and server with
  ``compression_threshold=0``: every ITEM is compressed, and sent as it is when that did not
  make it smaller (a lower threshold can't help one-record items);
* ``page``: the same 1,000 users as ONE unary answer (a ``Page`` with a ``list[User]``,
  ~70 KB), from a bench-local service reading the same database;
* ``pages``: the same 1,000 users as a server-stream of ``PAGE`` users per ITEM (a stream
  of pages: each ITEM is over the threshold).

Bytes on the wire come from one call per mode through a counting TCP proxy (both
directions, frames and preface included); calls/s from ``--seconds`` of back-to-back calls
without the proxy. Modes are interleaved within each run; the table shows medians.

``--threshold`` encodes slices of the same users with msgpack (the payload sizes of a
page of N users) and prints, per size, zlib's ratio and the CPU time of compress +
decompress at levels 1 and 6, and the break-even link speed: how slow a link has to be for
the bytes saved to take longer to send than the CPU time spent.

``--sansio-cost TREE...`` counts, with valgrind, the instructions of one uncompressed
REQUEST/RESPONSE round trip between two sans-io ``Connection`` objects (no I/O) for each
source tree (e.g. ``git archive`` snapshots of main and of a branch): what compression
costs the uncompressed hot path of the protocol layer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
import zlib
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import msgspec
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.user_service.database import UserDatabase  # noqa: E402
from examples.user_service.service import ListUsersRequest, User, UserService  # noqa: E402
from trio_micro import observe, rpc, testing  # noqa: E402
from trio_micro.protocol import DEFAULT_COMPRESSION_THRESHOLD, SUPPORTED_COMPRESSION  # noqa: E402

USERS = 1000
PAGE = 100  # users per ITEM of the `pages` stream: ~7 KB each


class PageRequest(msgspec.Struct):
    size: int


class Page(msgspec.Struct):
    users: list[User]


class Pages(rpc.Service, name="pages"):
    """One unary answer holding a whole page of users."""

    def __init__(self, db: UserDatabase) -> None:
        self.db = db

    @rpc.unary
    async def page(self, req: PageRequest) -> Page:
        rows = await self.db.list_users(after_id=0, limit=req.size)
        return Page([User(r.user_id, r.name, r.email, "database") for r in rows])

    @rpc.server_stream
    async def pages(self, req: PageRequest) -> AsyncIterator[Page]:
        """The first ``USERS`` users, ``req.size`` per ITEM."""
        rows = await self.db.list_users(after_id=0, limit=USERS)
        for at in range(0, len(rows), req.size):
            yield Page(
                [User(r.user_id, r.name, r.email, "database") for r in rows[at : at + req.size]]
            )


async def one_call(channel: rpc.Channel, shape: str) -> int:
    """Make one call of ``shape``; return the users it brought."""
    if shape.startswith("ListUsers"):
        users = channel.stub(UserService)
        req = ListUsersRequest(page_size=USERS, limit=USERS)
        return len([u async for u in users.list_users(req)])
    if shape == "pages":
        return sum([len(p.users) async for p in channel.stub(Pages).pages(PageRequest(PAGE))])
    return len((await channel.stub(Pages).page(PageRequest(USERS))).users)


def threshold(shape: str) -> int:
    return 0 if shape.endswith("/t0") else DEFAULT_COMPRESSION_THRESHOLD


async def measure(port: int, shape: str, compression: str, seconds: float) -> tuple[int, float]:
    """Bytes on the wire for one call, and calls/s over ``seconds``."""
    options = {"compression": compression, "compression_threshold": threshold(shape)}
    async with testing.open_proxy(("127.0.0.1", port)) as counter:
        proxied = counter.address[1]
        async with rpc.open_channel(f"127.0.0.1:{proxied}", **options) as ch:  # type: ignore[arg-type]
            assert await one_call(ch, shape) == USERS
        wire = counter.bytes_up + counter.bytes_down
    async with rpc.open_channel(f"127.0.0.1:{port}", **options) as ch:  # type: ignore[arg-type]
        await one_call(ch, shape)  # connected and warm
        calls = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await one_call(ch, shape)
            calls += 1
        rate = calls / (time.perf_counter() - start)
    return wire, rate


async def run_all(runs: int, seconds: float) -> dict[tuple[str, str], list[tuple[int, float]]]:
    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "users.db")
        async with UserDatabase(db_path) as db:
            await db.seed(USERS)
        async with (
            UserService.open(db=db_path) as users,
            UserDatabase(db_path) as db,
            rpc.open_server([users, Pages(db)], host="127.0.0.1", port=0) as server,
            rpc.open_server(
                [users, Pages(db)], host="127.0.0.1", port=0, compression_threshold=0
            ) as server_t0,
        ):
            for run in range(runs):
                for shape in ("ListUsers", "ListUsers/t0", "page", "pages"):
                    port = (server_t0 if shape.endswith("/t0") else server).address[1]
                    for compression in ("none", *reversed(SUPPORTED_COMPRESSION)):
                        wire, rate = await measure(port, shape, compression, seconds)
                        results.setdefault((shape, compression), []).append((wire, rate))
                        print(
                            f"# run {run + 1} {shape} {compression}: {wire:,} bytes, "
                            f"{rate:,.1f} calls/s",
                            flush=True,
                        )
    return results


def report(results: dict[tuple[str, str], list[tuple[int, float]]]) -> None:
    print("\n| call | compression | bytes on the wire (one call) | calls/s (median) | runs |")
    print("|---|---|---|---|---|")
    for (shape, compression), samples in results.items():
        wire = statistics.median(w for w, _ in samples)
        rate = statistics.median(r for _, r in samples)
        base = results[(shape, "none")]
        base_wire = statistics.median(w for w, _ in base)
        base_rate = statistics.median(r for _, r in base)
        extra = "" if compression == "none" else f" ({wire / base_wire:.2f}x)"
        print(
            f"| {shape} | {compression} | {wire:,.0f}{extra} | {rate:,.1f} "
            f"({rate / base_rate:.2f}x) | {len(samples)} |"
        )


def _round_trip(payload: bytes, level: int) -> bytes:
    return zlib.decompress(zlib.compress(payload, level))


def threshold_table() -> None:
    """Ratio and CPU cost of zlib per payload size, on msgpack-encoded users."""
    users = [
        User(i, f"User Number {i}", f"user{i}@example.com", "database") for i in range(1, 2001)
    ]
    encode = msgspec.msgpack.encode
    print(
        "| payload bytes | users | level | compressed | ratio | µs (both ways) | break-even link |"
    )
    print("|---|---|---|---|---|---|---|")
    for count in (1, 2, 4, 8, 16, 32, 64, 256, 1000):
        payload = encode(users[:count]) if count > 1 else encode(users[0])
        for level in (1, 6):
            packed = zlib.compress(payload, level)
            number = max(1, 20000 // max(1, len(payload) // 64))
            both_ways = partial(_round_trip, payload, level)
            spent = min(timeit.repeat(both_ways, number=number, repeat=5)) / number
            saved = len(payload) - len(packed)
            link = f"{saved * 8 / spent / 1e6:,.0f} Mbit/s" if saved > 0 else "never"
            print(
                f"| {len(payload):,} | {count} | {level} | {len(packed):,} | "
                f"{len(packed) / len(payload):.2f} | {spent * 1e6:.1f} | {link} |"
            )


SANSIO_CHILD = """
import sys
from trio_micro.protocol import Connection, Role
c, s = Connection(Role.CLIENT), Connection(Role.SERVER)
s.receive_data(c.initiate())
c.receive_data(s.initiate())
payload = b"\\x82\\xa7user_id\\x01\\xa4name\\xa3Ada"
for _ in range(int(sys.argv[2])):  # argv[1]: the mode rpc_cost.instructions passes
    sid = c.next_stream_id
    (req,) = s.receive_data(c.send_request(sid, "users/get_user", payload, timeout_ms=1000))
    c.receive_data(s.send_response(sid, req.payload))
"""


def sansio_cost(trees: list[Path]) -> None:
    """Instructions per sans-io round trip for each tree (valgrind; 2,000 vs 12,000)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rpc_cost import instructions  # the same valgrind run as rpc_cost.py

    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "sansio.py"
        child.write_text(SANSIO_CHILD)
        for tree in trees:
            small = instructions(tree, "sansio", 2_000, child)
            per = (instructions(tree, "sansio", 12_000, child) - small) / 10_000
            print(f"| {tree} | {per:,.0f} instructions per sans-io round trip |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode and run")
    parser.add_argument("--threshold", action="store_true", help="print the threshold table")
    parser.add_argument("--sansio-cost", nargs="+", type=Path, metavar="TREE", default=None)
    args = parser.parse_args()
    if args.sansio_cost:
        sansio_cost(args.sansio_cost)
        return 0
    print(f"# load average: {os.getloadavg()}", flush=True)
    observe.configure_logging(level="warning")
    if args.threshold:
        threshold_table()
    else:
        report(trio.run(run_all, args.runs, args.seconds))
    print(f"# load average: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
