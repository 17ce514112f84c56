"""Overload: the user service at 3x the load it can serve, with and without max_inflight.

Issue #14's targets: with ``max_inflight``, the admitted calls' p99 stays within 2x the
unloaded p99, refused calls fail in under 1 ms, and the server's RSS stays flat; without
it, say what happens.

The server is ``trio-micro serve examples.user_service:UserService`` (a seeded SQLite
database, a small cache so most calls go to the database, no access log), pinned to one
core; the load comes from processes pinned to another, *open loop*: calls start at a
fixed rate whatever the answers do, as real callers do (a closed loop would slow down with
the server and hide the overload). Every call has a deadline (``--deadline``) and the
client's channel does not retry (``retry=None``), so a refused call's time is the server's
refusal, not a retry's. Steps, for each run:

1. capacity ``C``: calls/s with 64 in flight, closed loop, on a fresh server;
2. unloaded: the probe alone, open loop at 0.1 C (p50/p99 of its calls);
3. overload: 3 C for ``--seconds``, once without ``max_inflight`` and once per
   ``--max-inflight`` value (a fresh server each), interleaved; the parent samples the
   server's RSS every 0.2 s.

Who offers the load (``--layout``):

* ``probe`` (the default): the *probe* -- an RPC client, ``rpc.open_channel`` and a stub,
  as a user's program calls -- offers 0.1 C and measures, while a *flood* process offers
  the other 2.9 C on its own connection with the sans-io protocol alone (no trio: it costs
  a fraction of the CPU). Overload in production comes from many callers on other
  machines, none of them saturated; here one client core has to offer 3x what the server
  core serves, and an RPC client offering all of it is itself at ~70% of its core, so its
  own scheduling shows up in the latencies it measures. The probe at 0.1 C measures what a
  caller sees, the same way with and without the flood.
* ``one-client``: one RPC client offers all of 3 C and measures (the layout before
  2026-12-07's last session; kept to compare).
* ``hold``: as ``probe``, but the flood's calls hold their slot ``--hold-ms`` each and
  cost the server no database work (bidi ``get_users`` streams, half-closed after the
  hold, no items), and as one ends the flood opens another at once (beyond its rate): one
  greedy connection that keeps far more calls open than ``max_inflight`` and takes back
  every slot it frees, the case fairness between connections is for (docs/rpc.md §14).

In the ``probe`` and ``hold`` layouts the flood is one connection and the probe another,
so the probe's refusal rate says how ``max_inflight`` is shared between them.
``--base TREE`` runs every ``max_inflight`` phase a second time with the server from
another checkout (e.g. the merge base, to compare admission rules), right after the
first: interleaved, on the same machine state.

The targets compare each run's overload p99 with the same run's unloaded p99 (the
median of the runs' ratios is reported), so slow drift of the machine between runs
cancels.

::

    .venv/bin/python benchmarks/overload_bench.py                # 3 runs
    .venv/bin/python benchmarks/overload_bench.py --quick        # a smoke run
    .venv/bin/python benchmarks/overload_bench.py --layout hold --base ../trio_micro-main
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USERS = 100_000
CACHE_SIZE = 100  # most calls miss: the database is the bottleneck, as in a real service
THREADS = 1  # one database thread: a capacity the client can offer three times over


# --- the client (a child process) ---------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def client(args: argparse.Namespace) -> dict[str, Any]:
    import random

    import trio

    from examples.user_service.service import GetUserRequest, UserService
    from trio_micro import observe, rpc

    rng = random.Random(1)
    ok: list[float] = []
    refused: list[float] = []
    counts = {"ok": 0, "refused": 0, "deadline": 0, "other": 0}

    async def one(stub: Any) -> None:
        start = time.perf_counter()
        try:
            with trio.fail_after(args.deadline):
                await stub.get_user(GetUserRequest(rng.randint(1, USERS)))
        except trio.TooSlowError:
            counts["deadline"] += 1
            return
        except rpc.RpcError as exc:
            if exc.code is rpc.Status.RESOURCE_EXHAUSTED:
                counts["refused"] += 1
                refused.append(time.perf_counter() - start)
            elif exc.code is rpc.Status.DEADLINE_EXCEEDED:
                counts["deadline"] += 1
            else:
                counts["other"] += 1
            return
        counts["ok"] += 1
        ok.append(time.perf_counter() - start)

    async def closed_loop(stub: Any) -> float:
        done = 0
        deadline = time.perf_counter() + args.seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await stub.get_user(GetUserRequest(rng.randint(1, USERS)))
                done += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(worker)
        return done / (time.perf_counter() - start)

    async def open_loop(stub: Any) -> float:
        started = 0
        start = trio.current_time()
        end = start + args.seconds
        async with trio.open_nursery() as nursery:
            while (now := trio.current_time()) < end:
                due = int((now - start) * args.rate)
                for _ in range(due - started):
                    nursery.start_soon(one, stub)
                started = max(started, due)
                await trio.sleep(0.001)
        return started / args.seconds

    async def main() -> dict[str, Any]:
        async with rpc.open_channel(f"127.0.0.1:{args.port}", retry=None) as channel:
            stub = channel.stub(UserService)
            warm = 0
            while warm < 200:  # warm up: connect, fill what caches there are
                try:
                    await stub.get_user(GetUserRequest(rng.randint(1, USERS)))
                except rpc.RpcError as exc:  # a flood may be under way already
                    if exc.code is not rpc.Status.RESOURCE_EXHAUSTED:
                        raise
                    # Counted too: a probe the server refuses nearly always would
                    # otherwise warm up for tens of seconds.
                    await trio.sleep(0.001)
                warm += 1
            # As serve does once listening: the startup objects leave the collector's
            # full passes, whose pauses would otherwise land in the measured tail.
            observe.tune_gc(freeze=True)
            if args.rate == 0:
                return {"capacity": await closed_loop(stub)}
            sent = await open_loop(stub)
        return {
            "sent_rate": sent,
            **counts,
            "ok_p50_ms": _percentile(ok, 0.5) * 1000,
            "ok_p99_ms": _percentile(ok, 0.99) * 1000,
            "refused_p50_ms": _percentile(refused, 0.5) * 1000,
            "refused_p99_ms": _percentile(refused, 0.99) * 1000,
        }

    return trio.run(main)


# --- the flood (a child process): the overload, as cheaply as a client can send it --------


def flood(args: argparse.Namespace) -> dict[str, Any]:
    """Offer ``args.rate`` calls/s with the sans-io protocol alone, until stdin closes (at
    most ``args.seconds``); with ``args.hold_ms``, calls that hold their slot that long.

    No trio, no tasks, no stub: one socket, one :class:`~trio_micro.protocol.Connection`,
    requests sent every millisecond in one write, answers counted as they come. It costs a
    fraction of the CPU the RPC client needs for the same rate, so a client core can offer
    3x the server's capacity and still have room for a probe that measures the latency a
    caller sees (the overload comes from elsewhere in production: many clients on other
    machines, none of them saturated).
    """
    import collections
    import gc
    import random
    import selectors
    import socket

    import msgspec

    from examples.user_service.service import GetUserRequest, UserService
    from trio_micro import protocol

    rng = random.Random(2)
    method = UserService.__rpc_methods__["get_user"].wire_name
    bidi = UserService.__rpc_methods__["get_users"].wire_name
    bidi_type = protocol.CallType.BIDI_STREAM
    encode = msgspec.msgpack.Encoder().encode
    timeout_ms = int(args.deadline * 1000)
    conn = protocol.Connection(protocol.Role.CLIENT)
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(conn.initiate())
    while not conn.handshake_complete:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, protocol.Ping):
                sock.sendall(conn.send_pong(event.opaque))
    gc.freeze()  # as the probe does (observe.tune_gc without importing trio)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    # The parent closes our stdin when the probe is done: sending ends then (or after
    # --seconds), so the flood outlasts the probe's warm-up and measurement however long
    # the warm-up takes (a probe refused 99% of the time takes long to warm up).
    selector.register(sys.stdin, selectors.EVENT_READ)
    counts = {"ok": 0, "refused": 0, "deadline": 0, "other": 0, "not_sent": 0}
    hold = args.hold_ms / 1000
    ends: collections.deque[tuple[float, int]] = collections.deque()  # held: (due, id)
    started_at: dict[int, float] = {}
    ok: list[float] = []
    refused: list[float] = []
    pending = bytearray()
    sent = 0
    replaced = 0  # held calls opened at once when one ended, beyond the rate

    def open_one(now: float) -> bytes:
        stream_id = conn.next_stream_id
        started_at[stream_id] = now
        if hold:  # a bidi stream, no items: half-closed after the hold
            ends.append((now + hold, stream_id))
            return conn.send_request(
                stream_id, bidi, b"", call_type=bidi_type, timeout_ms=timeout_ms
            )
        request = encode(GetUserRequest(rng.randint(1, USERS)))
        return conn.send_request(stream_id, method, request, timeout_ms=timeout_ms)

    start = time.perf_counter()
    end = start + args.seconds
    closed = False
    while not closed:
        now = time.perf_counter()
        if now >= end:  # sending is over; wait (at most a deadline) for the answers
            if not started_at or now >= end + args.deadline:
                break
        else:
            due = int((now - start) * args.rate)
            while sent < due and conn.can_open_stream():
                pending += open_one(now)
                sent += 1
            counts["not_sent"] += due - sent  # every stream slot taken: a caller gives up
            sent = due
        while ends and ends[0][0] <= now:
            stream_id = ends.popleft()[1]
            if stream_id in started_at:  # else refused already
                pending += conn.send_end(stream_id)
        if pending:
            with suppress(BlockingIOError):
                del pending[: sock.send(pending)]
        for key, _ in selector.select(0.001):
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    selector.unregister(sys.stdin)
                    end = min(end, time.perf_counter())
                continue
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            received = time.perf_counter()
            for event in conn.receive_data(data):
                if isinstance(event, (protocol.Response, protocol.End)):
                    counts["ok"] += 1
                    ok.append(received - started_at.pop(event.id))
                    if hold and received < end and conn.can_open_stream():
                        # Greedy: a slot it held is free; take it back before anyone.
                        pending += open_one(received)
                        replaced += 1
                elif isinstance(event, protocol.Error):
                    began = started_at.pop(event.id)
                    if event.code is protocol.Status.RESOURCE_EXHAUSTED:
                        counts["refused"] += 1
                        refused.append(received - began)
                    elif event.code is protocol.Status.DEADLINE_EXCEEDED:
                        counts["deadline"] += 1
                    else:
                        counts["other"] += 1
                elif isinstance(event, protocol.Ping):
                    pending += conn.send_pong(event.opaque)
                elif isinstance(event, (protocol.GoAway, protocol.ConnectionClosed)):
                    closed = True
    sock.close()
    counts["deadline"] += len(started_at)  # not answered within a deadline of the end
    return {
        "sent_rate": (sent - counts["not_sent"] + replaced) / (end - start),
        **counts,
        "ok_p50_ms": _percentile(ok, 0.5) * 1000,
        "ok_p99_ms": _percentile(ok, 0.99) * 1000,
        "refused_p50_ms": _percentile(refused, 0.5) * 1000,
        "refused_p99_ms": _percentile(refused, 0.99) * 1000,
    }


# --- the parent ---------------------------------------------------------------------------


def _cpus() -> tuple[int, int] | None:
    try:
        available = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return (available[0], available[1]) if len(available) >= 2 else None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (NaN once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def _server(
    db: Path, cpu: int | None, max_inflight: int | None, tree: Path = ROOT
) -> Iterator[tuple[int, int]]:
    """``trio-micro serve`` the user service from checkout ``tree``; yield its pid, port."""
    command = [
        sys.executable, "-m", "trio_micro", "serve", "examples.user_service:UserService",
        "-o", f"db={db}", "-o", f"cache_size={CACHE_SIZE}", "-o", f"threads={THREADS}",
        "--port", "0", "--no-access-log",
        "--log-level", "error",
    ]  # fmt: skip
    if max_inflight is not None:
        command += ["--max-inflight", str(max_inflight)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    proc = subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("serving "):
            raise RuntimeError(f"server did not start: {line!r}")
        yield proc.pid, int(line.rpartition(":")[2])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _client_command(
    port: int,
    cpu: int | None,
    rate: float,
    seconds: float,
    deadline: float,
    role: str = "client",
    hold_ms: float = 0.0,
) -> list[str]:
    command = [
        sys.executable, str(Path(__file__).resolve()), role, "--port", str(port),
        "--rate", str(rate), "--seconds", str(seconds), "--deadline", str(deadline),
        "--hold-ms", str(hold_ms),
    ]  # fmt: skip
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def _client(port: int, cpu: int | None, rate: float, seconds: float, deadline: float) -> Any:
    command = _client_command(port, cpu, rate, seconds, deadline)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=True, timeout=600)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _measure(
    db: Path,
    cpus: tuple[int, int] | None,
    max_inflight: int | None,
    rate: float,
    args: Any,
    flood_rate: float = 0.0,
    tree: Path = ROOT,
) -> dict[str, Any]:
    server_cpu, client_cpu = cpus if cpus else (None, None)
    with _server(db, server_cpu, max_inflight, tree) as (pid, port):
        rss: list[int] = []
        flooder = None
        if flood_rate:
            # The flood starts first and outlasts the probe (told to stop when the probe
            # has ended, at most 600 s): every probe call meets it.
            hold_ms = args.hold_ms if args.layout == "hold" else 0.0
            command = _client_command(
                port, client_cpu, flood_rate, 600.0, args.deadline, "flood", hold_ms
            )
            flooder = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
        server_cpu_start = _cpu_seconds(pid)
        child = subprocess.Popen(
            _client_command(port, client_cpu, rate, args.seconds, args.deadline),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started = time.monotonic()
        client_cpu_seen = math.nan
        while child.poll() is None:
            rss.append(_rss(pid))
            client_cpu_seen = _cpu_seconds(child.pid)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        server_cpu_used = _cpu_seconds(pid) - server_cpu_start
        out, err = child.communicate()
        if child.returncode:
            raise RuntimeError(f"client failed: {err.decode()[-500:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        result["rss_first_mib"] = rss[0] / 2**20 if rss else math.nan
        result["rss_last_mib"] = rss[-1] / 2**20 if rss else math.nan
        result["rss_max_mib"] = max(rss) / 2**20 if rss else math.nan
        # Share of one core each process used over the client's life (its warm-up and
        # start included): is either side saturated?
        result["server_cpu"] = server_cpu_used / elapsed
        result["client_cpu"] = client_cpu_seen / elapsed
        if flooder is not None:
            out, err = flooder.communicate(timeout=600)  # closes its stdin: the flood ends
            if flooder.returncode:
                raise RuntimeError(f"flood failed: {err.decode()[-500:]}")
            result["flood"] = json.loads(out.decode().strip().splitlines()[-1])
        return result


def _seed(db: Path) -> None:
    import trio

    from examples.user_service.database import UserDatabase

    async def main() -> None:
        async with UserDatabase(db) as database:
            await database.seed(USERS)

    trio.run(main)


def parent(args: argparse.Namespace, argv: Sequence[str]) -> int:
    cpus = _cpus()
    shown = shlex.join([".venv/bin/python", "benchmarks/overload_bench.py", *argv])
    print(f"# overload_bench: `{shown}`\n")
    print(
        f"{os.cpu_count()} cores; "
        + (f"server on core {cpus[0]}, client on core {cpus[1]}" if cpus else "not pinned")
        + f"; {USERS:,} users, cache_size={CACHE_SIZE}, threads={THREADS}, "
        f"deadline {args.deadline:g} s, {args.seconds:g} s per phase, "
        f"max_inflight={','.join(map(str, args.max_inflight))}; layout {args.layout}"
        + (f" (hold {args.hold_ms:g} ms)" if args.layout == "hold" else "")
        + (f"; base server from {args.base}" if args.base else "")
        + "; "
        f"medians of {args.runs} run(s); "
        f"load average before: {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    limits = args.max_inflight
    rows: dict[str, list[dict[str, Any]]] = {"unloaded": [], "without": []}
    rows.update({f"with {n}": [] for n in limits})
    if args.base:
        rows.update({f"base {n}": [] for n in limits})
    capacities: list[float] = []
    with tempfile.TemporaryDirectory(prefix="overload-") as scratch:
        db = Path(scratch) / "users.db"
        _seed(db)
        for run in range(args.runs):
            with _server(db, cpus[0] if cpus else None, None) as (_, port):
                capacity = _client(port, cpus[1] if cpus else None, 0, 3.0, 10.0)["capacity"]
            capacities.append(capacity)
            phases: list[tuple[str, int | None, float, Path]] = [
                ("unloaded", None, 0.1 * capacity, ROOT),
                ("without", None, 3 * capacity, ROOT),
            ]
            for n in limits:
                phases.append((f"with {n}", n, 3 * capacity, ROOT))
                if args.base:
                    phases.append((f"base {n}", n, 3 * capacity, args.base))
            for name, limit, rate, tree in phases:
                if args.layout != "one-client" and name != "unloaded":
                    # The probe offers what it offers unloaded; the flood the rest of 3 C.
                    result = _measure(
                        db, cpus, limit, 0.1 * capacity, args, rate - 0.1 * capacity, tree
                    )
                else:
                    result = _measure(db, cpus, limit, rate, args)
                result["rate"] = rate
                rows[name].append(result)
                print(f"<!-- run {run + 1} {name}: {json.dumps(result)} -->", file=sys.stderr)

    def med(name: str, key: str) -> float:
        values = [r[key] for r in rows[name] if not math.isnan(r[key])]
        return statistics.median(values) if values else math.nan

    print(f"Capacity (64 in flight, closed loop): {statistics.median(capacities):,.0f} calls/s\n")
    header = (
        "| phase | offered calls/s | sent calls/s | ok | refused | deadline exceeded | "
        "refused % | ok p50 ms | ok p99 ms | refused p50 ms | refused p99 ms | "
        "RSS first / last / max MiB | server / client CPU |"
    )
    print(header)
    print("|---" * 13 + "|")
    labels = {"unloaded": "unloaded (0.1 C)", "without": "3 C, no max_inflight"}
    for n in limits:
        labels[f"with {n}"] = f"3 C, max_inflight={n}"
        if args.base:
            labels[f"base {n}"] = f"3 C, max_inflight={n}, base"
    for name in rows:
        for row in rows[name]:
            answered = row["ok"] + row["refused"] + row["deadline"] + row["other"]
            row["refused_share"] = row["refused"] / answered if answered else math.nan
    for name, label in labels.items():
        print(
            f"| {label} | {med(name, 'rate'):,.0f} | {med(name, 'sent_rate'):,.0f} | "
            f"{med(name, 'ok'):,.0f} | {med(name, 'refused'):,.0f} | "
            f"{med(name, 'deadline'):,.0f} | {med(name, 'refused_share'):.1%} | "
            f"{med(name, 'ok_p50_ms'):.2f} | "
            f"{med(name, 'ok_p99_ms'):.2f} | {med(name, 'refused_p50_ms'):.3f} | "
            f"{med(name, 'refused_p99_ms'):.3f} | {med(name, 'rss_first_mib'):.1f} / "
            f"{med(name, 'rss_last_mib'):.1f} / {med(name, 'rss_max_mib'):.1f} | "
            f"{med(name, 'server_cpu'):.0%} / {med(name, 'client_cpu'):.0%} |"
        )
    if args.layout != "one-client":
        print("\nThe flood's own view (median of the runs):\n")
        print("| phase | sent calls/s | ok | refused | not sent (1,000 streams open) | "
              "ok p50 / p99 ms | refused p50 / p99 ms |")  # fmt: skip
        print("|---" * 6 + "|")
        for name, label in list(labels.items())[1:]:
            floods = [r["flood"] for r in rows[name]]

            def fmed(key: str, floods: list[dict[str, Any]] = floods) -> float:
                values = [f[key] for f in floods if not math.isnan(f[key])]
                return statistics.median(values) if values else math.nan

            print(
                f"| {label} | {fmed('sent_rate'):,.0f} | {fmed('ok'):,.0f} | "
                f"{fmed('refused'):,.0f} | {fmed('not_sent'):,.0f} | "
                f"{fmed('ok_p50_ms'):.2f} / {fmed('ok_p99_ms'):.2f} | "
                f"{fmed('refused_p50_ms'):.3f} / {fmed('refused_p99_ms'):.3f} |"
            )
    for name in rows:
        if name in ("unloaded", "without"):
            continue
        ratios = [
            loaded["ok_p99_ms"] / alone["ok_p99_ms"]
            for loaded, alone in zip(rows[name], rows["unloaded"], strict=True)
        ]
        ratio = statistics.median(ratios)
        refused = [r["refused_p99_ms"] for r in rows[name]]
        refused_p99 = statistics.median(refused)
        growth = med(name, "rss_max_mib") - med(name, "rss_first_mib")
        print(f"\n## Targets (issue #14), {labels[name].removeprefix('3 C, ')}\n")
        print(
            f"- admitted p99 within 2x the unloaded p99 (the same run's): "
            f"{'PASS' if ratio <= 2 else 'FAIL'}: {ratio:.2f}x "
            f"(runs: {', '.join(f'{r:.2f}x' for r in ratios)})"
        )
        print(
            f"- refused calls fail in under 1 ms (p99, client-side): "
            f"{'PASS' if refused_p99 < 1 else 'FAIL'}: {refused_p99:.3f} ms "
            f"(runs: {', '.join(f'{r:.3f}' for r in refused)})"
        )
        print(
            f"- server RSS flat under overload: {'PASS' if growth < 5 else 'FAIL'}: "
            f"+{growth:.1f} MiB from the first sample to the largest"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="parent", choices=("parent", "client", "flood"))
    parser.add_argument(
        "--layout",
        choices=("probe", "one-client", "hold"),
        default="probe",
        help="probe: a light RPC client measures at 0.1 C while a sans-io flood offers the "
        "rest of 3 C (default); one-client: one RPC client offers all of it and measures; "
        "hold: as probe, the flood's calls holding their slot --hold-ms each",
    )
    parser.add_argument(
        "--hold-ms", type=float, default=200.0, help="layout hold: how long each flood call holds"
    )
    parser.add_argument(
        "--base",
        type=lambda text: Path(text).resolve(),
        help="also run each max_inflight phase with the server from this checkout, interleaved",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per overload phase")
    parser.add_argument("--deadline", type=float, default=1.0, help="per call, seconds")
    parser.add_argument(
        "--max-inflight",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[8],
        help="the limit, or several (comma-separated: one overload phase each; default 8)",
    )
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s phases")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role != "parent":
        sys.path.insert(0, str(ROOT))
        print(json.dumps((client if args.role == "client" else flood)(args)), flush=True)
        return 0
    if args.quick:
        args.runs, args.seconds = 1, 3.0
    return parent(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
