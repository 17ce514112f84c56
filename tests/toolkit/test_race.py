"""Tests for ``first_completed`` (trio_micro.toolkit._race)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_micro.toolkit import first_completed


class Racer:
    """Sleeps ``seconds``, then returns ``value`` or raises ``error``; records its fate."""

    def __init__(self, seconds: float, value: object = None, error: Exception | None = None):
        self.seconds = seconds
        self.value = value
        self.error = error
        self.cancelled = False
        self.finished = False

    async def __call__(self) -> Any:
        try:
            await trio.sleep(self.seconds)
        except trio.Cancelled:
            self.cancelled = True
            raise
        self.finished = True
        if self.error is not None:
            raise self.error
        return self.value


async def test_the_first_result_is_returned_and_the_others_are_cancelled(
    autojump_clock: Any,
) -> None:
    slow, fast, slower = Racer(2, "slow"), Racer(1, "fast"), Racer(3, "slower")
    assert await first_completed(slow, fast, slower) == "fast"
    assert trio.current_time() == 1
    assert slow.cancelled
    assert slower.cancelled


async def test_a_single_function_is_simply_awaited() -> None:
    assert await first_completed(Racer(0, 42)) == 42


async def test_an_exception_that_finishes_first_is_raised_as_is(autojump_clock: Any) -> None:
    failing, slow = Racer(1, error=KeyError("boom")), Racer(2, "late")
    with pytest.raises(KeyError, match="boom"):
        await first_completed(slow, failing)
    assert slow.cancelled


async def test_an_exception_after_the_first_result_is_dropped(autojump_clock: Any) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("cleanup failed")

    assert await first_completed(fails_when_cancelled, Racer(1, "ok")) == "ok"


async def test_cancelling_the_caller_cancels_every_function(autojump_clock: Any) -> None:
    first, second = Racer(5), Racer(6)
    with trio.move_on_after(1) as scope:
        await first_completed(first, second)
    assert scope.cancelled_caught
    assert first.cancelled
    assert second.cancelled


async def test_no_function_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one function"):
        await first_completed()


async def test_a_non_callable_is_a_type_error_and_nothing_runs() -> None:
    racer = Racer(0, 1)
    with pytest.raises(TypeError, match=r"fns\[1\]"):
        await first_completed(racer, "not a function")  # type: ignore[arg-type]
    assert not racer.finished
