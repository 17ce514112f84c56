"""One structlog configuration for every trio_micro process.

:func:`configure_logging` sets structlog up in one of two shapes:

``json``
    One JSON object per line, for machines (``trio-micro logs``, log shippers)::

        {"event":"rpc.call.complete","level":"info","logger":"rpc",
         "timestamp":"2025-01-02T03:04:05.678901Z","trace_id":"...","duration_ms":1.2}

    Every record has ``timestamp`` (ISO-8601, UTC), ``level`` and ``event``; ``logger``
    when the logger was created with a name (``structlog.get_logger("rpc")``); plus whatever
    was bound, either on the logger or per task with :mod:`structlog.contextvars` (each trio
    task runs in its own copy of the context, so ``bind_contextvars`` in a request handler
    does not leak into its siblings). An exception passed as ``exc_info`` becomes an
    ``exception`` string field holding the formatted traceback.

``console``
    structlog's aligned, optionally coloured renderer, for people at a terminal. Colour
    follows ``colors=``; left at ``None``, the ``NO_COLOR`` environment variable (set and
    not empty) turns it off, ``FORCE_COLOR`` (set, not empty and not ``0``) on, and
    otherwise it is on when the output is a terminal (https://no-color.org).

Records of the standard library's :mod:`logging` (hypercorn's, httpx's, a user's) take the
same way out: a handler on the root logger formats them with structlog's
``ProcessorFormatter`` through the same renderer, into the same file, with ``logger`` set to
the stdlib logger's name and ``event`` to the message. The root logger's level becomes
``level``; handlers added by others stay. Reconfiguring replaces the handler. The HTTP
client libraries (``httpx``, ``httpcore``) log every request at INFO, which for the etcd
registry is a line per lease keep-alive: their loggers are set to WARNING unless the level
asked for is DEBUG (set their level after ``configure_logging`` to see them anyway).

Buffered output (``flush_interval=``): by default every record is flushed to its file as it
is written, one system call per record, which is what a reader following the file expects.
With ``flush_interval`` set, records to a binary file (a path, or a binary file object) are
only written into the file's buffer; a daemon thread flushes it every ``flush_interval``
seconds, and it is flushed when its buffer (64 KiB for a path) fills, on reconfiguration and
at exit. A log call then costs about a third less, for an access log a large share of a
call's cost; the price is that a process killed outright loses up to ``flush_interval``
seconds of records, and that a reader following the file sees them that much later.

Encoding uses :mod:`msgspec`, several times faster than :mod:`json`. A log call never fails
because of what was logged: values JSON cannot hold are written as their ``repr()``
(exceptions, arbitrary objects, non-string dict keys), ``bytes`` as base64 (msgspec's
lossless convention), and cyclic or otherwise unencodable structures are replaced piecewise
by safe text.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, BinaryIO, Final, Literal, TextIO, cast, final

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .._validate import check_optional_bool, check_seconds

__all__ = ["configure_logging"]

_FORMATS: Final = ("json", "console")
_LEVELS: Final[Mapping[str, int]] = {
    "critical": 50,
    "error": 40,
    "warning": 30,
    "info": 20,
    "debug": 10,
    "notset": 0,
}
# Nesting deeper than this is cut off in the (slow) fallback encoder.
_MAX_DEPTH: Final = 16

# The buffer of a file opened from a path with flush_interval set.
_BUFFER_SIZE: Final = 64 * 1024

# The file that the most recent configure_logging() opened itself (from a path), the thread
# flushing its output (flush_interval), and whether that configuration cached loggers; see
# _release_previous().
_owned_file: IO[bytes] | None = None
_flusher: _Flusher | None = None
_cached = False
# The root logger's handler that the most recent configure_logging() installed.
_stdlib_handler: logging.Handler | None = None


def configure_logging(
    *,
    format: Literal["json", "console"] = "json",  # noqa: A002 - the natural name; the shadowing is local
    file: str | os.PathLike[str] | IO[str] | IO[bytes] | None = None,
    level: str | int = "info",
    colors: bool | None = None,
    cache_logger_on_first_use: bool = False,
    flush_interval: float | None = None,
) -> None:
    """Configure structlog for JSON lines or for the console.

    Safe to call again: each call replaces the whole configuration, and a file that the
    previous call opened from a path is closed (unless that call cached loggers, see
    below).

    Args:
        format: ``"json"`` for one JSON object per line, ``"console"`` for people.
        file: Where records go: a path (opened for appending, in binary), an open text or
            binary file object, or ``None`` for :data:`sys.stdout` as it is at the time of
            this call.
        level: The lowest level that is written: ``"debug"``, ``"info"``, ``"warning"``,
            ``"error"``, ``"critical"`` (any case) or the matching :mod:`logging` number.
            Calls below it cost one attribute lookup.
        colors: Console format only: colour the output. ``None`` follows ``NO_COLOR`` and
            ``FORCE_COLOR`` when set, else colours it when ``file`` is a terminal.
        cache_logger_on_first_use: Let each logger keep its configuration after its first
            call. That makes log calls faster, but loggers already used then ignore later
            ``configure_logging`` calls, so leave it off in tests.
        flush_interval: ``None`` (default) flushes every record as it is written. A number
            of seconds buffers the records instead and flushes them at least that often
            from a daemon thread (see the module docs): for busy services, such as one
            writing an access log. Needs a path or a binary file.

    Raises:
        TypeError: ``format``, ``level``, ``colors``, ``file`` or ``flush_interval`` has
            the wrong type.
        ValueError: ``format`` or ``level`` is not one of the known values;
            ``flush_interval`` is not a positive finite number, or is given for a text
            stream (such as the default, :data:`sys.stdout`).
        OSError: ``file`` is a path that cannot be opened for appending.

    .. versionchanged:: 0.1 ``flush_interval``; records of :mod:`logging` through the same
       pipeline; ``NO_COLOR`` and ``FORCE_COLOR``.
    """
    global _owned_file, _flusher, _cached, _stdlib_handler  # one process-wide configuration

    if not isinstance(format, str):
        raise TypeError(f"format must be 'json' or 'console', got {format!r}")
    if format not in _FORMATS:
        raise ValueError(f"format must be 'json' or 'console', got {format!r}")
    min_level = _parse_level(level)
    check_optional_bool("colors", colors)
    if flush_interval is not None:
        flush_interval = check_seconds("flush_interval", flush_interval, finite=True)

    opened: IO[bytes] | None = None
    if file is None:
        stream: IO[str] | IO[bytes] = sys.stdout
    elif isinstance(file, str | os.PathLike):
        # kept open until reconfigured
        opened = stream = open(  # noqa: SIM115
            file, "ab", buffering=-1 if flush_interval is None else _BUFFER_SIZE
        )
    elif callable(getattr(file, "write", None)):
        stream = file
    else:
        raise TypeError(f"file must be a path, a file object or None, got {file!r}")
    binary = _is_binary(stream)
    if flush_interval is not None and not binary:
        if opened is not None:  # pragma: no cover - a path always opens in binary
            opened.close()
        raise ValueError(
            f"flush_interval needs a path or a binary file to buffer, got the text stream "
            f"{stream!r}"
        )

    processors: list[Processor] = [structlog.contextvars.merge_contextvars]
    renderer: Processor
    if format == "json":
        renderer = _JSONLine(as_bytes=False)
        processors.append(_JSONLine(as_bytes=binary))
    else:
        processors += [
            structlog.processors.add_log_level,
            _add_logger_name,
            _UTCTimeStamper(),
            structlog.processors.StackInfoRenderer(),
        ]
        if colors is None:
            colors = _colors_from_environment(stream)
        # ConsoleRenderer formats exc_info itself (and warns when format_exc_info ran).
        renderer = console = structlog.dev.ConsoleRenderer(colors=colors)
        processors.append(_EncodeUTF8(console) if binary else console)

    logger_factory: Callable[..., WrappedLogger]
    if flush_interval is not None:
        logger_factory = _NamedLoggerFactory(_BufferedBytesLogger, stream)
    elif binary:
        logger_factory = _NamedLoggerFactory(_NamedBytesLogger, stream)
    else:
        logger_factory = _NamedLoggerFactory(_NamedWriteLogger, stream)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=logger_factory,
        cache_logger_on_first_use=cache_logger_on_first_use,
    )
    _release_previous()
    flusher = None
    if flush_interval is not None:
        flusher = _Flusher(cast("BinaryIO", stream), flush_interval)
    _owned_file, _flusher, _cached = opened, flusher, cache_logger_on_first_use
    # The JSON renderer adds the level and the time itself; the console one needs them.
    pre_chain: list[Processor] = [structlog.contextvars.merge_contextvars]
    pre_chain.append(structlog.stdlib.add_logger_name)
    if format == "console":
        pre_chain += [structlog.stdlib.add_log_level, _UTCTimeStamper()]
    _stdlib_handler = _route_stdlib_logging(
        pre_chain, renderer, stream, binary=binary, flush=flush_interval is None, level=min_level
    )


def _colors_from_environment(stream: object) -> bool:
    """``colors=None``: NO_COLOR (not empty) off, FORCE_COLOR (not empty, not 0) on, else
    on when ``stream`` is a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "0") not in ("", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def _route_stdlib_logging(
    pre_chain: list[Processor],
    renderer: Processor,
    stream: IO[Any],
    *,
    binary: bool,
    flush: bool,
    level: int,
) -> logging.Handler:
    """Replace our root-logger handler with one rendering :mod:`logging` records like
    structlog's (see the module docs); return it."""
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
    handler = _StdlibHandler(stream, binary=binary, flush=flush)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
    return handler


# Libraries logging a line per HTTP request at INFO (see the module docs).
_CHATTY_LOGGERS: Final = ("httpx", "httpcore")


class _StdlibHandler(logging.Handler):
    """Writes each formatted :mod:`logging` record as one line to a text or binary file,
    flushing it unless the file is buffered (``flush_interval``)."""

    def __init__(self, stream: IO[Any], *, binary: bool, flush: bool) -> None:
        super().__init__()
        self._stream = stream
        self._binary = binary
        self._flush = flush

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` and write it; a failure goes to :meth:`handleError`. A record
        for a file closed since (a test's captured stdout) is dropped quietly."""
        if getattr(self._stream, "closed", False):
            return
        try:
            line = self.format(record) + "\n"
            self._stream.write(line.encode("utf-8", "backslashreplace") if self._binary else line)
            if self._flush:
                self._stream.flush()
        except Exception:
            self.handleError(record)


def _release_previous() -> None:
    # Loggers cached by the previous configuration still write to its file, so closing
    # it (or no longer flushing it) under them would lose their records; keep it then.
    if _cached:
        return
    if _flusher is not None:
        _flusher.stop()
    if _owned_file is not None:
        _owned_file.close()


@final
class _Flusher:
    """A daemon thread that flushes one binary file every ``interval`` seconds; ``stop``
    (also run at exit) ends it and flushes once more.

    ``BufferedWriter`` locks internally, so flushing from this thread while the event loop's
    thread writes records is safe.
    """

    __slots__ = ("__weakref__", "_file", "_interval", "_stopped", "_thread")

    def __init__(self, file: BinaryIO, interval: float) -> None:
        self._file = file
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="trio_micro.observe log flusher", daemon=True
        )
        self._thread.start()
        atexit.register(self.stop)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            if not self._flush():
                return

    def _flush(self) -> bool:
        try:
            self._file.flush()
        except (OSError, ValueError):  # closed under us, or the disk is full: give up
            return False
        return True

    def stop(self) -> None:
        """Stop the thread and flush what is buffered (synchronous; idempotent)."""
        atexit.unregister(self.stop)
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._flush()


@final
class _BufferedBytesLogger:
    """Writes each record into a binary file's buffer without flushing it (see _Flusher)."""

    __slots__ = ("_write", "name")

    def __init__(self, file: BinaryIO, name: str | None) -> None:
        self._write = file.write
        self.name = name

    def msg(self, message: bytes) -> None:
        """Append ``message`` and a newline to the buffer."""
        self._write(message + b"\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _parse_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, str | int):
        raise TypeError(f"level must be a level name or number, got {level!r}")
    if isinstance(level, str):
        try:
            return _LEVELS[level.lower()]
        except KeyError:
            raise ValueError(
                f"level must be one of {', '.join(_LEVELS)} (any case), got {level!r}"
            ) from None
    if level not in _LEVELS.values():
        raise ValueError(
            f"level must be one of {sorted(_LEVELS.values())} as a number, got {level!r}"
        )
    return level


def _is_binary(stream: object) -> bool:
    if isinstance(stream, io.TextIOBase):
        return False
    if isinstance(stream, io.RawIOBase | io.BufferedIOBase):
        return True
    return "b" in str(getattr(stream, "mode", ""))


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``logger`` from the name given to ``structlog.get_logger(name)``, if any."""
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


@final
class _UTCTimeStamper:
    """Add ``timestamp``: ISO-8601 in UTC, as ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2025-01-02T03:04:05.678901Z``; no fraction at a whole second), but formatting the
    date and time only once per second instead of for every record."""

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        # (second, its formatted date and time) in one attribute: threads that log (e.g.
        # trio.to_thread workers) may race to replace it, never see half of it.
        self._cached = (-1, "")

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["timestamp"] = self.now()
        return event_dict

    def now(self) -> str:
        """The current time, formatted."""
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        micros = nanos // 1000
        return f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"


@final
class _EncodeUTF8:
    """Run a renderer that returns ``str`` and encode its output, for binary files."""

    __slots__ = ("_renderer",)

    def __init__(self, renderer: Callable[[WrappedLogger, str, EventDict], str]) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
        return self._renderer(logger, method_name, event_dict).encode("utf-8", "backslashreplace")


class _NamedWriteLogger(structlog.WriteLogger):
    """A :class:`structlog.WriteLogger` that remembers its name."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _NamedBytesLogger(structlog.BytesLogger):
    """A :class:`structlog.BytesLogger` that remembers its name (only structlog >= 26.1's
    ``BytesLoggerFactory`` passes the name on; we support older releases too)."""

    def __init__(self, file: BinaryIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


@final
class _NamedLoggerFactory:
    """A logger factory for loggers made as ``logger(file, name)``, ``name`` being what was
    given to ``structlog.get_logger(name)``: what ``structlog.BytesLoggerFactory`` does."""

    __slots__ = ("_file", "_logger")

    def __init__(self, logger: Callable[[Any, str | None], WrappedLogger], file: IO[Any]) -> None:
        self._logger = logger
        self._file = file

    def __call__(self, *args: Any) -> WrappedLogger:
        return self._logger(self._file, args[0] if args else None)


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the log call
        return f"<{type(obj).__qualname__} object; repr() failed: {type(exc).__name__}>"


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_safe_repr)


@final
class _JSONLine:
    """Render the event dict as one JSON line with msgspec, never failing.

    One processor doing what ``add_log_level``, adding ``logger``, the UTC ISO timestamp,
    ``StackInfoRenderer`` and ``format_exc_info`` would, then the rendering: a record
    costs a few processor calls less (an access log writes one for every call).
    """

    __slots__ = ("_as_bytes", "_stack", "_stamp")

    def __init__(self, *, as_bytes: bool) -> None:
        self._as_bytes = as_bytes
        self._stamp = _UTCTimeStamper()
        self._stack = structlog.processors.StackInfoRenderer(additional_ignores=[__name__])

    def __call__(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> bytes | str:
        if "stack_info" in event_dict:
            event_dict = self._stack(logger, method_name, event_dict)
        if "exc_info" in event_dict:
            event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
        # The fixed keys first, so that lines read well in `tail -f`; timestamp and level
        # replace any bound under those names, a bound logger name wins. The filtering
        # bound logger passes the level's name already ("warning" for warn(), "error"
        # for exception()), so method_name needs no mapping as add_log_level does.
        ordered: dict[str, Any] = {"timestamp": self._stamp.now()}
        event_dict.pop("timestamp", None)
        ordered["level"] = method_name
        event_dict.pop("level", None)
        if "logger" in event_dict:
            ordered["logger"] = event_dict.pop("logger")
        else:
            name = getattr(logger, "name", None)
            if name is not None:
                ordered["logger"] = name
        if "event" in event_dict:
            ordered["event"] = event_dict.pop("event")
        ordered.update(event_dict)
        try:
            line = _ENCODER.encode(ordered)
        except Exception:  # cycles, bad surrogates, a raising __repr__ deep inside, ...
            line = _ENCODER.encode(_sanitize(ordered, _MAX_DEPTH, set()))
        return line if self._as_bytes else line.decode("utf-8")


def _sanitize(obj: object, depth: int, seen: set[int]) -> object:
    """Rebuild ``obj`` from JSON-safe parts: the slow path after msgspec gave up."""
    if obj is None or isinstance(obj, bool | int | float | bytes | bytearray):
        return obj
    if isinstance(obj, str):
        return _clean_str(obj)
    if isinstance(obj, dict | list | tuple | set | frozenset):
        if depth <= 0 or id(obj) in seen:
            return _safe_repr_short(obj)
        seen.add(id(obj))
        try:
            if isinstance(obj, dict):
                return {
                    _clean_str(k if isinstance(k, str) else _safe_repr(k)): _sanitize(
                        v, depth - 1, seen
                    )
                    for k, v in obj.items()
                }
            return [_sanitize(item, depth - 1, seen) for item in obj]
        finally:
            seen.discard(id(obj))
    return _clean_str(_safe_repr(obj))


def _clean_str(text: str) -> str:
    # Lone surrogates are the one thing in a str that UTF-8 (and so msgspec) rejects.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_repr_short(obj: object) -> str:
    return f"<{type(obj).__qualname__} nested too deeply or cyclic>"
