"""The shared argument checks in ``trio_micro._validate``."""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable
from typing import Any

import pytest

from trio_micro._validate import (
    check_bool,
    check_callable,
    check_int,
    check_number,
    check_optional_bool,
    check_optional_int,
    check_seconds,
    check_str_mapping,
)

Check = Callable[..., object]


@pytest.mark.parametrize(
    ("check", "value", "kwargs", "expected"),
    [
        (check_int, 0, {}, 0),
        (check_int, -7, {}, -7),
        (check_int, 1, {"minimum": 1}, 1),
        (check_int, 10**30, {"minimum": 0}, 10**30),
        (check_optional_int, None, {"minimum": 1}, None),
        (check_optional_int, 5, {"minimum": 5}, 5),
        (check_number, 2, {}, 2.0),
        (check_number, 0.001, {"unit": "tokens per second"}, 0.001),
        (check_number, math.inf, {"finite": False}, math.inf),
        (check_number, 0, {"zero": True}, 0.0),
        (check_seconds, 1, {}, 1.0),
        (check_seconds, math.inf, {}, math.inf),
        (check_seconds, 0.25, {"finite": True}, 0.25),
        (check_bool, False, {}, False),
        (check_optional_bool, True, {}, True),
        (check_optional_bool, None, {}, None),
        (check_callable, len, {}, len),
        (check_str_mapping, None, {}, {}),
        (check_str_mapping, {"a": "1"}, {}, {"a": "1"}),
        (check_str_mapping, types.MappingProxyType({"": ""}), {}, {"": ""}),
    ],
)
def test_accepted_values_are_returned(
    check: Check, value: object, kwargs: dict[str, Any], expected: object
) -> None:
    result = check("x", value, **kwargs)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("check", "value", "kwargs", "error", "message"),
    [
        # Wrong type; bool is never a number.
        (check_int, 1.0, {}, TypeError, "x must be an int, got 1.0"),
        (check_int, "3", {}, TypeError, "x must be an int, got '3'"),
        (check_int, True, {}, TypeError, "x must be an int, got True"),
        (check_int, None, {}, TypeError, "x must be an int, got None"),
        (check_optional_int, False, {}, TypeError, "x must be an int or None, got False"),
        (check_optional_int, 2.5, {}, TypeError, "x must be an int or None, got 2.5"),
        (check_number, "1", {}, TypeError, "x must be an int or float, got '1'"),
        (check_number, True, {"unit": "hz"}, TypeError, "x must be an int or float (hz), got True"),
        (check_seconds, "5s", {}, TypeError, "x must be an int or float (seconds), got '5s'"),
        (check_seconds, None, {}, TypeError, "x must be an int or float (seconds), got None"),
        (check_bool, 1, {}, TypeError, "x must be a bool, got 1"),
        (check_bool, None, {}, TypeError, "x must be a bool, got None"),
        (check_optional_bool, "yes", {}, TypeError, "x must be a bool or None, got 'yes'"),
        (check_callable, 42, {}, TypeError, "x must be a callable, got 42"),
        (check_callable, "f", {"expected": "an async callable"}, TypeError, "async callable"),
        (check_str_mapping, [("a", "1")], {}, TypeError, "x must be a mapping of str to str or"),
        (check_str_mapping, {"a": 1}, {}, TypeError, "x must map str to str, got 'a': 1 in {'a"),
        (check_str_mapping, {1: "a"}, {}, TypeError, "x must map str to str, got 1: 'a' in {1"),
        # Right type, bad value.
        (check_int, 0, {"minimum": 1}, ValueError, "x must be >= 1, got 0"),
        (check_int, -1, {"minimum": 0}, ValueError, "x must be >= 0, got -1"),
        (check_number, -0.5, {"zero": True}, ValueError, "x must be a finite number >= 0"),
        (check_optional_int, 4, {"minimum": 5}, ValueError, "x must be >= 5, got 4"),
        (check_number, 0, {}, ValueError, "x must be a finite number > 0, got 0"),
        (check_number, -1.5, {}, ValueError, "x must be a finite number > 0, got -1.5"),
        (check_number, math.nan, {}, ValueError, "got nan"),
        (check_number, math.nan, {"finite": False}, ValueError, "x must be a number > 0, got nan"),
        (check_number, math.inf, {}, ValueError, "x must be a finite number > 0, got inf"),
        (check_number, -math.inf, {"finite": False}, ValueError, "got -inf"),
        (check_seconds, 0.0, {}, ValueError, "x must be a number > 0 (seconds), got 0.0"),
        (check_seconds, math.nan, {}, ValueError, "got nan"),
        (check_seconds, math.inf, {"finite": True}, ValueError, "finite number > 0 (seconds)"),
    ],
)
def test_rejected_values_are_named_and_shown(
    check: Check, value: object, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        check("x", value, **kwargs)


def test_int_subclasses_other_than_bool_are_accepted() -> None:
    class Count(int):
        pass

    assert check_int("x", Count(3), minimum=1) == 3


def test_str_mapping_is_copied() -> None:
    original = {"a": "1"}
    copied = check_str_mapping("x", original)
    original["a"] = "2"
    assert copied == {"a": "1"}
