from __future__ import annotations

from collections.abc import Awaitable

import pytest
import trio
import trio.testing

from trio_micro.toolkit import SingleFlight


class SlowSource:
    """A fake backend: each fetch takes one second and is counted."""

    def __init__(self, value: int = 42) -> None:
        self.value = value
        self.fetches = 0

    async def fetch(self) -> int:
        self.fetches += 1
        await trio.sleep(1)
        return self.value

    async def fetch_plus(self, extra: int) -> int:
        return await self.fetch() + extra


async def test_concurrent_calls_with_the_same_key_run_fn_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    results: list[int] = []

    async def caller() -> None:
        results.append(await flights.call("user:1", source.fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(caller)
    assert results == [42] * 100
    assert source.fetches == 1
    assert trio.current_time() == 1.0
    stats = flights.statistics()
    assert (stats.calls, stats.executions, stats.shared, stats.in_flight) == (100, 1, 99, 0)


async def test_positional_args_are_passed_to_fn(autojump_clock: trio.testing.MockClock) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    assert await flights.call("k", SlowSource().fetch_plus, 8) == 50


async def test_different_keys_do_not_share(autojump_clock: trio.testing.MockClock) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    first, second = SlowSource(1), SlowSource(2)
    results: dict[str, int] = {}

    async def caller(key: str, source: SlowSource) -> None:
        results[key] = await flights.call(key, source.fetch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "a", first)
        nursery.start_soon(caller, "b", second)
    assert results == {"a": 1, "b": 2}
    assert flights.statistics().executions == 2


async def test_exception_is_raised_in_every_caller_from_one_execution(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    fetches = 0
    caught: list[BaseException] = []

    async def failing_fetch() -> int:
        nonlocal fetches
        fetches += 1
        await trio.sleep(1)
        raise LookupError("no such user")

    async def caller() -> None:
        with pytest.raises(LookupError, match="no such user") as info:
            await flights.call("user:1", failing_fetch)
        caught.append(info.value)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller)
    assert fetches == 1
    assert len(caught) == 5
    assert all(exc is caught[0] for exc in caught)
    assert flights.statistics().shared == 4


async def test_none_is_shared_like_any_value(autojump_clock: trio.testing.MockClock) -> None:
    flights: SingleFlight[str, int | None] = SingleFlight()
    results: list[int | None] = []

    async def nothing() -> int | None:
        await trio.sleep(1)
        return None

    async def caller() -> None:
        results.append(await flights.call("k", nothing))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
    assert results == [None] * 3
    assert flights.statistics().executions == 1


async def test_cancelled_follower_does_not_affect_the_others(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    results: list[tuple[str, int]] = []
    follower_scope = trio.CancelScope()

    async def caller(name: str) -> None:
        results.append((name, await flights.call("k", source.fetch)))

    async def cancelled_follower() -> None:
        with follower_scope:
            await caller("cancelled")

    nursery.start_soon(caller, "leader")
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(cancelled_follower)
    nursery.start_soon(caller, "follower")
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.5)
    follower_scope.cancel()
    await trio.sleep(1)
    assert follower_scope.cancelled_caught
    assert sorted(results) == [("follower", 42), ("leader", 42)]
    assert source.fetches == 1


async def test_cancelled_leader_hands_over_and_followers_get_a_value(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    results: list[tuple[int, int, float]] = []
    leader_scope = trio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await flights.call("k", source.fetch)

    async def follower(i: int) -> None:
        value = await flights.call("k", source.fetch)
        results.append((i, value, trio.current_time()))

    nursery.start_soon(leader)
    await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        nursery.start_soon(follower, i)
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.5)
    leader_scope.cancel()
    await trio.sleep(2)
    assert leader_scope.cancelled_caught
    # One follower took over at t=0.5 and ran fn again (documented), so all got 42 at 1.5.
    assert sorted(results) == [(0, 42, 1.5), (1, 42, 1.5), (2, 42, 1.5)]
    assert source.fetches == 2
    stats = flights.statistics()
    assert (stats.calls, stats.executions, stats.shared, stats.in_flight) == (4, 2, 2, 0)


async def test_cancelled_leader_without_followers_unregisters_the_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    with trio.move_on_after(0.5):
        await flights.call("k", source.fetch)
    assert flights.statistics().in_flight == 0
    assert await flights.call("k", source.fetch) == 42
    assert source.fetches == 2


async def test_finished_flight_is_forgotten_so_the_next_call_runs_fn_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    await flights.call("k", source.fetch)
    await flights.call("k", source.fetch)
    assert source.fetches == 2
    assert flights.statistics().shared == 0


async def test_forget_lets_the_next_call_start_a_new_flight(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    old, new = SlowSource(1), SlowSource(2)
    results: list[int] = []

    async def caller(source: SlowSource) -> None:
        results.append(await flights.call("k", source.fetch))

    nursery.start_soon(caller, old)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(caller, old)  # follows the old flight
    await trio.testing.wait_all_tasks_blocked()
    flights.forget("k")
    flights.forget("never-seen")  # unknown keys are ignored
    await trio.sleep(0.5)
    nursery.start_soon(caller, new)  # not coalesced with the old flight
    await trio.sleep(2)
    assert sorted(results) == [1, 1, 2]
    assert (old.fetches, new.fetches) == (1, 1)
    assert flights.statistics().in_flight == 0


async def test_a_forgotten_flight_that_ends_leaves_its_replacement_registered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    old, new = SlowSource(1), SlowSource(2)
    results: list[tuple[float, int]] = []

    async def caller(source: SlowSource) -> None:
        value = await flights.call("k", source.fetch)
        results.append((trio.current_time(), value))

    start = trio.current_time()
    nursery.start_soon(caller, old)  # t=0: the old flight, until t=1
    await trio.testing.wait_all_tasks_blocked()
    flights.forget("k")
    await trio.sleep(0.5)
    nursery.start_soon(caller, new)  # t=0.5: the new flight, until t=1.5
    await trio.sleep(0.7)  # t=1.2: the old flight has ended, the new one is still running
    assert flights.statistics().in_flight == 1
    nursery.start_soon(caller, new)  # joins the new flight: no third execution
    await trio.sleep(1)
    assert [(t - start, v) for t, v in results] == [(1, 1), (1.5, 2), (1.5, 2)]
    assert (old.fetches, new.fetches) == (1, 1)


async def test_statistics_count_waiting_followers_and_keys_in_flight(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    for _ in range(3):
        nursery.start_soon(flights.call, "k", source.fetch)
    await trio.testing.wait_all_tasks_blocked()
    stats = flights.statistics()
    assert (stats.calls, stats.executions, stats.in_flight, stats.tasks_waiting) == (3, 1, 1, 2)


async def test_followers_stop_counting_as_waiting_when_the_flight_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    source = SlowSource()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(flights.call, "k", source.fetch)
    assert flights.statistics().tasks_waiting == 0


async def test_a_follower_raises_with_the_traceback_of_where_fn_failed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def failing_fetch() -> int:
        await trio.sleep(1)
        raise LookupError("no such user")

    nursery.start_soon(lambda: _swallow(flights.call("k", failing_fetch)))
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(LookupError) as info:
        await flights.call("k", failing_fetch)
    assert "failing_fetch" in [entry.name for entry in info.traceback]


async def _swallow(call: Awaitable[int]) -> None:
    with pytest.raises(LookupError):
        await call


async def test_call_is_a_checkpoint_even_if_fn_is_not() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def instant() -> int:
        return 1

    with trio.testing.assert_checkpoints():
        assert await flights.call("k", instant) == 1


async def test_non_callable_fn_is_rejected_with_the_value() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    with (
        trio.testing.assert_no_checkpoints(),
        pytest.raises(TypeError, match=r"^fn must be an async function, got 'not a function'$"),
    ):
        await flights.call("k", "not a function")  # type: ignore[arg-type]


async def test_unhashable_key_is_a_type_error() -> None:
    flights: SingleFlight[list[int], int] = SingleFlight()  # type: ignore[type-var]

    async def instant() -> int:
        return 1

    with pytest.raises(TypeError, match="unhashable"):
        await flights.call([1], instant)
