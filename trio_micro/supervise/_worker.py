"""The worker's side of supervision: what it learns from the supervisor, and its answer.

A :class:`Supervisor <trio_micro.supervise.Supervisor>` starts each worker with four
environment variables (:data:`ENV_INDEX`, :data:`ENV_COUNT`, :data:`ENV_SUPERVISOR_PID`,
:data:`ENV_READY_FD`) and one inherited pipe. The worker:

1. reads them with :meth:`WorkerContext.from_environ` (``None`` outside a supervisor);
2. calls :meth:`WorkerContext.bind_to_supervisor` first thing: on Linux the kernel then sends
   it SIGTERM when the supervisor dies, however it dies (SIGKILL included), so no worker is
   left orphaned; it drains as on any SIGTERM;
3. once it serves, calls :meth:`WorkerContext.report_ready` with what the supervisor should
   know (its ports): one JSON line on the pipe, which is then closed.

A worker that exits before reporting ready failed to start: the supervisor does not restart
it in a loop (see :class:`~trio_micro.supervise.Supervisor`).

Nothing here imports trio: these calls are synchronous and never checkpoint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

import msgspec

__all__ = [
    "ENV_COUNT",
    "ENV_INDEX",
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

_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


@final
@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Who this worker is, as its supervisor told it.

    Attributes:
        index: 0 to ``count - 1``; stable across restarts of the same slot.
        count: How many workers the supervisor runs.
        supervisor_pid: The supervisor's process id.
        ready_fd: The pipe :meth:`report_ready` writes to.
    """

    index: int
    count: int
    supervisor_pid: int
    ready_fd: int

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
            )
        except (KeyError, ValueError) as exc:
            names = (ENV_INDEX, ENV_COUNT, ENV_SUPERVISOR_PID, ENV_READY_FD)
            shown = {name: env.get(name) for name in names}
            raise ValueError(f"malformed worker environment {shown!r}: {exc}") from None
        if not 0 <= context.index < context.count:
            raise ValueError(f"worker index {context.index!r} is not in 0..{context.count - 1}")
        return context

    def bind_to_supervisor(self) -> None:
        """Have the kernel SIGTERM this process when the supervisor dies (Linux only).

        Raises:
            SystemExit: The supervisor is already gone (this process was re-parented
                before the request took effect): exit at once, there is nobody to serve for.
        """
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:  # pragma: no cover
                errno = ctypes.get_errno()
                raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
        if os.getppid() != self.supervisor_pid:
            raise SystemExit(f"worker {self.index}: supervisor {self.supervisor_pid} is gone")

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
