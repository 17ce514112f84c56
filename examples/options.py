"""Checks of the options that ``trio-micro serve -o name=value`` gives an example's ``open``."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

__all__ = [
    "argument_type",
    "count",
    "positive_int",
    "positive_seconds",
    "seconds",
    "share",
    "whole_number",
]

T = TypeVar("T")


def positive_int(name: str, value: object) -> int:
    """``value`` (an int, or a string from ``-o name=value``) as an int >= 1.

    Raises:
        ValueError: Anything else; the message names the option and shows the value.
    """
    number = value
    if isinstance(value, str):
        with suppress(ValueError):
            number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return number


def positive_seconds(name: str, value: object) -> float:
    """``value`` (a number, or a string from ``-o``) as a finite number of seconds > 0.

    Raises:
        ValueError: Anything else; the message names the option and shows the value.
    """
    number = value
    if isinstance(value, str):
        with suppress(ValueError):
            number = float(value)
    if (
        isinstance(number, bool)
        or not isinstance(number, int | float)
        or not 0 < number < float("inf")
    ):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(number)


def argument_type(
    convert: Callable[[str], T], valid: Callable[[T], bool], expected: str
) -> Callable[[str], T]:
    """An argparse ``type=``: ``convert(text)``, refused with "expected EXPECTED, got
    'TEXT'" when it raises ``ValueError`` or the value is not ``valid``."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: argparse types: an int >= 1, an int >= 0, seconds > 0 (finite), a share in [0, 1].
whole_number = argument_type(int, lambda n: n >= 1, "an integer >= 1")
count = argument_type(int, lambda n: n >= 0, "an integer >= 0")
seconds = argument_type(float, lambda s: 0 < s < math.inf, "a number of seconds > 0")
share = argument_type(float, lambda s: 0 <= s <= 1, "a share between 0 and 1")
