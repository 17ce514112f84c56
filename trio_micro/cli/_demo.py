"""``trio-micro demo``: the whole framework at work, in one command (``make demo``).

Theory of operation
-------------------
The demo is a small supervisor plus a client. In a new run folder it seeds one SQLite
database (``python -m examples.user_service seed``), starts ``trio-micro registry`` and
``--replicas`` copies of ``trio-micro serve examples.user_service:UserService`` as child
processes on 127.0.0.1 with port 0, and reads each child's one ready line
(``registry listening on HOST:PORT`` / ``serving users on HOST:PORT``) from its stdout
under a timeout. Every child writes JSON-lines logs into the run folder and its stderr
(and any further stdout) into ``NAME.stderr.txt`` (``NAME.stdout.txt``) there; those
are deleted at the end when they stayed empty.

The client, in the demo's own process, finds the replicas through the registry (it waits
until the channel has a ready connection to each one), then runs ``--calls`` untyped
``users/get_user`` calls, ``--concurrency`` in flight, through the load engine of
``trio-micro bench`` (:func:`~trio_micro.cli._load.run_load`) with a live progress bar.
User ids follow a Zipf-like law (weight ``1/rank**1.1``, seeded, so every run asks for the
same ids in the same order). When half of the calls are done, the progress callback kills
one replica with SIGKILL; the calls that were in flight on it fail with ``UNAVAILABLE``
and the channel retries them on the other replicas (``GetUser`` is idempotent), the dead
endpoint's reconnects fail, and its registration expires after ``--ttl`` seconds.

Then it stops the children (SIGTERM, a bounded wait, SIGKILL for stragglers, which the
report names), checks that no process of theirs is left and that their ports are free,
counts what the replicas' logs say (calls per replica, cache hits, database queries),
prints the summary, writes it to ``summary.json``, prints the ``trio-micro logs summary``
of the run folder and writes ``report.html`` there.

Children are started in their own sessions (process groups): a Ctrl-C at the terminal
reaches only the demo, which then stops them in order. SIGINT, SIGTERM and SIGHUP cancel
the run and stop the children; a second signal kills them at once. Only a SIGKILL of the
demo itself can leave children behind (Linux's ``PR_SET_PDEATHSIG`` is no help: trio
forks from a worker thread, and the signal fires when that *thread* exits).

Exit codes: 0 when every call succeeded and every process stopped cleanly; 1 otherwise
(the report says what went wrong); 2 bad arguments; 128 + the signal number when
interrupted.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import errno
import functools
import importlib.util
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from .. import observe, rpc
from ..observe import CALL_EVENTS, CODE_OK
from ..registry import open_registry_client
from ._call import print_table
from ._load import LoadResult, PeerCounter, progress, run_load
from ._logs import add_logs_parser, run_logs
from ._serve import count_type, seconds_type

__all__: list[str] = []  # internal to the cli package

#: The service the replicas run, and how the client calls it.
SERVICE_SPEC: Final = "examples.user_service:UserService"
SERVICE: Final = "users"
METHOD: Final = "users/get_user"
#: The user service's log event for one database query (examples.user_service.DB_QUERY;
#: trio_micro does not import the examples).
DB_QUERY_EVENT: Final = "users.db.query"
#: The exponent of the Zipf-like law of user ids.
ZIPF_EXPONENT: Final = 1.1

_REGISTRY_READY: Final = re.compile(r"^registry listening on (\S+)$")
_SERVE_READY: Final = re.compile(r"^serving \S+ on (\S+)$")
#: Seconds a child may take to print its ready line (startup on a busy 2-core machine).
_START_TIMEOUT: Final = 30.0
#: Seconds to wait for the channel to be connected to every replica.
_DISCOVERY_TIMEOUT: Final = 20.0
#: Seconds a child may take to exit after SIGTERM before it is killed.
_STOP_TIMEOUT: Final = 15.0
#: Seconds to wait for a child to be gone after SIGKILL.
_KILL_TIMEOUT: Final = 5.0
_QUANTILES: Final = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_EPILOG: Final = """\
The run folder (--out, default ./demo-output/<time>) receives the JSON-lines logs of every
process (registry.jsonl, users-N.jsonl, client.jsonl), their stderr if any (*.stderr.txt), the
database (data/users.db), summary.json (the summary, for machines) and report.html (the
`trio-micro logs` report of the logs).

exit codes:
  0    every call succeeded and every process stopped cleanly
  1    some call failed, or a process did not start or stop cleanly (see the report)
  2    bad arguments
  128+N  interrupted by signal N (Ctrl-C: 130); the children are stopped first
"""


class DemoError(Exception):
    """The demo cannot go on (a child did not start, the replicas were not found)."""


# ---------------------------------------------------------------------- the workload


def zipf_user_ids(
    users: int, n: int, *, exponent: float = ZIPF_EXPONENT, seed: int = 0
) -> list[int]:
    """Return ``n`` user ids in ``1..users`` drawn from a Zipf-like law.

    The user of popularity rank ``k`` (1 the most popular) is drawn with a weight of
    ``1 / k**exponent``; which user has which rank is a seeded shuffle, so the popular
    users are spread over the id range. The same arguments give the same list. Sampling
    is a binary search over the cumulative weights (O(log users) per id).

    Raises:
        TypeError / ValueError: ``users`` is not an int >= 1, ``n`` not an int >= 0,
            ``exponent`` not a finite number >= 0, or ``seed`` not an int.
    """
    for name, value, minimum in (("users", users, 1), ("n", n, 0)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if isinstance(exponent, bool) or not isinstance(exponent, int | float):
        raise TypeError(f"exponent must be a number, got {exponent!r}")
    if not 0 <= exponent < math.inf:
        raise ValueError(f"exponent must be a finite number >= 0, got {exponent!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    by_rank = list(range(1, users + 1))
    rng.shuffle(by_rank)
    cumulative = list(itertools.accumulate(1 / k**exponent for k in range(1, users + 1)))
    total = cumulative[-1]
    last = users - 1
    return [
        by_rank[min(bisect.bisect_right(cumulative, rng.random() * total), last)] for _ in range(n)
    ]


# ---------------------------------------------------------------------- arguments


def add_demo_parser(subparsers: Any) -> None:
    """Add the ``demo`` command to the ``trio-micro`` subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="run a registry, replicas of the user service and a load, kill one; report",
        description="Start a registry and replicas of the example user service as "
        "processes, find them through the registry, make GetUser calls with Zipf-like "
        "user ids, kill one replica with SIGKILL halfway (no call may fail), stop "
        "everything cleanly, then summarise the logs of every process.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--users", type=count_type(1), default=10_000, help="users in the database (default 10000)"
    )
    parser.add_argument(
        "-n", "--calls", type=count_type(1), default=20_000, help="GetUser calls (default 20000)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=count_type(1), default=200, help="calls in flight (default 200)"
    )
    parser.add_argument(
        "--replicas", type=count_type(1), default=3, help="user-service processes (default 3)"
    )
    parser.add_argument(
        "--ttl",
        type=seconds_type(zero_ok=False),
        default=2.0,
        help="registration TTL of the replicas in seconds (default 2)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the user-id sequence (default 0)"
    )
    parser.add_argument(
        "--no-kill", action="store_true", help="do not kill a replica halfway through"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder, new or empty (default: ./demo-output/<date-time>)",
    )


@dataclass(frozen=True, kw_only=True)
class _Config:
    users: int
    calls: int
    concurrency: int
    replicas: int
    ttl: float
    seed: int
    kill: bool
    run_dir: Path


def _check_args(args: argparse.Namespace) -> _Config:
    if not args.no_kill and args.replicas < 2:
        raise DemoError(
            f"--replicas {args.replicas}: killing one needs at least 2 (or pass --no-kill)"
        )
    return _Config(
        users=args.users,
        calls=args.calls,
        concurrency=args.concurrency,
        replicas=args.replicas,
        ttl=args.ttl,
        seed=args.seed,
        kill=not args.no_kill,
        run_dir=_run_dir(args.out),
    )


def _run_dir(out: Path | None) -> Path:
    """Create the run folder (an existing one must be empty) and return its absolute path."""
    if out is None:
        base = Path("demo-output") / datetime.now().strftime("%Y%m%d-%H%M%S")
        out = base
        for n in itertools.count(2):
            if not out.exists():
                break
            out = base.with_name(f"{base.name}-{n}")
    try:
        if out.exists():
            if not out.is_dir():
                raise DemoError(f"--out {str(out)!r} exists and is not a folder")
            if any(out.iterdir()):
                raise DemoError(f"--out {str(out)!r} is not empty (logs are appended to)")
        (out / "data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the run folder {str(out)!r}: {exc.strerror}") from None
    return out.resolve()


# ---------------------------------------------------------------------- child processes


@dataclass(eq=False)
class _Child:
    """A process the demo started, and how it ended."""

    name: str
    process: trio.Process
    stderr: Path
    log: Path | None
    address: str | None = None
    killed_at: int | None = None  # the demo SIGKILLed it on purpose after this many calls
    stop: str | None = None  # how it stopped, for the report
    clean: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group while the child is unreaped."""
        # While the leader is not reaped its pid (= the group id) can't be reused.
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)


def _child_env() -> dict[str, str]:
    """The environment of the children: ours, with ``examples`` importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    spec = importlib.util.find_spec("examples")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise DemoError(
            "the `examples` package is not importable; run the demo from the project's "
            "folder (the one with examples/user_service)"
        )
    root = str(Path(locations[0]).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


async def _spawn(
    children: list[_Child],
    name: str,
    argv: list[str],
    run_dir: Path,
    env: dict[str, str],
    log: Path | None,
) -> _Child:
    """Start ``argv`` in a new session, stdout piped, stderr to ``NAME.stderr.txt``."""
    stderr_path = run_dir / f"{name}.stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            start_new_session=True,  # Ctrl-C at the terminal reaches only the demo
        )
    child = _Child(name, process, stderr_path, log)
    children.append(child)  # before anything can fail: cleanup must see it
    return child


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


async def _wait_ready(child: _Child, pattern: re.Pattern[str]) -> tuple[str, bytes]:
    """Read ``child``'s stdout up to its ready line; return its address and the rest read."""
    stream = child.process.stdout
    assert stream is not None
    buffer = b""
    with trio.move_on_after(_START_TIMEOUT):
        while True:
            line, sep, rest = buffer.partition(b"\n")
            if sep:
                match = pattern.match(line.decode("utf-8", "replace").strip())
                if match:
                    return match.group(1), rest
                buffer = rest
                continue
            data = await stream.receive_some(4096)
            if not data:
                await child.process.wait()
                raise DemoError(
                    f"{child.name} exited with status {child.process.returncode} before it "
                    f"was ready; its stderr ({child.stderr}) ends with:\n{_tail(child.stderr)}"
                )
            buffer += data
    raise DemoError(
        f"{child.name} printed no ready line within {_START_TIMEOUT:g} s; its stderr "
        f"({child.stderr}) ends with:\n{_tail(child.stderr)}"
    )


async def _drain(child: _Child, first: bytes, path: Path) -> None:
    """Copy the rest of ``child``'s stdout to ``path`` until it closes."""
    stream = child.process.stdout
    assert stream is not None
    with path.open("ab") as out:
        out.write(first)
        while data := await stream.receive_some(65536):
            out.write(data)


async def _start(
    nursery: trio.Nursery,
    children: list[_Child],
    name: str,
    argv: list[str],
    pattern: re.Pattern[str],
    config: _Config,
    env: dict[str, str],
) -> _Child:
    """Start a child that logs to ``RUN_DIR/NAME.jsonl``; wait for its ready line."""
    log = config.run_dir / f"{name}.jsonl"
    argv = [*argv, "--log-file", str(log)]
    child = await _spawn(children, name, argv, config.run_dir, env, log)
    child.address, rest = await _wait_ready(child, pattern)
    nursery.start_soon(_drain, child, rest, config.run_dir / f"{name}.stdout.txt")
    return child


async def _seed(config: _Config, env: dict[str, str], db: Path) -> str:
    argv = [sys.executable, "-m", "examples.user_service", "seed"]
    argv += ["--db", str(db), "--users", str(config.users)]
    with trio.move_on_after(_START_TIMEOUT * 2):
        done = await trio.run_process(
            argv,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
            start_new_session=True,
        )
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()
            raise DemoError(f"seeding the database failed (status {done.returncode}): {err}")
        return done.stdout.decode("utf-8", "replace").strip()
    raise DemoError(f"seeding the database took more than {_START_TIMEOUT * 2:g} s")


async def _stop(child: _Child, timeout: float) -> None:
    """Stop ``child`` (SIGTERM, then SIGKILL after ``timeout``) and record how it ended."""
    if child.stop is not None:
        return
    if child.killed_at is not None:
        with trio.move_on_after(_KILL_TIMEOUT):
            await child.process.wait()
        code = child.process.returncode
        child.clean = code == -signal.SIGKILL
        child.stop = f"killed with SIGKILL by the demo after {child.killed_at:,} calls" + (
            "" if child.clean else f" (status {code})"
        )
        return
    code = child.process.returncode
    if code is not None:
        child.stop = f"exited by itself with status {code} before it was stopped"
        return
    child.signal_group(signal.SIGTERM)
    with trio.move_on_after(timeout):
        await child.process.wait()
    code = child.process.returncode
    if code is None:
        child.signal_group(signal.SIGKILL)
        with trio.move_on_after(_KILL_TIMEOUT):
            await child.process.wait()
        child.stop = f"did not exit within {timeout:g} s of SIGTERM: killed with SIGKILL"
        return
    child.clean = code == 0
    child.stop = f"exited with status {code} after SIGTERM"


async def _stop_and_close(child: _Child, timeout: float) -> None:
    await _stop(child, timeout)
    if child.process.returncode is not None and child.process.stdout is not None:
        await child.process.stdout.aclose()  # nothing reads it any more (see _work)


async def _stop_all(children: list[_Child], timeout: float = _STOP_TIMEOUT) -> None:
    """Stop the replicas (they deregister from the registry), then everything else."""
    replicas = [c for c in children if c.name.startswith(f"{SERVICE}-")]
    for group in (replicas, [c for c in children if c not in replicas]):
        async with trio.open_nursery() as nursery:
            for child in group:
                nursery.start_soon(_stop_and_close, child, timeout)


def _kill_all_now(children: Sequence[_Child]) -> None:
    """SIGKILL every child still running (synchronous: the last resort)."""
    for child in children:
        child.signal_group(signal.SIGKILL)


def _leftovers(children: Sequence[_Child]) -> list[str]:
    """Describe each child whose process group still has a process; kill those groups."""
    left = []
    for child in children:
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # the group id was reused by someone else's process
            continue
        left.append(f"{child.name} (process group {child.pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    return left


def _remove_empty_outputs(children: Sequence[_Child]) -> None:
    """Delete the children's stdout/stderr files that stayed empty (the usual case)."""
    for child in children:
        for path in (child.stderr, child.stderr.with_name(f"{child.name}.stdout.txt")):
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()


def _busy_ports(children: Sequence[_Child]) -> list[str]:
    """The children's addresses that something still listens on."""
    busy = []
    for child in children:
        if child.address is None:
            continue
        host, _, port = child.address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As servers do: connections in TIME_WAIT don't hold the port, listeners do.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    busy.append(child.address)
    return busy


# ---------------------------------------------------------------------- the run


@dataclass
class _Run:
    """What one run saw, filled in as it goes."""

    config: _Config
    children: list[_Child] = field(default_factory=list)
    seeded: str = ""
    result: LoadResult | None = None
    counter: PeerCounter = field(default_factory=PeerCounter)
    sources: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    retries_throttled: int = 0
    debug_url: str | None = None
    client: dict[str, Any] = field(default_factory=dict)  # the client's task/memory figures
    signal: str | None = None
    error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    busy_ports: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration: float = 0.0

    def replicas(self) -> list[_Child]:
        """The user-service children, in the order of their names (users-1, users-2...)."""
        replicas = [c for c in self.children if c.name.startswith(f"{SERVICE}-")]
        return sorted(replicas, key=lambda c: int(c.name.rpartition("-")[2]))

    def ordered_children(self) -> list[_Child]:
        """The registry (and any other helper process) first, then the replicas."""
        replicas = self.replicas()
        return [c for c in self.children if c not in replicas] + replicas


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(run: _Run) -> None:
    """Run the demo, stopping every child however it ends (see the module docs)."""
    children = run.children
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as outer:
                work = trio.CancelScope()
                outer.start_soon(_watch_signals, signals, work, run)
                with work:
                    try:
                        await _work(run)
                    finally:
                        with trio.CancelScope(shield=True):
                            await _stop_all(children)
                outer.cancel_scope.cancel()
    finally:
        _kill_all_now(children)  # only does anything after a second signal or a bug


async def _watch_signals(signals: Any, work: trio.CancelScope, run: _Run) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if run.signal is None:
            run.signal = name
            print(f"\n{name}: stopping the demo and its processes...", file=sys.stderr)
            work.cancel()
        else:
            print(f"{name} again: killing the processes now", file=sys.stderr)
            _kill_all_now(run.children)


async def _work(run: _Run) -> None:
    config = run.config
    env = _child_env()
    python = [sys.executable, "-m", "trio_micro"]
    db = config.run_dir / "data" / "users.db"
    async with trio.open_nursery() as drains:
        # 1. the database and the registry (at the same time), then the replicas
        async with trio.open_nursery() as nursery:

            async def seed() -> None:
                run.seeded = await _seed(config, env, db)

            nursery.start_soon(seed)
            registry = await _start(
                drains,
                run.children,
                "registry",
                [*python, "registry", "--host", "127.0.0.1", "--port", "0"],
                _REGISTRY_READY,
                config,
                env,
            )
        _say(f"{run.seeded}")
        _say(f"registry listening on {registry.address} (pid {registry.pid})")
        replica_argv = [*python, "serve", SERVICE_SPEC, "--host", "127.0.0.1", "--port", "0"]
        replica_argv += ["--registry", f"registry://{registry.address}"]
        replica_argv += ["--ttl", f"{config.ttl:g}", "-o", f"db={db}"]
        async with trio.open_nursery() as nursery:
            for i in range(1, config.replicas + 1):
                nursery.start_soon(
                    _start,
                    drains,
                    run.children,
                    f"{SERVICE}-{i}",
                    replica_argv,
                    _SERVE_READY,
                    config,
                    env,
                )
        for child in run.replicas():
            _say(f"{child.name} serving on {child.address} (pid {child.pid})")
        # 2. the client
        await _client(run, registry)
        drains.cancel_scope.cancel()  # the children are stopped by the caller


async def _client(run: _Run, registry: _Child) -> None:
    """Find the replicas, run the load (killing one halfway), with the debug endpoint up.

    The task monitor and the memory monitor log into ``client.jsonl``; the number of live
    tasks before and after the load is the leak check.
    """
    config = run.config
    assert registry.address is not None
    ids = zipf_user_ids(config.users, config.calls, seed=config.seed)
    async with (
        observe.open_task_monitor(leak_threshold=max(1000, 4 * config.concurrency)) as monitor,
        observe.open_memory_monitor(interval=1.0),
        open_registry_client(registry.address) as reg,
        rpc.open_channel(SERVICE, registry=reg, interceptors=[run.counter]) as channel,
        trio.open_nursery() as nursery,
    ):
        await _start_debug_endpoint(run, nursery)
        await _wait_discovered(run, channel)
        victim = run.replicas()[-1] if config.kill else None
        kill_at = max(1, config.calls // 2)
        sources = run.sources

        async def call(index: int) -> None:
            reply = await channel.call(METHOD, {"user_id": ids[index]}, idempotent=True)
            source = reply.get("source", "?") if isinstance(reply, dict) else "?"
            sources[source] = sources.get(source, 0) + 1

        what = f"GetUser x{config.calls:,} ({config.concurrency} in flight)"
        tasks_before = monitor.statistics().live_tasks
        with progress(config.calls, what) as show:

            def on_progress(done: int, failed: int) -> None:
                show(done, failed)
                if victim is not None and victim.killed_at is None and done >= kill_at:
                    victim.killed_at = done
                    victim.signal_group(signal.SIGKILL)
                    print(
                        f"killed {victim.name} (pid {victim.pid}, {victim.address}) with "
                        f"SIGKILL after {done:,} calls",
                        file=sys.stderr,
                        flush=True,
                    )

            run.result = await run_load(
                call, total=config.calls, concurrency=config.concurrency, on_progress=on_progress
            )
        stats = channel.statistics()
        run.retries, run.retries_throttled = stats.retries, stats.retries_throttled
        tasks = monitor.statistics()
        run.client = {
            "live_tasks_before_load": tasks_before,
            "live_tasks_after_load": tasks.live_tasks,
            "task_high_water": tasks.high_water,
            "leak_warnings": tasks.leak_warnings,
            "blocked_loop_steps": tasks.blocked_steps,
            "longest_step_ms": round(tasks.longest_step * 1000, 3),
            "peak_rss_bytes": observe.memory_snapshot().peak_rss_bytes,
        }
        nursery.cancel_scope.cancel()


async def _wait_discovered(run: _Run, channel: rpc.Channel) -> None:
    """Wait until the channel has a ready connection to every replica."""
    wanted = {c.address for c in run.replicas()}
    stats = channel.statistics()
    with trio.move_on_after(_DISCOVERY_TIMEOUT):
        while True:
            stats = channel.statistics()
            if wanted <= set(stats.endpoints) and stats.ready >= len(wanted):
                _say(
                    f"client: found {len(wanted)} replicas of {SERVICE!r} in the registry, "
                    f"connected to each"
                )
                return
            await trio.sleep(0.05)
    raise DemoError(
        f"the client did not connect to every replica within {_DISCOVERY_TIMEOUT:g} s: "
        f"wanted {sorted(a for a in wanted if a)}, the registry gave {list(stats.endpoints)}, "
        f"{stats.ready} connections ready"
    )


async def _start_debug_endpoint(run: _Run, nursery: trio.Nursery) -> None:
    """Serve the debug endpoint from the client process while the load runs."""
    host, port = await nursery.start(
        functools.partial(observe.serve_debug, host="127.0.0.1", port=0)
    )
    run.debug_url = f"http://{host}:{port}"
    _say(
        f"debug endpoint of the client: {run.debug_url}/debug/tasks "
        "(also /metrics, /debug/memory, /debug/stats) while the demo runs"
    )


# ---------------------------------------------------------------------- the logs


@dataclass
class _ReplicaLog:
    """What one replica's log says."""

    ok: int = 0  # successful users/get_user calls
    failed: dict[str, int] = field(default_factory=dict)  # failed ones, by code
    hits: int = 0
    misses: int = 0
    db_queries: int = 0
    repeated_queries: int = 0  # queries for a user this replica had queried before
    servers: set[str] = field(default_factory=set)
    malformed: int = 0


class _LogLine(msgspec.Struct):
    event: str = ""
    service: str = ""
    method: str = ""
    code: str = ""
    server: str = ""
    cache: str = ""
    user_id: int = 0


def _read_replica_log(path: Path | None) -> _ReplicaLog:
    out = _ReplicaLog()
    if path is None or not path.exists():
        return out
    decode = msgspec.json.Decoder(_LogLine).decode
    queried: set[int] = set()
    service, method = METHOD.split("/")
    with path.open("rb") as lines:
        for raw in lines:
            try:
                line = decode(raw)
            except msgspec.DecodeError:
                out.malformed += 1  # e.g. a last line cut short by SIGKILL
                continue
            if line.event == DB_QUERY_EVENT:
                out.db_queries += 1
                if line.user_id in queried:
                    out.repeated_queries += 1
                queried.add(line.user_id)
            elif line.event in CALL_EVENTS and line.service == service and line.method == method:
                out.servers.add(line.server)
                if line.code == CODE_OK:
                    out.ok += 1
                    out.hits += line.cache == observe.CACHE_HIT
                    out.misses += line.cache == observe.CACHE_MISS
                else:
                    out.failed[line.code] = out.failed.get(line.code, 0) + 1
    return out


# ---------------------------------------------------------------------- the report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _number(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _summary(run: _Run, logs: dict[str, _ReplicaLog]) -> dict[str, Any]:
    config = run.config
    result = run.result
    replicas = []
    for child in run.replicas():
        log = logs.get(child.name, _ReplicaLog())
        replicas.append(
            {
                "name": child.name,
                "address": child.address,
                "pid": child.pid,
                "calls": run.counter.counts.get(child.address or "", 0),
                "log_ok": log.ok,
                "log_failed": log.failed,
                "log_cache_hits": log.hits,
                "log_cache_misses": log.misses,
                "db_queries": log.db_queries,
                "repeated_db_queries": log.repeated_queries,
                "malformed_log_lines": log.malformed,
                "killed_at_call": child.killed_at,
                "log": str(child.log) if child.log else None,
            }
        )
    ok = result.ok if result else 0
    cache_replies = run.sources.get("cache", 0)
    processes = [
        {
            "name": c.name,
            "pid": c.pid,
            "address": c.address,
            "returncode": c.process.returncode,
            "stop": c.stop or "not stopped",
            "clean": c.clean,
        }
        for c in run.ordered_children()
    ]
    return {
        "run_dir": str(config.run_dir),
        "users": config.users,
        "calls_requested": config.calls,
        "concurrency": config.concurrency,
        "replica_count": config.replicas,
        "ttl_s": config.ttl,
        "kill": config.kill,
        "calls": result.calls if result else 0,
        "ok": ok,
        "failed": result.failed if result else 0,
        "errors": dict(result.errors) if result else {},
        "first_errors": list(result.first_errors) if result else [],
        "elapsed_s": round(result.elapsed, 6) if result else None,
        "calls_per_s": round(result.throughput(), 3) if result else None,
        "latency_ms": (
            {label: _number(result.latency_ms(q)) for label, q in _QUANTILES} if result else {}
        ),
        "replies_by_source": dict(run.sources),
        "cache_hit_ratio": round(cache_replies / ok, 6) if ok else None,
        "db_queries": sum(log.db_queries for log in logs.values()),
        "retries": run.retries,
        "retries_throttled": run.retries_throttled,
        "replicas": replicas,
        "processes": processes,
        "leftover_processes": run.leftovers,
        "busy_ports": run.busy_ports,
        "debug_url": run.debug_url,
        "client": run.client,
        "signal": run.signal,
        "error": run.error,
        "duration_s": round(run.duration, 3),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    if summary["calls"]:
        latency = summary["latency_ms"]
        ratio = summary["cache_hit_ratio"]
        print(
            f"{summary['calls']:,} GetUser calls in {summary['elapsed_s']:.2f} s: "
            f"{summary['calls_per_s']:,.0f} calls/s, {summary['ok']:,} ok, "
            f"{summary['failed']:,} failed"
        )
        print("latency: " + ", ".join(f"{label} {_ms(latency[label])}" for label, _ in _QUANTILES))
        print(
            f"cache: {'-' if ratio is None else f'{ratio:.1%}'} of the replies came from the "
            f"replicas' caches; database queries: {summary['db_queries']:,} (replica logs)"
        )
        print(
            f"retries: {summary['retries']:,} calls retried after UNAVAILABLE"
            + (
                f", {summary['retries_throttled']:,} refused by the retry budget"
                if summary["retries_throttled"]
                else ""
            )
        )
        calls = max(1, summary["calls"])
        print_table(
            "calls per replica (client) and in its log",
            ("replica", "address", "calls", "share", "log ok", "db queries", "note"),
            [
                (
                    r["name"],
                    r["address"] or "-",
                    f"{r['calls']:,}",
                    f"{r['calls'] / calls:.1%}",
                    f"{r['log_ok']:,}",
                    f"{r['db_queries']:,}",
                    "" if r["killed_at_call"] is None else f"KILLED after {r['killed_at_call']:,}",
                )
                for r in summary["replicas"]
            ],
        )
        if summary["errors"]:
            print_table(
                "errors",
                ("code", "calls"),
                [(code, f"{n:,}") for code, n in sorted(summary["errors"].items())],
            )
            for message in summary["first_errors"]:
                print(f"  e.g. {message}")
        else:
            print("errors: none")
    client = summary["client"]
    if client:
        before, after = client["live_tasks_before_load"], client["live_tasks_after_load"]
        rss = client["peak_rss_bytes"]
        print(
            f"client: {before} tasks before the load, {after} after "
            f"({'none leaked' if after <= before else f'{after - before} more: a leak?'}), "
            f"{client['task_high_water']} at most; {client['blocked_loop_steps']} steps "
            f"blocked the loop over 100 ms (longest {client['longest_step_ms']:.1f} ms)"
            + ("" if rss is None else f"; peak RSS {rss / 2**20:.0f} MiB")
        )
    print_table(
        "processes",
        ("process", "pid", "address", "how it stopped"),
        [(p["name"], str(p["pid"]), p["address"] or "-", p["stop"]) for p in summary["processes"]],
    )
    left, busy = summary["leftover_processes"], summary["busy_ports"]
    print(
        "leftover processes: "
        + (", ".join(left) if left else "none")
        + "; ports still in use: "
        + (", ".join(busy) if busy else "none")
    )


def _logs_summary(run_dir: Path, report: Path) -> int:
    """Print ``trio-micro logs summary RUN_DIR --html REPORT``; return its exit code."""
    parser = argparse.ArgumentParser(prog="trio-micro")
    add_logs_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["logs", "summary", str(run_dir), "--html", str(report)])
    print(f"\n$ trio-micro logs summary {run_dir} --html {report}", flush=True)
    code = run_logs(args)
    sys.stdout.flush()
    return code


def _verdict(summary: dict[str, Any]) -> list[str]:
    """What went wrong, one phrase each; empty when the demo succeeded."""
    problems = []
    if summary["error"]:
        problems.append(summary["error"])
    if summary["signal"]:
        problems.append(f"interrupted by {summary['signal']}")
    if summary["failed"]:
        problems.append(f"{summary['failed']:,} calls failed")
    if summary["calls"] != summary["calls_requested"] and not summary["signal"]:
        problems.append(f"{summary['calls']:,} of {summary['calls_requested']:,} calls made")
    problems += [f"{p['name']} {p['stop']}" for p in summary["processes"] if not p["clean"]]
    if summary["leftover_processes"]:
        problems.append("processes left behind")
    if summary["busy_ports"]:
        problems.append("ports still in use")
    return problems


# ---------------------------------------------------------------------- the command


def run_demo(args: argparse.Namespace) -> int:
    """Run the parsed ``demo`` command; return the exit code (see the module docs)."""
    try:
        config = _check_args(args)
    except DemoError as exc:
        print(f"trio-micro demo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run = _Run(config)
    run_dir = config.run_dir
    _say(
        f"trio-micro demo: {config.replicas} replicas of {SERVICE_SPEC}, {config.users:,} "
        f"users, {config.calls:,} GetUser calls ({config.concurrency} in flight)"
        + ("; one replica is killed halfway" if config.kill else "")
    )
    _say(f"run folder: {run_dir}")
    observe.configure_logging(format="json", file=run_dir / "client.jsonl")
    try:
        trio.run(_demo, run)
    except KeyboardInterrupt:  # a Ctrl-C before the signal handling began or after it ended
        run.signal = run.signal or "SIGINT"
    except BaseException as exc:
        error = _demo_error(exc)
        if error is None:
            raise
        run.error = error
        print(f"trio-micro demo: error: {error}", file=sys.stderr, flush=True)
    finally:
        _kill_all_now(run.children)
    _remove_empty_outputs(run.children)
    run.leftovers = _leftovers(run.children)
    run.busy_ports = _busy_ports(run.children)
    run.duration = time.monotonic() - run.started
    logs = {c.name: _read_replica_log(c.log) for c in run.replicas()}
    summary = _summary(run, logs)
    _print_summary(summary)
    report = run_dir / "report.html"
    problems = _verdict(summary)
    if run.signal is None:
        try:
            if _logs_summary(run_dir, report) != 0:
                problems.append("`trio-micro logs summary` failed")
        except Exception:  # a bug there must not hide the demo's own results
            traceback.print_exc()
            problems.append("`trio-micro logs summary` crashed (traceback above)")
    summary["report"] = str(report) if report.exists() else None
    summary["problems"] = problems
    code = EXIT_OK if not problems else EXIT_FAILED
    if run.signal is not None:
        code = 128 + int(signal.Signals[run.signal])
    summary["exit_code"] = code
    summary_path = run_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    print()
    print(f"logs:    {run_dir}/*.jsonl")
    if summary["report"]:
        print(f"report:  {report}")
    print(f"summary: {summary_path}")
    if problems:
        print(f"demo FAILED ({run.duration:.1f} s): " + "; ".join(problems))
    else:
        print(
            f"demo OK ({run.duration:.1f} s): {summary['calls']:,} calls, none failed"
            + (", one replica killed halfway" if config.kill else "")
            + "; every process stopped cleanly"
        )
    return code


def _demo_error(exc: BaseException) -> str | None:
    """The message(s) of the :class:`DemoError` s that ``exc`` is or holds, else None.

    None when ``exc`` holds anything else (a bug, which is raised with its traceback).
    """
    if isinstance(exc, DemoError):
        return str(exc)
    if not isinstance(exc, BaseExceptionGroup):
        return None
    errors, rest = exc.split(DemoError)
    if errors is None or rest is not None:
        return None
    leaves: list[BaseException] = []
    stack: list[BaseException] = [errors]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    return "; ".join(str(e) for e in leaves)
