"""A supervisor of worker processes, itself a trio program: nursery, processes, no threads.

Theory of operation
-------------------
:meth:`Supervisor.run` runs one task per worker slot (0 to ``count - 1``). A slot's task
starts its process with :func:`trio.lowlevel.open_process`, handing it a pipe and the
environment that :class:`~trio_micro.supervise.WorkerContext` reads, then waits for the
worker's one ready line on the pipe (its ports, whatever it reports). ``run`` reports
``task_status.started(...)`` once every slot is ready.

A worker that exits after it was ready is restarted after a delay from
:class:`trio_micro.Backoff` (reset once the worker has stayed up ``healthy_after``
seconds), logged (``supervise.worker.exited``) and counted (``restarts``). A worker that
exits, or does not report ready within ``start_timeout``, *before* it was ever ready is a
start failure: on a slot's first start, or after ``max_start_failures`` failures in a row,
the supervisor gives up and ``run`` raises :class:`WorkerStartError` -- one error, not a
restart loop, for a module that does not import or a port that is taken.

Workers run in process groups of their own, so a Ctrl-C at the terminal reaches only the
supervisor. Stopping is cancellation: cancel ``run`` and every slot sends its worker SIGTERM (the
worker deregisters and drains) and waits up to ``grace`` plus ``stop_margin`` seconds,
then SIGKILLs what is left. :meth:`Supervisor.kill` SIGKILLs every worker at once (a second
Ctrl-C). Workers watch the supervisor's life through a
pipe (:meth:`~trio_micro.supervise.WorkerContext.wait_supervisor_gone`), so a supervisor
killed with SIGKILL leaves no orphan: each worker sees it and drains as on SIGTERM.

POSIX only (the ready pipe is an inherited file descriptor).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, final

import msgspec
import structlog
import trio

from .._errors import TrioMicroError
from .._validate import check_callable, check_int, check_seconds
from ..toolkit import Backoff
from ._worker import ENV_COUNT, ENV_INDEX, ENV_LIFE_FD, ENV_READY_FD, ENV_SUPERVISOR_PID

__all__ = [
    "MAX_WORKERS",
    "STOP_MARGIN",
    "Supervisor",
    "SupervisorStatistics",
    "WorkerStartError",
    "WorkerStatus",
]

_log = structlog.get_logger("trio_micro.supervise")

#: Seconds a stopping worker gets beyond ``grace`` before it is SIGKILLed: its own drain
#: ends at ``grace``, this covers deregistering and exiting.
STOP_MARGIN: Final = 5.0
#: The most workers one supervisor runs.
MAX_WORKERS: Final = 256
#: The most a worker may write on its ready pipe.
_MAX_READY_LINE: Final = 64 * 1024


class WorkerStartError(TrioMicroError):
    """A worker exited (or hung) before it reported ready, so the supervisor gave up.

    Attributes:
        index: The worker slot.
        returncode: Its exit status (negative: killed by that signal), ``None`` if it
            hung and was killed at ``start_timeout``.
        attempts: Start failures in a row, this one included.
    """

    def __init__(self, index: int, returncode: int | None, attempts: int) -> None:
        if returncode is None:
            how = "did not report ready in time"
        elif returncode < 0:
            how = f"was killed by {_signal_name(-returncode)} before it was ready"
        else:
            how = f"exited with status {returncode} before it was ready"
        tries = "" if attempts == 1 else f" ({attempts} attempts in a row)"
        super().__init__(f"worker {index} {how}{tries}; its stderr says why")
        self.index = index
        self.returncode = returncode
        self.attempts = attempts


@final
@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker slot, as :meth:`Supervisor.workers` reports it.

    Attributes:
        index: The slot, 0 to ``count - 1``.
        pid: The current process's id (``None`` between a crash and its restart).
        ready: What the worker reported when it became ready (empty before).
        restarts: How many times this slot's process was started again.
    """

    index: int
    pid: int | None
    ready: Mapping[str, Any]
    restarts: int


@final
@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of :meth:`Supervisor.statistics` (a stats source for ``/metrics``).

    Attributes:
        workers: Worker slots.
        ready: Slots whose process is up and reported ready.
        restarts: Restarts over all slots (a counter).
        start_failures: Processes that exited or hung before they were ready (a counter).
    """

    workers: int
    ready: int
    restarts: int
    start_failures: int


@dataclass(slots=True)
class _Slot:
    index: int
    process: trio.Process | None = None
    ready: Mapping[str, Any] = field(default_factory=dict)
    restarts: int = 0


@final
class Supervisor:
    """Runs ``count`` worker processes, restarts those that crash, stops them on cancel.

    ::

        supervisor = Supervisor(lambda i: [sys.executable, "-m", "myservice"], 4, grace=10)
        async with trio.open_nursery() as nursery:
            workers = await nursery.start(supervisor.run)

    Args:
        command: ``command(index)`` is the argv of worker ``index``; it runs with the
            supervisor's environment plus ``env`` and the worker variables.
        count: How many workers, 1 to :data:`MAX_WORKERS`.
        grace: The workers' drain time on stop (they are SIGKILLed ``stop_margin`` after).
        env: Extra environment variables for every worker.
        start_timeout: Seconds a worker has to report ready before it counts as failed.
        restart_backoff: Delays between restarts (default: 0.5 s up to 30 s, full jitter).
        healthy_after: Uptime after which a worker's restart delay starts over.
        max_start_failures: Start failures in a row after which a slot that was ready
            before gives up too.
        stop_margin: Seconds a stopping worker gets beyond ``grace`` before SIGKILL.

    Raises:
        TypeError / ValueError: A bad argument (before anything starts).
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        count: int,
        *,
        grace: float = 10.0,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        restart_backoff: Backoff | None = None,
        healthy_after: float = 10.0,
        max_start_failures: int = 5,
        stop_margin: float = STOP_MARGIN,
    ) -> None:
        if not hasattr(os, "pipe") or sys.platform == "win32":  # pragma: no cover
            raise RuntimeError("trio_micro.supervise needs a POSIX system")
        check_callable("command", command, expected="a function of the worker index")
        self._command = command
        self.count = check_int("count", count, minimum=1)
        if self.count > MAX_WORKERS:
            raise ValueError(f"count must be at most {MAX_WORKERS}, got {count!r}")
        self.grace = check_seconds("grace", grace, finite=True)
        self._env = dict(env or {})
        self.start_timeout = check_seconds("start_timeout", start_timeout)
        self._backoff_template = restart_backoff
        self.healthy_after = check_seconds("healthy_after", healthy_after, finite=True)
        self.max_start_failures = check_int("max_start_failures", max_start_failures, minimum=1)
        self.stop_margin = check_seconds("stop_margin", stop_margin, finite=True)
        self._slots = [_Slot(i) for i in range(self.count)]
        self._start_failures = 0
        self._ready_changed = trio.Event()
        self._life_read = -1

    def __repr__(self) -> str:
        ready = sum(1 for slot in self._slots if slot.ready)
        return f"<Supervisor workers={self.count} ready={ready}>"

    # ------------------------------------------------------------------ reading

    def workers(self) -> list[WorkerStatus]:
        """The slots, in index order. Not a checkpoint."""
        return [
            WorkerStatus(
                slot.index,
                slot.process.pid if slot.process is not None else None,
                MappingProxyType(dict(slot.ready)),
                slot.restarts,
            )
            for slot in self._slots
        ]

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of the counters. Not a checkpoint."""
        return SupervisorStatistics(
            workers=self.count,
            ready=sum(1 for slot in self._slots if slot.ready),
            restarts=sum(slot.restarts for slot in self._slots),
            start_failures=self._start_failures,
        )

    # ------------------------------------------------------------------ running

    async def run(
        self, *, task_status: trio.TaskStatus[list[WorkerStatus]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the workers until cancelled; for ``nursery.start``.

        ``task_status.started`` receives :meth:`workers` once every worker is ready.
        Cancellation stops them: SIGTERM, up to ``grace + stop_margin`` seconds to exit,
        then SIGKILL; it returns (raising ``Cancelled``) when every process is gone.

        Raises:
            WorkerStartError: A worker could not start (see the class docs); the other
                workers are stopped first. It comes alone, not in a group.
        """
        failure: list[WorkerStartError] = []
        # The life pipe: workers read it; only this process holds the write end, so it
        # reads as end-of-file in every worker once this process is gone, however it died.
        self._life_read, life_write = os.pipe()
        try:
            await self._run_slots(failure, task_status)
        finally:
            os.close(self._life_read)
            os.close(life_write)
        if failure:
            raise failure[0]

    async def _run_slots(
        self, failure: list[WorkerStartError], task_status: trio.TaskStatus[list[WorkerStatus]]
    ) -> None:
        async with trio.open_nursery() as nursery:

            async def slot_task(slot: _Slot) -> None:
                try:
                    await self._run_slot(slot)
                except WorkerStartError as exc:
                    failure.append(exc)
                    nursery.cancel_scope.cancel()

            for slot in self._slots:
                nursery.start_soon(slot_task, slot, name=f"trio_micro.supervise.worker{slot.index}")
            while not all(slot.ready for slot in self._slots):
                await self._ready_changed.wait()
            task_status.started(self.workers())

    def kill(self) -> None:
        """SIGKILL every worker now (e.g. on a second Ctrl-C). Not a checkpoint.

        Slots that are running keep running (a killed worker is restarted); cancel
        :meth:`run` as well to stop.
        """
        for slot in self._slots:
            process = slot.process
            if process is not None and process.returncode is None:
                _log.warning("supervise.worker.killed", worker=slot.index, pid=process.pid)
                process.kill()

    async def _run_slot(self, slot: _Slot) -> None:
        backoff = self._backoff_template or Backoff(initial=0.5, maximum=30.0)
        backoff = Backoff(
            initial=backoff.initial, maximum=backoff.maximum, multiplier=backoff.multiplier
        )
        failures = 0
        ever_ready = False
        while True:
            started = trio.current_time()
            returncode, was_ready = await self._run_process(slot)
            if was_ready:
                ever_ready = True
                failures = 0
            else:
                failures += 1
                self._start_failures += 1
                if not ever_ready or failures >= self.max_start_failures:
                    raise WorkerStartError(slot.index, returncode, failures)
            if trio.current_time() - started >= self.healthy_after:
                backoff.reset()
            delay = backoff.next_delay()
            _log.warning(
                "supervise.worker.exited",
                worker=slot.index,
                returncode=returncode,
                was_ready=was_ready,
                restart_in=round(delay, 3),
            )
            await trio.sleep(delay)
            slot.restarts += 1

    async def _run_process(self, slot: _Slot) -> tuple[int | None, bool]:
        """Start slot's process, wait for it to end; (returncode, whether it was ready).

        ``None`` as the code: it hung before ready and was killed at ``start_timeout``.
        """
        read_fd, write_fd = os.pipe()
        try:
            env = {
                **os.environ,
                **self._env,
                ENV_INDEX: str(slot.index),
                ENV_COUNT: str(self.count),
                ENV_SUPERVISOR_PID: str(os.getpid()),
                ENV_READY_FD: str(write_fd),
                ENV_LIFE_FD: str(self._life_read),
            }
            process = await trio.lowlevel.open_process(
                list(self._command(slot.index)),
                env=env,
                pass_fds=(write_fd, self._life_read),
                stdin=subprocess.DEVNULL,
                # Its own process group: a Ctrl-C at the terminal reaches the supervisor
                # only, which stops each worker with one SIGTERM (a worker that got both
                # would take the second signal as "stop at once").
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the worker has its copy: EOF when it closes or dies
        slot.process = process
        _log.info("supervise.worker.started", worker=slot.index, pid=process.pid)
        try:
            ready = None
            with trio.move_on_after(self.start_timeout):
                ready = await _read_ready(read_fd)
            if ready is None:
                if process.returncode is None:
                    with trio.move_on_after(1):  # it may be exiting: let it report how
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                    return None, False
                return process.returncode, False
            slot.ready = ready
            self._notify()
            _log.info("supervise.worker.ready", worker=slot.index, pid=process.pid, info=ready)
            return await process.wait(), True
        finally:
            slot.ready = {}
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(slot, process)
            slot.process = None

    async def _stop(self, slot: _Slot, process: trio.Process) -> None:
        _log.info("supervise.worker.stopping", worker=slot.index, pid=process.pid)
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.grace + self.stop_margin):
            await process.wait()
        if process.returncode is None:
            _log.warning("supervise.worker.killed", worker=slot.index, pid=process.pid)
            process.kill()
            await process.wait()
        _log.info(
            "supervise.worker.stopped",
            worker=slot.index,
            pid=process.pid,
            returncode=process.returncode,
        )

    def _notify(self) -> None:
        self._ready_changed.set()
        self._ready_changed = trio.Event()


async def _read_ready(fd: int) -> dict[str, Any] | None:
    """The worker's ready line as a dict; ``None`` at EOF first (it exited) or for garbage."""
    stream = trio.lowlevel.FdStream(fd)
    data = b""
    try:
        while b"\n" not in data and len(data) <= _MAX_READY_LINE:
            chunk = await stream.receive_some()
            if not chunk:
                return None
            data += chunk
    finally:
        await stream.aclose()
    try:
        ready = msgspec.json.decode(data.partition(b"\n")[0])
    except msgspec.DecodeError:
        _log.warning("supervise.worker.bad_ready_line", line=data[:200])
        return None
    if not isinstance(ready, dict):
        return None
    return {str(key): value for key, value in ready.items()}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
