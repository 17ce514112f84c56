"""Reading log files fast: :func:`summarize_files` and :func:`find_trace_records`.

The one place in the analysis package that opens files (the rest is pure: records in,
results out), so that a library user gets the same speed as ``trio-micro logs``.

Theory of operation: inputs are read in binary chunks of :data:`CHUNK_SIZE`, cut at the
last newline, and handed whole to :meth:`SummaryBuilder.add_json_lines`, which decodes a
chunk with one msgspec call. A file is read with ``os.preadv`` into one reused buffer, the
next chunk prefetched (``posix_fadvise``). Large inputs are cut into byte ranges aligned to
line starts and summarised by a pool of worker processes (``fork``: they start with
everything imported); their :class:`LogSummary` objects merge exactly. The cyclic garbage
collector is paused while a summary is built (records are acyclic). Memory per process is
about one chunk and its decoded records, whatever the size of the log.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from ..observe import CallRecord
from ._decode import iter_call_records
from ._filter import RecordFilter
from ._model import LogSummary
from ._summary import SummaryBuilder, merge_summaries

__all__ = ["find_trace_records", "summarize_files"]

#: Bytes read at a time (one chunk is decoded at once).
CHUNK_SIZE: Final = 4 * 1024 * 1024
#: Inputs smaller than this are summarised in-process (a pool costs more than it saves).
PARALLEL_MIN_BYTES: Final = 24 * 1024 * 1024
_PREADV: Final = hasattr(os, "preadv")
_ADVISE: Final = hasattr(os, "posix_fadvise")

#: A log to read: a path, or a binary stream (read to its end, in this process).
LogInput = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True, slots=True)
class _Options:
    """The :class:`SummaryBuilder` arguments, sent to the workers."""

    filter: RecordFilter | None = None
    slowest: int = 10
    error_samples: int = 20
    max_time_buckets: int = 120
    group_by: tuple[str, ...] = ()
    count_events: tuple[str, ...] = field(default=())

    def builder(self) -> SummaryBuilder:
        return SummaryBuilder(
            filter=self.filter,
            slowest=self.slowest,
            error_samples=self.error_samples,
            max_time_buckets=self.max_time_buckets,
            group_by=self.group_by,
            count_events=self.count_events,
        )


def summarize_files(
    inputs: Iterable[LogInput],
    *,
    jobs: int | None = None,
    filter: RecordFilter | None = None,  # noqa: A002 - the natural name
    slowest: int = 10,
    error_samples: int = 20,
    max_time_buckets: int = 120,
    group_by: Iterable[str] = (),
    count_events: Iterable[str] = (),
) -> LogSummary:
    """Return the summary of JSON-lines log files (see :class:`SummaryBuilder`).

    This call blocks (it reads files and may wait for worker processes): from async code,
    run it in a thread. It does not change the inputs; streams are read to their end.

    Args:
        inputs: Files (paths) and binary streams, summarised as one log.
        jobs: Worker processes for large files (default: the CPUs this process may use);
            files of less than :data:`PARALLEL_MIN_BYTES` in all are read in this process.
        filter: Which records to count.
        slowest: How many of the slowest calls to keep.
        error_samples: How many of the most recent failed calls to keep.
        max_time_buckets: Most buckets of the time series.
        group_by: Log fields to count calls by the values of.
        count_events: Events whose records to count per ``server``.

    Raises:
        ValueError: ``jobs`` is below 1, or an option is invalid (as for
            :class:`SummaryBuilder`).
        OSError: A file cannot be read.
    """
    options = _Options(
        filter, slowest, error_samples, max_time_buckets, tuple(group_by), tuple(count_events)
    )
    options.builder()  # checks the options before any work
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    items = list(inputs)
    files = [Path(item) for item in items if isinstance(item, str | os.PathLike)]
    streams = [item for item in items if not isinstance(item, str | os.PathLike)]
    sizes = [path.stat().st_size for path in files]
    jobs = jobs or _cpus()
    summaries: list[LogSummary] = []
    if jobs > 1 and sum(sizes) >= PARALLEL_MIN_BYTES:
        summaries += _summarize_in_parallel(files, sizes, jobs, options)
    else:
        summaries += [
            _summarize_range(str(path), 0, size, options)
            for path, size in zip(files, sizes, strict=True)
        ]
    summaries += [_summarize_stream(stream, options) for stream in streams]
    if not summaries:
        return options.builder().build()
    return merge_summaries(summaries)


def find_trace_records(inputs: Iterable[LogInput], trace_id: str) -> list[CallRecord]:
    """Return the call records of one trace among JSON-lines logs, in input order.

    Chunks and lines that do not contain ``trace_id`` are skipped without being decoded.
    Blocks, like :func:`summarize_files`.

    Raises:
        OSError: A file cannot be read.
    """
    needle = trace_id.encode("utf-8")

    def matching_lines() -> Iterator[bytes]:
        for item in inputs:
            if isinstance(item, str | os.PathLike):
                with open(item, "rb") as stream:
                    yield from _lines_with(stream, needle)
            else:
                yield from _lines_with(item, needle)

    return [r for r in iter_call_records(matching_lines()) if r.trace_id == trace_id]


def _lines_with(stream: IO[bytes], needle: bytes) -> Iterator[bytes]:
    for chunk in _chunks(stream):
        if needle in chunk:
            yield from (line for line in chunk.split(b"\n") if needle in line)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _summarize_in_parallel(
    files: Sequence[Path], sizes: Sequence[int], jobs: int, options: _Options
) -> list[LogSummary]:
    total = sum(sizes)
    # Ranges of about total/jobs bytes, so that every worker gets a fair share.
    units = [
        (str(path), start, end)
        for path, size in zip(files, sizes, strict=True)
        for start, end in _ranges(path, size, max(1, round(jobs * size / total)))
    ]
    # fork: the workers start with everything imported (a fresh interpreter would spend
    # longer importing than summarising its share).
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = min(jobs, len(units))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_summarize_range, *unit, options) for unit in units]
        return [f.result() for f in futures]


def _chunks(stream: IO[bytes], limit: int | None = None) -> Iterator[bytes]:
    """Yield runs of whole lines (the last may lack its newline) from ``stream``.

    Reads at most ``limit`` bytes when given.
    """
    pending = b""
    remaining = limit
    while True:
        size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
        data = stream.read(size) if size else b""
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        cut = data.rfind(b"\n")
        if cut < 0:
            pending += data
            continue
        yield pending + data[: cut + 1]
        pending = data[cut + 1 :]
    if pending:
        yield pending


def _range_chunks(path: str, start: int, end: int) -> Iterator[bytearray]:
    """Yield runs of whole lines (the last may lack its newline) of bytes ``[start, end)``
    of the file at ``path``: the same chunks as :func:`_chunks`, with less copying.

    Every item is the same ``bytearray``, refilled by the next step: use it before asking
    for the next. Each read (``os.preadv``) goes into it after the unfinished line that the
    previous chunk left, so a chunk costs one copy of the data and no allocation (a new
    4 MiB ``bytes`` per read costs page faults, and joining the unfinished line to it two
    more copies).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = bytearray()
        kept = 0  # bytes of an unfinished line at the start of the buffer
        pos = start
        while pos < end:
            if _ADVISE:  # the kernel reads the next chunk while this one is summarised
                os.posix_fadvise(fd, pos + CHUNK_SIZE, CHUNK_SIZE, os.POSIX_FADV_WILLNEED)
            want = min(CHUNK_SIZE, end - pos)
            # Resizing by a little within the capacity that the buffer keeps does not
            # reallocate.
            if len(buffer) > kept + want:
                del buffer[kept + want :]
            else:
                buffer.extend(bytes(kept + want - len(buffer)))
            view = memoryview(buffer)
            try:
                got = os.preadv(fd, [view[kept:]], pos)
            finally:
                view.release()
            if not got:  # the file shrank
                break
            pos += got
            kept += got
            del buffer[kept:]
            cut = buffer.rfind(b"\n")
            if cut < 0:  # no line end yet: read on
                continue
            tail = bytes(buffer[cut + 1 :])
            del buffer[cut + 1 :]
            yield buffer
            # Same length: a buffer cut to a fraction of its size gives its memory back.
            buffer[: len(tail)] = tail
            kept = len(tail)
        if kept:  # the last line, without its newline
            del buffer[kept:]
            yield buffer
    finally:
        os.close(fd)


def _ranges(path: Path, size: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``path`` (``size`` bytes) into at most ``parts`` byte ranges, each starting
    at a line start."""
    if parts <= 1 or size < 2 * CHUNK_SIZE:
        return [(0, size)]
    bounds = [0]
    with path.open("rb") as f:
        for i in range(1, parts):
            f.seek(size * i // parts)
            f.readline()  # to the start of the next line
            position = f.tell()
            if bounds[-1] < position < size:
                bounds.append(position)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _summarize_range(path: str, start: int, end: int, options: _Options) -> LogSummary:
    """Worker: summarise bytes ``[start, end)`` of ``path``."""
    with _gc_paused():
        builder = options.builder()
        if _PREADV:
            for chunk in _range_chunks(path, start, end):
                builder.add_json_lines(chunk)
        else:  # pragma: no cover - no os.preadv (Windows)
            with open(path, "rb") as f:
                f.seek(start)
                for data in _chunks(f, end - start):
                    builder.add_json_lines(data)
        return builder.build()


def _summarize_stream(stream: IO[bytes], options: _Options) -> LogSummary:
    with _gc_paused():
        builder = options.builder()
        for chunk in _chunks(stream):
            builder.add_json_lines(chunk)
        return builder.build()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC within: it finds nothing to free here (records are acyclic)
    but would walk millions of young objects; pausing it roughly halves the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
