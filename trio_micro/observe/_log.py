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
    structlog's aligned, optionally coloured renderer, for people at a terminal.

Encoding uses :mod:`msgspec`, several times faster than :mod:`json`. A log call never fails
because of what was logged: values JSON cannot hold are written as their ``repr()``
(exceptions, arbitrary objects, non-string dict keys), ``bytes`` as base64 (msgspec's
lossless convention), and cyclic or otherwise unencodable structures are replaced piecewise
by safe text.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, BinaryIO, Final, Literal, TextIO, cast, final

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .._validate import check_optional_bool

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
_FIRST_KEYS: Final = ("timestamp", "level", "logger", "event")
# Nesting deeper than this is cut off in the (slow) fallback encoder.
_MAX_DEPTH: Final = 16

# The file that the most recent configure_logging() opened itself (from a path), and
# whether that configuration cached loggers; see _release_owned_file().
_owned_file: IO[bytes] | None = None
_owned_file_cached = False


def configure_logging(
    *,
    format: Literal["json", "console"] = "json",  # noqa: A002 - the natural name; the shadowing is local
    file: str | os.PathLike[str] | IO[str] | IO[bytes] | None = None,
    level: str | int = "info",
    colors: bool | None = None,
    cache_logger_on_first_use: bool = False,
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
        colors: Console format only: colour the output. ``None`` colours it when ``file``
            is a terminal.
        cache_logger_on_first_use: Let each logger keep its configuration after its first
            call. That makes log calls faster, but loggers already used then ignore later
            ``configure_logging`` calls, so leave it off in tests.

    Raises:
        TypeError: ``format``, ``level``, ``colors`` or ``file`` has the wrong type.
        ValueError: ``format`` or ``level`` is not one of the known values.
        OSError: ``file`` is a path that cannot be opened for appending.
    """
    global _owned_file, _owned_file_cached  # one process-wide configuration

    if not isinstance(format, str):
        raise TypeError(f"format must be 'json' or 'console', got {format!r}")
    if format not in _FORMATS:
        raise ValueError(f"format must be 'json' or 'console', got {format!r}")
    min_level = _parse_level(level)
    check_optional_bool("colors", colors)

    opened: IO[bytes] | None = None
    if file is None:
        stream: IO[str] | IO[bytes] = sys.stdout
    elif isinstance(file, str | os.PathLike):
        opened = stream = open(file, "ab")  # noqa: SIM115 - kept open until reconfigured
    elif callable(getattr(file, "write", None)):
        stream = file
    else:
        raise TypeError(f"file must be a path, a file object or None, got {file!r}")
    binary = _is_binary(stream)

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if format == "json":
        processors += [structlog.processors.format_exc_info, _JSONRenderer(as_bytes=binary)]
    else:
        if colors is None:
            isatty = getattr(stream, "isatty", None)
            colors = bool(callable(isatty) and isatty())
        # ConsoleRenderer formats exc_info itself (and warns when format_exc_info ran).
        console = structlog.dev.ConsoleRenderer(colors=colors)
        processors.append(_EncodeUTF8(console) if binary else console)

    logger_factory: Callable[..., WrappedLogger]
    if binary:
        logger_factory = structlog.BytesLoggerFactory(cast("BinaryIO", stream))
    else:
        logger_factory = _NamedWriteLoggerFactory(cast("TextIO", stream))

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=logger_factory,
        cache_logger_on_first_use=cache_logger_on_first_use,
    )
    _release_owned_file()
    _owned_file, _owned_file_cached = opened, cache_logger_on_first_use


def _release_owned_file() -> None:
    # Loggers cached by the previous configuration still write to its file, so closing
    # it under them would make their log calls fail; keep it open in that case.
    if _owned_file is not None and not _owned_file_cached:
        _owned_file.close()


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
class _EncodeUTF8:
    """Run a renderer that returns ``str`` and encode its output, for binary files."""

    __slots__ = ("_renderer",)

    def __init__(self, renderer: Callable[[WrappedLogger, str, EventDict], str]) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
        return self._renderer(logger, method_name, event_dict).encode("utf-8", "backslashreplace")


class _NamedWriteLogger(structlog.WriteLogger):
    """A :class:`structlog.WriteLogger` that remembers its name, like ``BytesLogger``."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


@final
class _NamedWriteLoggerFactory:
    __slots__ = ("_file",)

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, args[0] if args else None)


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the log call
        return f"<{type(obj).__qualname__} object; repr() failed: {type(exc).__name__}>"


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_safe_repr)


@final
class _JSONRenderer:
    """Render the event dict as one JSON line with msgspec, never failing."""

    __slots__ = ("_as_bytes",)

    def __init__(self, *, as_bytes: bool) -> None:
        self._as_bytes = as_bytes

    def __call__(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> bytes | str:
        # The fixed keys first, so that lines read well in `tail -f`.
        ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
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
