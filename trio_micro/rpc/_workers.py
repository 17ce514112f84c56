"""Call workers: reused tasks that each run one call at a time, as if in a task of its own.

Theory of operation
-------------------
A server connection runs every call in a task, so that calls run concurrently and a
handler's cancel scope and context variables are its own. Starting a task and entering a
cancel scope for every call is a large part of what a call costs the server, so the tasks
are reused: a worker runs a call and then, instead of ending, parks (with
:func:`trio.lowlevel.wait_task_rescheduled`) until :meth:`CallWorkers.start` hands it
the next one and reschedules it.

Each job still runs as if in a new task:

* in a fresh copy of one context (:func:`_drive` runs every step of the job's coroutine in
  it, as trio does for every task step), so what a job sets or binds never reaches the
  next job of the same worker;
* under the worker's cancel scope, which no other running job shares. Its deadline is
  cleared when a job ends; a scope that was cancelled is replaced by a new one before the
  next job.

:class:`CallWorkers` is the pool of one connection. ``acquire()`` returns a parked worker
(the most recently parked: its stack is warm) or a new one; the caller may set the
worker's ``scope`` deadline, then ``start()`` runs the job in it. ``trim()`` ends the parked
workers beyond ``keep_idle``, the longest parked first, so a burst of calls does not leave
a crowd of tasks behind. Cancelling the pool's nursery ends every worker: a parked one at
once, a busy one as its job is cancelled.
"""

from __future__ import annotations

import contextvars
import math
import types
from collections.abc import Coroutine, Generator
from contextlib import suppress
from typing import Any, final

import trio

__all__: list[str] = []

Job = Coroutine[Any, Any, None]


@final
class Worker:
    """One call worker, as :meth:`CallWorkers.acquire` returns it.

    Attributes:
        scope: The cancel scope the next job runs under (deadline ``inf``, not
            cancelled); set its deadline before :meth:`CallWorkers.start`. It is the
            job's own until the job ends.
    """

    __slots__ = ("job", "scope", "task")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.job: Job | None = None
        self.task: trio.lowlevel.Task | None = None  # set while parked


@final
class CallWorkers:
    """The reused call tasks of one connection; see the module docs.

    Synchronous API, never a checkpoint: jobs run in tasks of ``nursery``.

    Args:
        nursery: Where the workers' tasks run; cancelling it ends them.
        context: Each job runs in a fresh copy of it (default: a copy of the current one).
        keep_idle: Parked workers that :meth:`trim` keeps.
    """

    __slots__ = ("_context", "_idle", "_keep_idle", "_nursery")

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        context: contextvars.Context | None = None,
        keep_idle: int = 16,
    ) -> None:
        self._nursery = nursery
        self._context = context if context is not None else contextvars.copy_context()
        self._keep_idle = keep_idle
        self._idle: list[Worker] = []  # parked workers, the most recently parked last

    @property
    def idle(self) -> int:
        """Parked workers, waiting for a job."""
        return len(self._idle)

    def acquire(self) -> Worker:
        """Take a parked worker, or make a new one. Pass it to :meth:`start` next."""
        idle = self._idle
        return idle.pop() if idle else Worker()

    def start(self, worker: Worker, job: Job, name: str) -> None:
        """Run ``job`` in ``worker`` (from :meth:`acquire`), in a task named ``name``.

        The job runs under ``worker.scope`` in a fresh copy of the pool's context. What it
        raises propagates out of the nursery, as from any task.
        """
        worker.job = job
        task = worker.task
        if task is not None:
            worker.task = None
            task.name = name  # what it runs now, for task trees (/debug/tasks)
            trio.lowlevel.reschedule(task)
        else:
            self._nursery.start_soon(self._run, worker, name=name)

    def trim(self) -> None:
        """End the parked workers beyond ``keep_idle``, the longest parked first."""
        idle = self._idle
        while len(idle) > self._keep_idle:
            worker = idle.pop(0)
            task = worker.task
            assert task is not None
            worker.task = None  # woken with no job: it ends
            trio.lowlevel.reschedule(task)

    async def _run(self, worker: Worker) -> None:
        """Run jobs one after another, parking in between, until told to end."""
        context = self._context
        while True:
            scope = worker.scope
            with scope:
                while True:
                    job = worker.job
                    worker.job = None
                    assert job is not None
                    await _drive(job, context.copy())
                    if scope.cancel_called:
                        break
                    if scope.deadline != math.inf:
                        scope.deadline = math.inf
                    await self._park(worker)
                    if worker.job is None:  # told to end: see trim
                        return
            worker.scope = trio.CancelScope()
            await self._park(worker)
            if worker.job is None:
                return

    async def _park(self, worker: Worker) -> None:
        """Wait for the next job, or to be told to end (``worker.job`` still ``None``).

        Cancelled only when the nursery is.
        """
        idle = self._idle
        idle.append(worker)
        worker.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            worker.task = None
            with suppress(ValueError):
                idle.remove(worker)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


@types.coroutine
def _drive(job: Job, context: contextvars.Context) -> Generator[Any, Any, None]:
    """Await ``job`` with each of its steps run in ``context``: ``await job`` in a
    context of its own, as if it ran in a new task (``context.run`` per step is what trio
    does for every task step)."""
    run = context.run
    try:
        trap = run(job.send, None)
        while True:
            try:
                value = yield trap
            except GeneratorExit:
                run(job.close)
                raise
            except BaseException as exc:
                trap = run(job.throw, exc)
            else:
                trap = run(job.send, value)
    except StopIteration:
        return
