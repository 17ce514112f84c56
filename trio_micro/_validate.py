"""Argument checks shared by the public API.

Each ``check_*`` function takes the parameter's name and the value a caller passed,
returns the value (narrowed to its type) when it is acceptable, and otherwise raises
``TypeError`` (wrong type) or ``ValueError`` (right type, bad value) with a message
that names the parameter and shows the value with ``!r``. ``bool`` is never accepted
where a number is expected: it is an ``int`` subclass, but ``limit=True`` is always a
mistake. Checks specific to one module (``n <= burst``, power-of-two sizes, ...) stay
in that module, built on these.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import msgspec

__all__ = [
    "ENCODE_ERRORS",
    "cannot_encode",
    "check_bool",
    "check_callable",
    "check_encodable",
    "check_int",
    "check_number",
    "check_optional_bool",
    "check_optional_int",
    "check_seconds",
    "check_str_mapping",
]


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) and ``>= minimum`` (when given)."""
    return _check_int(name, value, minimum, "an int")


def check_optional_int(name: str, value: object, *, minimum: int | None = None) -> int | None:
    """Like :func:`check_int`, but ``None`` is accepted and returned as is."""
    if value is None:
        return None
    return _check_int(name, value, minimum, "an int or None")


def _check_int(name: str, value: object, minimum: int | None, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    finite: bool = True,
    unit: str | None = None,
    zero: bool = False,
) -> float:
    """Return ``value`` as a float if it is an int or float (not a bool) and > 0.

    NaN is always rejected, infinity unless ``finite`` is false; 0 only if ``zero`` is
    true. ``unit`` (e.g. ``"tokens per second"``) is shown in parentheses in the messages.
    """
    suffix = f" ({unit})" if unit else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be an int or float{suffix}, got {value!r}")
    # `not value > 0` is also true for NaN.
    if not (value >= 0 if zero else value > 0) or (finite and math.isinf(value)):
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind} {'>=' if zero else '>'} 0{suffix}, got {value!r}")
    return float(value)


def check_seconds(name: str, value: object, *, finite: bool = False) -> float:
    """Return ``value`` as a float if it is a duration in seconds: > 0, not NaN.

    Infinity is accepted ("never") unless ``finite`` is true.
    """
    return check_number(name, value, finite=finite, unit="seconds")


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_optional_bool(name: str, value: object) -> bool | None:
    """Return ``value`` if it is a bool or ``None``."""
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"{name} must be a bool or None, got {value!r}")


def check_callable(
    name: str, value: object, *, expected: str = "a callable"
) -> Callable[..., object]:
    """Return ``value`` if it is callable; ``expected`` describes it in the message."""
    if not callable(value):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    return value


T = TypeVar("T")

_encode: Final = msgspec.msgpack.Encoder().encode

#: What msgspec's encoders raise for a value they can't encode: an unsupported type
#: (``TypeError``), an int outside msgpack's 64 bits (``OverflowError``), a str holding a
#: lone surrogate (``UnicodeEncodeError``, a ``ValueError``). Catch this around an
#: ``encode`` (free until it raises) and raise :func:`cannot_encode`.
ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError)


def cannot_encode(name: str, value: object, exc: BaseException) -> TypeError:
    """The ``TypeError`` for a ``value`` msgpack can't encode; ``exc`` is what the encoder
    raised (one of :data:`ENCODE_ERRORS`), ``name`` says what the value is."""
    return TypeError(f"cannot encode the {name} {reprlib.repr(value)}: {exc}")


def check_encodable(name: str, value: T) -> T:
    """Return ``value`` if msgpack can encode it (the request of an untyped call, checked
    before anything is sent); ``TypeError`` otherwise, also for an int msgpack has no room
    for. Encodes it once to find out."""
    try:
        _encode(value)
    except ENCODE_ERRORS as exc:
        raise cannot_encode(name, value, exc) from None
    return value


def check_str_mapping(name: str, value: object) -> dict[str, str]:
    """Return a copy of ``value`` as a dict if it maps str to str; ``None`` gives ``{}``.

    The one check of request metadata, registry metadata, metric labels and error
    details.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str or None, got {value!r}")
    copied = dict(value)
    for key, item in copied.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"{name} must map str to str, got {key!r}: {item!r} in {value!r}")
    return copied
