"""Checks of the options that ``trio-micro serve -o name=value`` gives an example's ``open``."""

from __future__ import annotations

import argparse
from contextlib import suppress

__all__ = ["positive_int", "positive_seconds", "seconds", "whole_number"]


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


def whole_number(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        return positive_int("value", text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        return positive_seconds("value", text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds > 0, got {text!r}"
        ) from None
