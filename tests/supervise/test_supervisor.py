"""The supervisor with real worker processes (tests/supervise/_worker.py), bounded in time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio

from trio_micro import Backoff
from trio_micro.supervise import (
    ENV_COUNT,
    ENV_INDEX,
    ENV_LIFE_FD,
    ENV_READY_FD,
    ENV_SUPERVISOR_PID,
    Supervisor,
    SupervisorStatistics,
    WorkerContext,
    WorkerStartError,
)

ROOT = Path(__file__).resolve().parent.parent.parent
FAST = Backoff(initial=0.05, maximum=0.05)


def worker(mode: str, directory: Path) -> list[str]:
    return [sys.executable, "-m", "tests.supervise._worker", mode, str(directory)]


def events(directory: Path, index: int) -> list[str]:
    return [line.split()[0] for line in events_lines(directory, index)]


def events_lines(directory: Path, index: int) -> list[str]:
    path = directory / f"worker{index}.log"
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by init, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_every_worker_reports_ready_and_drains_on_cancel(tmp_path: Path) -> None:
    supervisor = Supervisor(lambda i: worker("ok", tmp_path), 3, grace=5, env={"X": "1"})
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ready = await nursery.start(supervisor.run)
            assert [(w.index, w.ready["port"], w.ready["mode"]) for w in ready] == [
                (0, 9000, "ok"),
                (1, 9001, "ok"),
                (2, 9002, "ok"),
            ]
            assert all(w.pid == w.ready["pid"] for w in ready)
            assert supervisor.statistics() == SupervisorStatistics(3, 3, 0, 0)
            nursery.cancel_scope.cancel()
    assert [events(tmp_path, i) for i in range(3)] == [["start", "ready", "sigterm"]] * 3
    assert all(not alive(w.pid) for w in ready if w.pid is not None)
    assert supervisor.statistics().ready == 0


async def test_a_worker_that_crashes_after_ready_is_restarted(tmp_path: Path) -> None:
    supervisor = Supervisor(lambda i: worker("crash-once", tmp_path), 2, restart_backoff=FAST)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            # Polls (bounded by fail_after): no event says "restarted and ready again".
            while supervisor.statistics().restarts < 2 or supervisor.statistics().ready < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
            statuses = supervisor.workers()
            nursery.cancel_scope.cancel()
    assert [w.restarts for w in statuses] == [1, 1]
    assert events(tmp_path, 0) == ["start", "ready", "start", "ready", "sigterm"]


async def test_a_worker_that_fails_before_ready_stops_everything_with_one_error(
    tmp_path: Path,
) -> None:
    def command(index: int) -> list[str]:
        return worker("fail" if index == 1 else "ok", tmp_path)

    supervisor = Supervisor(command, 3, restart_backoff=FAST)
    with trio.fail_after(30), pytest.raises(WorkerStartError) as info:
        await supervisor.run()
    assert (info.value.index, info.value.returncode, info.value.attempts) == (1, 2, 1)
    assert str(info.value) == (
        "worker 1 exited with status 2 before it was ready; its stderr says why"
    )
    assert events(tmp_path, 1) == ["start"]  # not restarted
    # The others were stopped (perhaps before they got far enough to log anything), and run
    # returned only once their processes were gone.
    assert [w.pid for w in supervisor.workers()] == [None, None, None]
    for index in range(3):
        started = [line for line in events_lines(tmp_path, index) if line.startswith("start ")]
        assert not any(alive(int(line.split()[1])) for line in started)


async def test_a_worker_that_never_reports_ready_fails_at_the_start_timeout(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(lambda i: worker("hang", tmp_path), 1, start_timeout=0.5)
    with trio.fail_after(30), pytest.raises(WorkerStartError, match="did not report ready"):
        await supervisor.run()
    # On a busy machine it may be killed before it even logged its start: either way, gone.
    started = [int(line.split()[1]) for line in events_lines(tmp_path, 0)]
    assert len(started) <= 1
    assert not any(alive(pid) for pid in started)
    assert [w.pid for w in supervisor.workers()] == [None]


async def test_a_worker_that_ignores_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    supervisor = Supervisor(lambda i: worker("stubborn", tmp_path), 1, grace=0.2, stop_margin=0.3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (status,) = await nursery.start(supervisor.run)
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at >= 0.5
    assert events(tmp_path, 0) == ["start", "ready", "sigterm"]
    assert status.pid is not None
    assert not alive(status.pid)


async def test_kill_sigkills_every_worker_and_they_restart(tmp_path: Path) -> None:
    supervisor = Supervisor(lambda i: worker("ok", tmp_path), 2, restart_backoff=FAST)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(supervisor.run)
            supervisor.kill()
            # Polls (bounded by fail_after): no event says "restarted and ready again".
            while supervisor.statistics().restarts < 2 or supervisor.statistics().ready < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert all(events(tmp_path, i)[:3] == ["start", "ready", "start"] for i in range(2))
    assert all(w.pid is not None and not alive(w.pid) for w in first)


def test_sigkill_of_the_supervisor_leaves_no_orphan(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import pathlib, sys, trio
        from trio_micro.supervise import Supervisor
        command = [sys.executable, "-m", "tests.supervise._worker", "ok", {str(tmp_path)!r}]
        async def main():
            supervisor = Supervisor(lambda i: command, 2)
            async with trio.open_nursery() as nursery:
                ready = await nursery.start(supervisor.run)
                pids = " ".join(str(w.pid) for w in ready)
                pathlib.Path({str(pid_file)!r}).write_text(pids + "\\n")
        trio.run(main)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            pid_file.exists() and pid_file.read_text().endswith("\n")
        ):
            time.sleep(0.01)
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(alive(pid) for pid in pids)
        # They saw the life pipe close and stopped by themselves: not cut off.
        assert [events(tmp_path, i)[-1] for i in range(2)] == ["orphaned", "orphaned"]
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"count": 0}, ValueError, "count must be >= 1"),
        ({"count": 257}, ValueError, "count must be at most 256"),
        ({"count": "2"}, TypeError, "count must be an int"),
        ({"count": 1, "grace": -1}, ValueError, "grace"),
        ({"count": 1, "max_start_failures": 0}, ValueError, "max_start_failures"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Supervisor(lambda i: ["true"], **kwargs)  # type: ignore[arg-type]


def test_a_command_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="command must be a function of the worker index"):
        Supervisor(["true"], 1)  # type: ignore[arg-type]


def test_the_worker_context_comes_from_the_environment() -> None:
    env = {
        ENV_INDEX: "1",
        ENV_COUNT: "2",
        ENV_SUPERVISOR_PID: "7",
        ENV_READY_FD: "9",
        ENV_LIFE_FD: "10",
    }
    assert WorkerContext.from_environ(env) == WorkerContext(1, 2, 7, 9, 10)
    assert WorkerContext.from_environ({}) is None


FULL = {ENV_COUNT: "2", ENV_SUPERVISOR_PID: "7", ENV_READY_FD: "9", ENV_LIFE_FD: "10"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**FULL, ENV_INDEX: "x"}, "x"),
        ({ENV_INDEX: "1"}, "malformed worker environment"),
        ({**FULL, ENV_INDEX: "2"}, "0..1"),
    ],
)
def test_a_malformed_worker_environment_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerContext.from_environ(env)


def test_a_worker_whose_supervisor_is_gone_exits() -> None:
    read, write = os.pipe()
    try:
        context = WorkerContext(0, 1, os.getppid(), ready_fd=-1, life_fd=read)
        context.check_supervisor()  # the supervisor (this test) holds the write end
        assert not context.supervisor_gone()
        os.close(write)
        write = -1
        assert context.supervisor_gone()
        with pytest.raises(SystemExit, match=r"supervisor \d+ is gone"):
            context.check_supervisor()
        stranger = WorkerContext(0, 1, os.getppid() + 1_000_000, ready_fd=-1, life_fd=read)
        with pytest.raises(SystemExit, match=r"supervisor \d+ is gone"):
            stranger.check_supervisor()
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


async def test_wait_supervisor_gone_returns_when_the_life_pipe_closes() -> None:
    read, write = os.pipe()
    context = WorkerContext(0, 1, os.getppid(), ready_fd=-1, life_fd=read)
    try:
        with trio.move_on_after(0.05) as scope:
            await context.wait_supervisor_gone()
        assert scope.cancelled_caught
        os.close(write)
        write = -1
        with trio.fail_after(5):
            await context.wait_supervisor_gone()
    finally:
        os.close(read)
        if write != -1:
            os.close(write)
