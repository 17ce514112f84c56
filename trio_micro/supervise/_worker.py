"""The worker's side of supervision: what it learns from the supervisor, and its answer.

A :class:`Supervisor <trio_micro.supervise.Supervisor>` starts each worker with five
environment variables (:data:`ENV_INDEX`, :data:`ENV_COUNT`, :data:`ENV_SUPERVISOR_PID`,
:data:`ENV_READY_FD`, :data:`ENV_LIFE_FD`) and two inherited pipes. The worker:

1. reads them with :meth:`WorkerContext.from_environ` (``None`` outside a supervisor);
2. calls :meth:`WorkerContext.check_supervisor` first thing, and then watches the *life
   pipe*: only the supervisor holds its write end and never writes, so it reads as
   end-of-file exactly when the supervisor is gone, however it died (SIGKILL included). A
   trio program awaits :meth:`WorkerContext.wait_supervisor_gone` and stops as on SIGTERM
   (it drains); a program without an event loop polls :meth:`WorkerContext.supervisor_gone`.
   No worker is left orphaned. (Linux's ``PR_SET_PDEATHSIG`` would not do: it fires when
   the *thread* that forked the worker exits, and trio forks from a worker thread that
   exits after 10 idle seconds.)
3. once it serves, calls :meth:`WorkerContext.report_ready` with what the supervisor should
   know (its ports): one JSON line on the ready pipe, which is then closed.

A worker that exits before reporting ready failed to start: the supervisor does not restart
it in a loop (see :class:`~trio_micro.supervise.Supervisor`).

Only :meth:`WorkerContext.wait_supervisor_gone` is async (and imports trio); the rest is
synchronous and never checkpoints.
"""

from __future__ import annotations

import os
import select
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

import msgspec

__all__ = [
    "ENV_COUNT",
    "ENV_INDEX",
    "ENV_LIFE_FD",
    "ENV_READY_FD",
    "ENV_SUPERVISOR_PID",
    "WorkerContext",
]

#: The worker's index, 0 to count - 1.
ENV_INDEX: Final = "TRIO_MICRO_WORKER"
#: How many workers the supervisor runs.
ENV_COUNT: Final = "TRIO_MICRO_WORKERS"
#: The supervisor's process id.
ENV_SUPERVISOR_PID: Final = "TRIO_MICRO_SUPERVISOR_PID"
#: The file descriptor of the pipe that :meth:`WorkerContext.report_ready` writes.
ENV_READY_FD: Final = "TRIO_MICRO_WORKER_READY_FD"
#: The file descriptor of the life pipe's read end (end-of-file: the supervisor is gone).
ENV_LIFE_FD: Final = "TRIO_MICRO_WORKER_LIFE_FD"


@final
@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Who this worker is, as its supervisor told it.

    Attributes:
        index: 0 to ``count - 1``; stable across restarts of the same slot.
        count: How many workers the supervisor runs.
        supervisor_pid: The supervisor's process id.
        ready_fd: The pipe :meth:`report_ready` writes to.
        life_fd: The life pipe's read end (see the module docs).
    """

    index: int
    count: int
    supervisor_pid: int
    ready_fd: int
    life_fd: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerContext | None:
        """Read the context from ``environ`` (default ``os.environ``).

        Returns:
            ``None`` when the process was not started by a supervisor (no
            :data:`ENV_INDEX`).

        Raises:
            ValueError: The variables are there but malformed.
        """
        env = os.environ if environ is None else environ
        if ENV_INDEX not in env:
            return None
        try:
            context = cls(
                index=int(env[ENV_INDEX]),
                count=int(env[ENV_COUNT]),
                supervisor_pid=int(env[ENV_SUPERVISOR_PID]),
                ready_fd=int(env[ENV_READY_FD]),
                life_fd=int(env[ENV_LIFE_FD]),
            )
        except (KeyError, ValueError) as exc:
            names = (ENV_INDEX, ENV_COUNT, ENV_SUPERVISOR_PID, ENV_READY_FD, ENV_LIFE_FD)
            shown = {name: env.get(name) for name in names}
            raise ValueError(f"malformed worker environment {shown!r}: {exc}") from None
        if not 0 <= context.index < context.count:
            raise ValueError(f"worker index {context.index!r} is not in 0..{context.count - 1}")
        return context

    def check_supervisor(self) -> None:
        """Exit at once if the supervisor is already gone (this process was re-parented).

        Raises:
            SystemExit: There is nobody to serve for.
        """
        if os.getppid() != self.supervisor_pid or self.supervisor_gone():
            raise SystemExit(f"worker {self.index}: supervisor {self.supervisor_pid} is gone")

    def supervisor_gone(self) -> bool:
        """Whether the supervisor has died (the life pipe reads end-of-file). Not blocking."""
        readable, _, _ = select.select([self.life_fd], [], [], 0)
        return bool(readable)

    async def wait_supervisor_gone(self) -> None:
        """Return once the supervisor has died, however it died. A checkpoint;
        cancellation just stops the wait."""
        import trio

        await trio.lowlevel.wait_readable(self.life_fd)

    def report_ready(self, **info: str | int | float | bool | None) -> None:
        """Tell the supervisor this worker serves, with ``info`` (e.g. its ports).

        Writes one JSON line to the ready pipe and closes it. Not a checkpoint.

        Raises:
            OSError: Called twice (the pipe is closed), or the supervisor is gone.
        """
        line = msgspec.json.encode({"index": self.index, "pid": os.getpid(), **info}) + b"\n"
        try:
            os.write(self.ready_fd, line)
        finally:
            os.close(self.ready_fd)
