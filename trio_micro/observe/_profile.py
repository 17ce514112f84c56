"""The debug endpoint's CPU profile and heap pages: ``/debug/profile`` and ``/debug/heap``.

The pprof counterparts (``profile`` and ``heap``), served by :mod:`._debug`.

``/debug/profile?seconds=N&format=html|speedscope``
    A wall-clock profile of the event loop's thread for ``N`` seconds (default 5, at most
    :data:`MAX_PROFILE_SECONDS`), taken by pyinstrument (the ``trio-micro[profile]`` extra),
    as pyinstrument's HTML page or speedscope's JSON (open it at speedscope.app). The
    profiler samples the whole thread (pyinstrument's ``async_mode="disabled"``), so the
    profile shows every task that ran: handlers, the RPC machinery, the loop waiting for
    I/O. (pyinstrument's async mode follows the one task that started the profiler, here the
    page's own, which only sleeps.) One profile at a time per process: pyinstrument's
    sampler is one per thread. A second request while one runs gets ``409 Conflict``; a bad
    ``seconds`` or ``format`` gets ``400``; without pyinstrument, ``501`` says what to install.
``/debug/heap?top=N&baseline=1``
    The top ``N`` allocation sites (default 25) of a :mod:`tracemalloc` snapshot, by line,
    and, when a baseline was taken, the ``N`` sites that grew most since it. ``baseline=1``
    takes a new baseline (keeping one snapshot; the previous is dropped). Needs tracemalloc
    tracing (``PYTHONTRACEMALLOC=1``): otherwise ``409`` says so. The snapshot is taken and
    sorted in a worker thread, so the loop keeps running (slower) meanwhile.

Each page returns ``(status, body, content type)``; :mod:`._debug` makes the response.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import TYPE_CHECKING, Final, final

import trio

from ._memory import _TRACEMALLOC_NOISE
from ._tasks import _short_path

if TYPE_CHECKING:
    from pyinstrument import Profiler

__all__ = ["MAX_PROFILE_SECONDS"]

#: The longest profile ``/debug/profile`` takes.
MAX_PROFILE_SECONDS: Final = 60.0
_DEFAULT_SECONDS: Final = 5.0
_FORMATS: Final = {
    "html": b"text/html; charset=utf-8",
    "speedscope": b"application/json",
}
# 1 ms: pyinstrument's default; enough samples in a second to see a handler.
_INTERVAL: Final = 0.001
_TEXT: Final = b"text/plain; charset=utf-8"
Page = tuple[int, bytes, bytes]


class BadRequestError(Exception):
    """A query parameter is wrong: the page answers 400 with this message."""


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def parse_seconds(text: str | None) -> float:
    """``seconds`` of ``/debug/profile``: a finite number in (0, MAX_PROFILE_SECONDS]."""
    if text is None:
        return _DEFAULT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_PROFILE_SECONDS:  # NaN fails this too
        raise BadRequestError(
            f"seconds must be a number in (0, {MAX_PROFILE_SECONDS:g}], got {text[:40]!r}"
        )
    return seconds


@final
class _ProfileGate:
    """One profile at a time in the process (pyinstrument samples one per thread)."""

    __slots__ = ("ends_at",)

    def __init__(self) -> None:
        self.ends_at: float | None = None


_gate: Final = _ProfileGate()


async def profile_page(query: dict[str, list[str]]) -> Page:
    """Answer ``/debug/profile``: profile for ``seconds``, then render.

    Sleeps ``seconds`` (a checkpoint, cancellable: a client that goes away stops the
    profiler); renders in a worker thread.
    """
    seconds = parse_seconds(_last(query, "seconds"))
    form = _last(query, "format") or "html"
    if form not in _FORMATS:
        raise BadRequestError(f"format must be one of {', '.join(_FORMATS)}, got {form[:40]!r}")
    try:
        from pyinstrument import Profiler
    except ImportError:
        return (
            501,
            b"/debug/profile needs pyinstrument: pip install 'trio-micro[profile]'\n",
            _TEXT,
        )
    if _gate.ends_at is not None:
        left = max(0.0, _gate.ends_at - trio.current_time())
        message = (
            f"a profile is already running (one at a time); it ends in {left:.1f} s, "
            "try again then\n"
        )
        return 409, message.encode(), _TEXT
    profiler = Profiler(interval=_INTERVAL, async_mode="disabled")
    _gate.ends_at = trio.current_time() + seconds
    try:
        profiler.start()
        try:
            await trio.sleep(seconds)
        finally:
            profiler.stop()
    finally:
        _gate.ends_at = None
    body = await trio.to_thread.run_sync(_render, profiler, form)
    return 200, body, _FORMATS[form]


def _render(profiler: Profiler, form: str) -> bytes:
    if form == "speedscope":
        from pyinstrument.renderers import SpeedscopeRenderer

        # show_all: keep every frame. By default the renderer drops frames under 1% of the
        # profile, which hides a quick handler in a mostly idle server.
        return profiler.output(SpeedscopeRenderer(show_all=True)).encode()
    return profiler.output_html().encode()


@final
class HeapBaseline:
    """The one baseline snapshot of ``/debug/heap`` (per debug server)."""

    __slots__ = ("snapshot",)

    def __init__(self) -> None:
        self.snapshot: tracemalloc.Snapshot | None = None


async def heap_page(baseline: HeapBaseline, top: int, take_baseline: bool) -> Page:
    """Answer ``/debug/heap``: top sites now, growth since the baseline. A checkpoint."""
    if not tracemalloc.is_tracing():
        return (
            409,
            b"tracemalloc is not tracing: start the process with PYTHONTRACEMALLOC=1 "
            b"(or call tracemalloc.start()) to see allocations\n",
            _TEXT,
        )
    snapshot = await trio.to_thread.run_sync(_filtered_snapshot)
    previous = baseline.snapshot
    if take_baseline:
        baseline.snapshot = snapshot
    text = await trio.to_thread.run_sync(_format_heap, snapshot, previous, top, take_baseline)
    return 200, text.encode(), _TEXT


def _filtered_snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(_TRACEMALLOC_NOISE)


def _site(stat: tracemalloc.Statistic | tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    return f"{_short_path(frame.filename)}:{frame.lineno}"


def _format_heap(
    snapshot: tracemalloc.Snapshot,
    baseline: tracemalloc.Snapshot | None,
    top: int,
    took_baseline: bool,
) -> str:
    stats = snapshot.statistics("lineno")
    total = sum(stat.size for stat in stats)
    lines = [f"traced: {total} bytes in {sum(s.count for s in stats)} blocks"]
    lines.append(f"top {min(top, len(stats))} allocation sites:")
    lines.extend(f"  {s.size:>12} bytes  {s.count:>9} blocks  {_site(s)}" for s in stats[:top])
    if baseline is None:
        lines.append("no baseline: /debug/heap?baseline=1 takes one")
    else:
        diffs = snapshot.compare_to(baseline, "lineno")
        lines.append(f"top {min(top, len(diffs))} changes since the baseline:")
        lines.extend(
            f"  {d.size_diff:>+12} bytes  {d.count_diff:>+9} blocks  {_site(d)}"
            for d in diffs[:top]
        )
    if took_baseline:
        lines.append("baseline taken now: later requests compare against it")
    return "\n".join(lines) + "\n"
