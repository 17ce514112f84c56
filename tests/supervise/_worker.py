"""A worker process for the supervisor tests: ``python -m tests.supervise._worker MODE DIR``.

Modes: ``ok`` (ready, then serve until SIGTERM or the supervisor's death, exit 0),
``crash-once`` (ready, then exit 3 the first time its slot runs, like ``ok`` after),
``fail`` (exit 2 before ready), ``hang`` (never ready), ``stubborn`` (ready, ignores
SIGTERM). Each start appends a line to
``DIR/worker<index>.log``: ``start <pid>``, ``ready``, ``sigterm``, ``orphaned``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from trio_micro.supervise import WorkerContext


def main() -> int:
    mode, directory = sys.argv[1], Path(sys.argv[2])
    context = WorkerContext.from_environ()
    assert context is not None, "not started by a supervisor"
    context.check_supervisor()
    log = directory / f"worker{context.index}.log"
    starts = log.read_text().count("start ") if log.exists() else 0

    def note(line: str) -> None:
        with log.open("a") as file:
            file.write(line + "\n")

    note(f"start {os.getpid()}")
    if mode == "fail":
        print(f"worker {context.index}: cannot import the service", file=sys.stderr)
        return 2
    if mode == "hang":
        time.sleep(600)
        return 0
    stopping = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stopping
        note("sigterm")
        stopping = True

    if mode == "stubborn":  # notes the signal, never stops for it
        signal.signal(signal.SIGTERM, lambda *_: note("sigterm"))
    else:
        signal.signal(signal.SIGTERM, on_sigterm)
    note("ready")  # before telling the supervisor, which may stop it at once
    context.report_ready(port=9000 + context.index, mode=mode)
    if mode == "crash-once" and starts == 0:
        return 3
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if context.supervisor_gone():
            note("orphaned")
            return 0
        if stopping and mode != "stubborn":
            return 0
        time.sleep(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
