"""The demo's child processes: start one and read its ready line, stop them all, check
that nothing is left behind."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .config import KILL_TIMEOUT, START_TIMEOUT, STOP_ORDER, STOP_TIMEOUT, Config, DemoError


@dataclass(frozen=True)
class Worker:
    """One worker process of a replica (``serve --workers``), as its supervisor reported it;
    a replica without a supervisor is its own one worker."""

    index: int
    pid: int
    address: str  # the endpoint it registered: its own port
    log: Path | None


@dataclass(eq=False)
class Child:
    """A process the demo started, and how it ended."""

    name: str
    process: trio.Process
    stderr: Path
    log: Path | None
    address: str | None = None
    killed_at: int | None = None  # the demo SIGKILLed it on purpose after this many calls
    stop: str | None = None  # how it stopped, for the report
    clean: bool = False
    workers: list[Worker] = field(default_factory=list)

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

    def groups(self) -> list[int]:
        """The process groups of the child: its own, and each worker's (a supervisor starts
        its workers in groups of their own)."""
        return [self.pid, *(w.pid for w in self.workers if w.pid != self.pid)]

    def kill_tree(self) -> None:
        """SIGKILL the child and every worker of it: the whole replica dies at once."""
        self.signal_group(signal.SIGKILL)
        for pid in self.groups()[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def child_env() -> dict[str, str]:
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
    children: list[Child],
    name: str,
    argv: list[str],
    run_dir: Path,
    env: dict[str, str],
    log: Path | None,
) -> Child:
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
    child = Child(name, process, stderr_path, log)
    children.append(child)  # before anything can fail: cleanup must see it
    return child


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


async def _wait_ready(child: Child, pattern: re.Pattern[str]) -> tuple[str, bytes]:
    """Read ``child``'s stdout up to its ready line; return its address and the rest read."""
    stream = child.process.stdout
    assert stream is not None
    buffer = b""
    with trio.move_on_after(START_TIMEOUT):
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
        f"{child.name} printed no ready line within {START_TIMEOUT:g} s; its stderr "
        f"({child.stderr}) ends with:\n{_tail(child.stderr)}"
    )


async def _drain(child: Child, first: bytes, path: Path) -> None:
    """Copy the rest of ``child``'s stdout to ``path`` until it closes."""
    stream = child.process.stdout
    assert stream is not None
    with path.open("ab") as out:
        out.write(first)
        while data := await stream.receive_some(65536):
            out.write(data)


async def start_child(
    nursery: trio.Nursery,
    children: list[Child],
    name: str,
    argv: list[str],
    pattern: re.Pattern[str],
    config: Config,
    env: dict[str, str],
) -> Child:
    """Start a child that logs to ``RUN_DIR/NAME.jsonl``; wait for its ready line."""
    log = config.run_dir / f"{name}.jsonl"
    argv = [*argv, "--log-file", str(log)]
    child = await _spawn(children, name, argv, config.run_dir, env, log)
    child.address, rest = await _wait_ready(child, pattern)
    child.workers = _workers(child)
    nursery.start_soon(_drain, child, rest, config.run_dir / f"{name}.stdout.txt")
    return child


def _workers(child: Child) -> list[Worker]:
    """What a ready ``serve --workers N`` logged about its workers (``serve.started``), or
    the child itself as one worker (it logs before it prints its ready line)."""
    assert child.log is not None
    assert child.address is not None
    started: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in child.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "serve.started":
                    started = record
    reported = started.get("workers")
    if not isinstance(reported, list):
        return [Worker(0, child.pid, child.address, child.log)]
    return [
        Worker(
            int(w["index"]),
            int(w["pid"]),
            str(w["address"]),
            worker_log_file(child.log, int(w["index"])),
        )
        for w in reported
    ]


def worker_log_file(log: Path, index: int) -> Path:
    """Where ``serve --workers`` worker ``index`` writes when the replica logs to ``log``."""
    return log.with_name(f"{log.stem}.worker{index}{log.suffix}")


async def seed_database(config: Config, env: dict[str, str], db: Path) -> str:
    argv = [sys.executable, "-m", "examples.user_service", "seed"]
    argv += ["--db", str(db), "--users", str(config.users)]
    with trio.move_on_after(START_TIMEOUT * 2):
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
    raise DemoError(f"seeding the database took more than {START_TIMEOUT * 2:g} s")


async def _stop(child: Child, timeout: float) -> None:
    """Stop ``child`` (SIGTERM, then SIGKILL after ``timeout``) and record how it ended."""
    if child.stop is not None:
        return
    if child.killed_at is not None:
        with trio.move_on_after(KILL_TIMEOUT):
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
        with trio.move_on_after(KILL_TIMEOUT):
            await child.process.wait()
        child.stop = f"did not exit within {timeout:g} s of SIGTERM: killed with SIGKILL"
        return
    # trio-micro commands exit 128 + N after a graceful stop by signal N.
    child.clean = code == 128 + signal.SIGTERM
    child.stop = f"exited with status {code} after SIGTERM"


async def _stop_and_close(child: Child, timeout: float) -> None:
    await _stop(child, timeout)
    if child.process.returncode is not None and child.process.stdout is not None:
        await child.process.stdout.aclose()  # nothing reads it any more (see _work)


async def stop_all(children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """Stop the notifier, then the orders replicas, then the users replicas (each
    deregisters from the registry while it is still up), then everything else."""
    groups = [[c for c in children if c.name.startswith(prefix)] for prefix in STOP_ORDER]
    stopped = {id(c) for group in groups for c in group}
    for group in (*groups, [c for c in children if id(c) not in stopped]):
        async with trio.open_nursery() as nursery:
            for child in group:
                nursery.start_soon(_stop_and_close, child, timeout)


def kill_all_now(children: Sequence[Child]) -> None:
    """SIGKILL every child still running, and its workers (synchronous: the last resort)."""
    for child in children:
        if child.running():
            child.kill_tree()


def running(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie is not: the killed replica's workers
    are re-parented when their supervisor dies, and init reaps them in its own time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def leftovers(children: Sequence[Child]) -> list[str]:
    """Describe each process group of a child (or of its workers) that still has a running
    process; kill those groups."""
    left = []
    for child in children:
        for group in child.groups():
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                continue
            except PermissionError:  # the group id was reused by someone else's process
                continue
            if not _group_running(group):
                continue  # only zombies are left, waiting for init
            left.append(f"{child.name} (process group {group})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    return left


def _group_running(group: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[2]) == group and fields[0] != "Z":  # state, ppid, pgrp, ...
            return True
    return False


def remove_empty_outputs(children: Sequence[Child]) -> None:
    """Delete the children's stdout/stderr files that stayed empty (the usual case)."""
    for child in children:
        for path in (child.stderr, child.stderr.with_name(f"{child.name}.stdout.txt")):
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()


def busy_ports(children: Sequence[Child]) -> list[str]:
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
