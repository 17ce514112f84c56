"""open_background_nursery: the body's own exception comes out unwrapped, background
failures stay visible."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_micro import open_background_nursery


class BodyError(Exception):
    pass


async def raise_beside_a_sleeping_task(exc: BaseException) -> None:
    async with open_background_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        raise exc


async def test_body_error_comes_out_unwrapped() -> None:
    with pytest.raises(BodyError, match="body"):
        await raise_beside_a_sleeping_task(BodyError("body"))


async def test_keyboard_interrupt_from_the_body_comes_out_unwrapped() -> None:
    with pytest.raises(KeyboardInterrupt):
        await raise_beside_a_sleeping_task(KeyboardInterrupt())


async def test_cancelled_body_comes_out_as_cancelled_and_is_absorbed_by_its_scope() -> None:
    seen: list[BaseException] = []
    with trio.CancelScope() as scope:
        try:
            async with open_background_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                scope.cancel()
                await trio.sleep_forever()
        except BaseException as exc:
            seen.append(exc)
            raise
    assert scope.cancelled_caught
    assert [type(exc) for exc in seen] == [trio.Cancelled]


async def test_background_failure_alone_stays_a_group() -> None:
    async def fail() -> None:
        raise ValueError("background")

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="background")):
        async with open_background_nursery() as nursery:
            nursery.start_soon(fail)
            await trio.sleep_forever()


async def test_body_and_background_failing_together_come_out_as_one_group() -> None:
    async def fail_after_the_body_raised() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("background")

    with pytest.RaisesGroup(BodyError, ValueError):
        async with open_background_nursery() as nursery:
            nursery.start_soon(fail_after_the_body_raised)
            await trio.testing.wait_all_tasks_blocked()
            raise BodyError("body")


async def raise_during_handling() -> None:
    async with open_background_nursery():
        try:
            raise KeyError("first")
        except KeyError:
            raise BodyError("second")  # noqa: B904 -- the implicit context is the point


async def test_unwrapped_error_keeps_its_context_and_traceback() -> None:
    with pytest.raises(BodyError) as info:
        await raise_during_handling()
    assert isinstance(info.value.__context__, KeyError)
    assert info.traceback[-1].name == "raise_during_handling"


async def test_a_group_the_body_raised_itself_is_not_unwrapped_further() -> None:
    with pytest.RaisesGroup(BodyError, BodyError):
        async with open_background_nursery():
            raise ExceptionGroup("mine", [BodyError("a"), BodyError("b")])


async def test_no_error_means_nothing_raised_and_background_tasks_finish() -> None:
    done: list[str] = []

    async def work() -> None:
        await trio.lowlevel.checkpoint()
        done.append("work")

    async with open_background_nursery() as nursery:
        nursery.start_soon(work)
    assert done == ["work"]


async def fail_once_cancelled() -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError("background")


@pytest.mark.parametrize("body_error", [KeyboardInterrupt(), SystemExit(3), BodyError("body")])
async def test_any_body_error_with_a_background_failure_keeps_both_in_a_group(
    body_error: BaseException,
) -> None:
    with pytest.RaisesGroup(type(body_error), ValueError):
        async with open_background_nursery() as nursery:
            nursery.start_soon(fail_once_cancelled)
            await trio.testing.wait_all_tasks_blocked()
            raise body_error
