"""The load engine behind ``trio-micro bench`` (exported by :mod:`trio_micro.cli` for the
demo in ``examples/demo`` and other load drivers).

Theory of operation: :func:`run_load` starts ``min(concurrency, total)`` worker tasks in
one nursery. Each worker claims the next call index from a shared counter (no lock:
trio switches tasks only at checkpoints, and claiming never awaits), waits for a token
when a rate is set, makes the call and records the outcome: latency into a
:class:`~trio_micro.analysis.LatencySketch` (bounded memory whatever the number of
calls), failures by status code. So at most ``concurrency`` calls are in flight, a call
costs no task spawn, and the rate limiter (:class:`~trio_micro.toolkit.RateLimiter`,
no background task) is shared by all workers in FIFO order.

Times come from :func:`trio.current_time`, so tests drive it with ``MockClock``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

import trio

from .._validate import check_callable, check_int, check_number
from ..analysis import LatencySketch
from ..rpc import ClientCall, RpcError
from ..toolkit import RateLimiter

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LoadResult", "PeerCounter", "progress", "run_load"]

#: How many error messages :attr:`LoadResult.first_errors` keeps.
MAX_ERROR_SAMPLES: Final = 5


@final
class PeerCounter:
    """A client interceptor that counts finished calls per server address.

    Pass it in ``rpc.open_channel(..., interceptors=[counter])``; afterwards
    :attr:`counts` maps each server's ``"host:port"`` (:attr:`rpc.ClientCall.peer`) to the
    calls it answered, successfully or with a status code, and :attr:`failures` to those
    of them that failed. Calls that never reached a connection, and calls cancelled by
    their caller, are not counted. A server-stream counts once, when its request is sent.

    Attributes:
        counts: Server address -> finished calls.
        failures: Server address -> calls that failed with an ``RpcError``.
    """

    __slots__ = ("counts", "failures")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<PeerCounter {self.counts!r}>"

    async def intercept(self, call: ClientCall, proceed: Callable[[], Awaitable[None]]) -> None:
        """Run the call and count it under its peer (when it picked one)."""
        try:
            await proceed()
        except RpcError:
            if call.peer:
                self.counts[call.peer] = self.counts.get(call.peer, 0) + 1
                self.failures[call.peer] = self.failures.get(call.peer, 0) + 1
            raise
        if call.peer:
            self.counts[call.peer] = self.counts.get(call.peer, 0) + 1


@final
@dataclass(frozen=True)
class LoadResult:
    """What :func:`run_load` measured.

    Attributes:
        calls: Calls made (``ok`` plus failed ones).
        ok: Calls that returned normally.
        errors: Status name (``"UNAVAILABLE"``, ...) -> failed calls with that code,
            client-side failures included; codes in first-seen order.
        elapsed: Seconds from the start of the run to its end.
        first_errors: The first few distinct failure messages (``"CODE: message"``).
        latency: Latencies of the successful calls, in milliseconds.
    """

    calls: int
    ok: int
    errors: dict[str, int]
    elapsed: float
    first_errors: list[str] = field(default_factory=list)
    latency: LatencySketch = field(default_factory=LatencySketch, repr=False, compare=False)

    @property
    def failed(self) -> int:
        """Calls that failed (``calls - ok``)."""
        return self.calls - self.ok

    def throughput(self) -> float:
        """Finished calls (successful or not) per second; 0 for an instant or empty run."""
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """The ``q``-quantile of the successful calls' latency in ms (within 1 %).

        ``q=1`` is the exact maximum, ``q=0`` the exact minimum. NaN when no call
        succeeded.

        Raises:
            ValueError: ``q`` is not within ``[0, 1]``.
        """
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
            raise ValueError(f"q must be a number within [0, 1], got {q!r}")
        if not self.latency.count:
            return math.nan
        return self.latency.quantile(q)


def _burst(rate: float) -> int:
    # 10 ms of tokens (at least one): a worker woken a little late loses no throughput
    # (see RateLimiter), and the initial burst stays small.
    return max(1, math.ceil(rate * 0.01))


async def run_load(
    call: Callable[[int], Awaitable[object]],
    *,
    total: int,
    concurrency: int,
    rate: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Call ``await call(i)`` for every ``i`` in ``range(total)``, ``concurrency`` at a time.

    At most ``concurrency`` calls run at once (a pool of that many worker tasks, not a
    task per call); indices are handed out in increasing order. With ``rate``, calls
    start at most ``rate`` per second on average, through a token bucket holding 10 ms
    worth of tokens (so up to ``ceil(rate / 100)`` may start at once). An
    :class:`~trio_micro.rpc.RpcError` counts as a failed call under its status code; the
    run goes on. ``on_progress(done, failed)`` is called after every call (synchronously,
    from the worker: keep it cheap).

    A checkpoint. Cancellation stops every call in flight and raises ``Cancelled``; no
    result is returned.

    Args:
        call: Makes call number ``i``; its result is ignored.
        total: How many calls, an int >= 0.
        concurrency: Most calls in flight, an int >= 1.
        rate: Most calls started per second on average, a finite number > 0, or
            ``None`` for no limit.
        on_progress: Called with (calls done, calls failed so far) after each call.

    Returns:
        The counts, the elapsed time and the latencies.

    Raises:
        TypeError / ValueError: A bad argument (before anything runs).
        BaseExceptionGroup: Wraps anything but ``RpcError`` that ``call`` or
            ``on_progress`` raised (a bug): the other calls are cancelled. Several
            exceptions may come together.
    """
    check_callable("call", call, expected="an async callable taking the call index")
    total = check_int("total", total, minimum=0)
    concurrency = check_int("concurrency", concurrency, minimum=1)
    limiter: RateLimiter | None = None
    if rate is not None:
        rate = check_number("rate", rate, unit="calls per second")
        limiter = RateLimiter(rate, burst=_burst(rate))
    if on_progress is not None:
        check_callable("on_progress", on_progress)

    sketch = LatencySketch()
    errors: dict[str, int] = {}
    samples: list[str] = []
    next_index = 0
    done = 0
    failed = 0
    clock = trio.current_time

    async def worker() -> None:
        nonlocal next_index, done, failed
        while next_index < total:
            index = next_index
            next_index += 1
            if limiter is not None:
                await limiter.acquire()
            started = clock()
            try:
                await call(index)
            except RpcError as exc:
                name = exc.code.name
                errors[name] = errors.get(name, 0) + 1
                if len(samples) < MAX_ERROR_SAMPLES and (message := str(exc)) not in samples:
                    samples.append(message)
                failed += 1
            else:
                sketch.add((clock() - started) * 1000)
            done += 1
            if on_progress is not None:
                on_progress(done, failed)

    start = clock()
    await trio.lowlevel.checkpoint()  # a checkpoint even when there is nothing to do
    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, total)):
            nursery.start_soon(worker)
    return LoadResult(
        calls=done,
        ok=done - failed,
        errors=errors,
        elapsed=clock() - start,
        first_errors=samples,
        latency=sketch,
    )


@contextmanager
def progress(
    total: int, description: str, *, console: Console | None = None
) -> Iterator[Callable[[int, int], None]]:
    """Show the progress of ``total`` calls; yield the ``on_progress(done, failed)`` callback.

    On a terminal it is a live rich progress bar (calls done, failed, rate, time left),
    redrawn about ten times a second by rich's refresh thread and left on screen at the
    end. Elsewhere (a pipe, a file, CI logs) it prints a plain line at every 10 % of
    ``total``. The callback only stores numbers and does not block.

    Args:
        total: Calls expected, an int >= 0.
        description: Shown before the bar / at the start of each line.
        console: Where to draw (default: a rich console on standard error, so standard
            output stays clean for results).

    Raises:
        TypeError / ValueError: ``total`` is not an int >= 0.
    """
    total = check_int("total", total, minimum=0)
    if console is None:
        from rich.console import Console

        console = Console(file=sys.stderr)
    if console.is_terminal:
        with _rich_progress(total, description, console) as callback:
            yield callback
        return
    step = max(1, math.ceil(total / 10))
    next_report = step
    out = console

    def plain(done: int, failed: int) -> None:
        nonlocal next_report
        if done < next_report and done != total:
            return
        while next_report <= done:
            next_report += step
        percent = 100 * done // total if total else 100
        out.print(
            f"{description}: {done:,}/{total:,} calls ({percent}%), {failed:,} failed",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    yield plain


@contextmanager
def _rich_progress(
    total: int, description: str, console: Console
) -> Iterator[Callable[[int, int], None]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[failed]:,} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=10,
    )
    task = bar.add_task(description, total=total, failed=0)
    # rich takes a lock per update; updating every call would cost more than the call
    # itself at high rates, and the bar is redrawn only 10 times a second anyway.
    step = max(1, total // 1000)
    state = [0, 0]  # done, failed

    def update(done: int, failed: int) -> None:
        state[0], state[1] = done, failed
        if done % step == 0 or done == total:
            bar.update(task, completed=done, failed=failed)

    with bar:
        try:
            yield update
        finally:
            bar.update(task, completed=state[0], failed=state[1])
