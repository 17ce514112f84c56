"""Issue #15 defect 1 measured: what hostile connections cost a real ``trio-micro serve``.

Starts ``trio-micro serve examples.user_service:UserService`` as a subprocess (a database
of 5,000 users), runs a well-behaved client against it (``get_user`` one call at a time,
plus a 10-item ``list_users`` stream every 20th call), and replays the issue's repros from
plain sockets speaking docs/protocol.md, one attack at a time:

* ``stalled``: one connection, HELLO with ``initial_stream_credit=1``, 999
  ``list_users(page_size=1000)`` REQUESTs of about 30 bytes, never read;
* ``big``: one connection, credit 0, 200 REQUESTs of 4 MiB (``list_users`` with padding,
  no deadline), never read;
* ``many``: 20 connections doing what ``stalled`` does;
* ``many-within-limits``: the same with 99 streams a connection, under ``serve``'s
  ``--max-concurrent-streams`` (100), so that the stall limits, not that one, bound it.

Each attack holds for ``--hold`` seconds, then its sockets close; RSS (``VmRSS`` of the
server process, sampled every 20 ms) is recorded before, at the peak, and ``--after``
seconds after the attacker left, with the good client's p99 and max latency during the
attack and its failed calls. ``--code DIR`` runs the server from another checkout (e.g.
``/work/main``, for the numbers before the fix) by putting ``DIR`` first on PYTHONPATH::

    .venv/bin/python benchmarks/hostile_bench.py                  # this tree
    .venv/bin/python benchmarks/hostile_bench.py --code /work/main
    .venv/bin/python benchmarks/hostile_bench.py --attacks big --hold 3

Extra ``serve`` flags go after ``--``, e.g. ``-- --stall-timeout 5``. ``--trim`` then makes
the server call glibc's ``malloc_trim(0)`` through gdb and records RSS once more: what
that gives back was free memory glibc kept, not memory still in use.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import msgspec
import trio

from examples.user_service.service import GetUserRequest, ListUsersRequest, UserService
from trio_micro import observe, rpc
from trio_micro.protocol import Connection, FrameEncoder, Request, Role, Settings

REPO = pathlib.Path(__file__).resolve().parent.parent
_encoder = FrameEncoder(max_frame_size=(1 << 32) - 1)
_LIST = "users/list_users"


class PaddedListUsers(msgspec.Struct):
    page_size: int
    pad: bytes


def malloc_trim(pid: int) -> None:
    """Make the server call glibc's ``malloc_trim(0)`` (through gdb), to tell memory
    glibc keeps for reuse from memory still in use."""
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await trio.sleep(0.02)


class GoodClient:
    def __init__(self, stub: UserService) -> None:
        self.stub = stub
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.recording = False
        self.in_flight: float | None = None  # start of a recorded call not answered yet

    def max_latency(self) -> float:
        """The longest recorded call, counting one still waiting (starved) as its wait."""
        waited = 0.0 if self.in_flight is None else time.perf_counter() - self.in_flight
        return max([waited, *self.latencies])

    async def run(self) -> None:
        n = 0
        while True:
            n += 1
            start = time.perf_counter()
            recording = self.recording  # a call started during the attack counts in full
            self.in_flight = start if recording else None
            try:
                with trio.fail_after(30):
                    if n % 20:
                        await self.stub.get_user(GetUserRequest(user_id=1 + n % 5000))
                    else:
                        async for _ in self.stub.list_users(ListUsersRequest(limit=10)):
                            pass
            except (rpc.RpcError, trio.TooSlowError) as exc:
                if recording:
                    self.failures.append(repr(exc)[:120])
            self.in_flight = None
            if recording:
                self.latencies.append(time.perf_counter() - start)
            await trio.sleep(0.005)


def _request(sid: int, payload: bytes) -> bytes:
    return _encoder.encode(Request(sid, _LIST, payload, None, {}, 1))  # type: ignore[arg-type]


async def _attacker(host: str, port: int, credit: int, frames: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(host, port)
    hello = Connection(Role.CLIENT, settings=Settings(initial_stream_credit=credit)).initiate()
    await stream.send_all(hello + frames)
    return stream


def _stalled_frames(count: int = 999) -> bytes:
    payload = msgspec.msgpack.encode(ListUsersRequest(page_size=1000))
    return b"".join(_request(sid, payload) for sid in range(1, count + 1))


async def attack(kind: str, host: str, port: int, hold: float, sent: list[int]) -> None:
    """Open the attack's connections, send, hold them ``hold`` seconds, then close.
    ``sent[0]``: the big requests sent."""
    streams: list[trio.SocketStream] = []
    try:
        with trio.move_on_after(hold):
            if kind == "stalled":
                streams.append(await _attacker(host, port, 1, _stalled_frames()))
            elif kind in ("many", "many-within-limits"):
                # within limits: 99 streams, under serve's --max-concurrent-streams
                frames = _stalled_frames(999 if kind == "many" else 99)
                for _ in range(20):
                    streams.append(await _attacker(host, port, 1, frames))
            elif kind == "big":
                pad = b"x" * ((4 << 20) - 256)
                payload = msgspec.msgpack.encode(PaddedListUsers(1000, pad))
                stream = await _attacker(host, port, 0, b"")
                streams.append(stream)
                for sid in range(1, 201):
                    await stream.send_all(_request(sid, payload))
                    sent[0] = sid
            await trio.sleep_forever()
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_attack(
    kind: str, pid: int, address: str, hold: float, after: float, trim: bool
) -> dict[str, object]:
    host, port = address.rsplit(":", 1)
    async with rpc.open_channel(address, retry=None) as channel, trio.open_nursery() as nursery:
        good = GoodClient(channel.stub(UserService))
        nursery.start_soon(good.run)
        await trio.sleep(1.0)  # warm up
        before = rss_bytes(pid)
        sampler = Sampler(pid)
        nursery.start_soon(sampler.run)
        good.recording = True
        sent = [0]
        with trio.move_on_after(hold + 30):  # hold, plus time to send
            await attack(kind, host, int(port), hold, sent)
        good.recording = False
        await trio.sleep(after)
        latencies = good.latencies
        result = {
            "attack": kind,
            "rss_before_mb": before / 2**20,
            "rss_peak_mb": sampler.peak / 2**20,
            "rss_after_mb": rss_bytes(pid) / 2**20,
            "rss_trimmed_mb": float("nan"),
            "good_calls": len(latencies),
            "good_failed": len(good.failures),
            "good_p99_ms": _percentile(latencies, 0.99) * 1000,
            "good_max_ms": good.max_latency() * 1000,
            "failures": good.failures[:3],
            "big_sent": sent[0],
        }
        nursery.cancel_scope.cancel()
    if trim:
        await trio.to_thread.run_sync(malloc_trim, pid)
        result["rss_trimmed_mb"] = rss_bytes(pid) / 2**20
    return result


def start_server(
    db: str, code: str | None, extra: Sequence[str]
) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([code, str(REPO)])
    else:
        env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "trio_micro", "serve", "examples.user_service:UserService"]
    command += ["-o", f"db={db}", "--no-access-log", "--log-level", "error", *extra]
    # python -m puts the working directory first on sys.path: run in the checkout served.
    cwd = REPO if code is None else code
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def seed_database(directory: str) -> str:
    """A user database of 5,000 users in ``directory``; return its path."""
    db = str(pathlib.Path(directory) / "users.db")
    seed = [sys.executable, "-m", "examples.user_service", "seed", "--db", db]
    subprocess.run([*seed, "--users", "5000"], check=True, cwd=REPO, capture_output=True)
    return db


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", nargs="+", default=["stalled", "big", "many"])
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--code", default=None, help="run the server from this checkout")
    parser.add_argument(
        "--trim", action="store_true", help="then call malloc_trim(0) in the server (gdb)"
    )
    parser.add_argument("serve_args", nargs="*", help="extra serve flags, after --")
    args = parser.parse_args(argv)
    observe.configure_logging(level="error")
    with tempfile.TemporaryDirectory() as tmp:
        db = seed_database(tmp)
        print(f"code: {args.code or REPO}; serve flags: {args.serve_args or 'defaults'}")
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        print(
            "| attack | RSS before MB | peak MB | after MB | after malloc_trim MB | "
            "good calls | failed | p99 ms | max ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for kind in args.attacks:
            # A fresh server per attack, so each one's RSS starts from the same place.
            proc, address = start_server(db, args.code, args.serve_args)
            try:
                r = trio.run(run_attack, kind, proc.pid, address, args.hold, args.after, args.trim)
            finally:
                proc.terminate()
                proc.wait(60)
            print(
                f"| {r['attack']} | {r['rss_before_mb']:.1f} | {r['rss_peak_mb']:.1f} | "
                f"{r['rss_after_mb']:.1f} | {r['rss_trimmed_mb']:.1f} | "
                f"{r['good_calls']} | {r['good_failed']} | "
                f"{r['good_p99_ms']:.1f} | {r['good_max_ms']:.1f} |",
                flush=True,
            )
            if r["big_sent"]:
                print(f"  4 MiB requests sent before the hold ended: {r['big_sent']}")
            if r["failures"]:
                print(f"  good-client failures, first: {r['failures']}", flush=True)


if __name__ == "__main__":
    main()
