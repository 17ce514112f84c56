"""examples/sqlite_pool.py: opening a database that other processes are opening too, and
the fair thread slots."""

from __future__ import annotations

import sqlite3

import pytest
import trio
import trio.testing

from examples import sqlite_pool


def test_a_locked_step_is_tried_again_until_it_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_pool.time, "sleep", lambda seconds: None)
    calls = []

    def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")

    sqlite_pool._while_locked(step)
    assert len(calls) == 3


def test_other_errors_are_raised_at_once() -> None:
    calls = []

    def step() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: users")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        sqlite_pool._while_locked(step)
    assert len(calls) == 1


def test_a_lock_held_too_long_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(sqlite_pool.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sqlite_pool.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + 1))

    def step() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_pool._while_locked(step)
    assert now[0] >= sqlite_pool._LOCKED_FOR_AT_MOST


# --- fair slots: connections take turns, whatever their backlog (issue #15) -------------


async def _hold(slots: sqlite_pool.FairSlots, key: str, order: list[str], go: trio.Event) -> None:
    await slots.acquire(key)
    order.append(key)
    await go.wait()
    slots.release()


async def test_a_freed_slot_goes_to_the_waiting_keys_in_turn() -> None:
    slots = sqlite_pool.FairSlots(1)
    order: list[str] = []
    go = trio.Event()
    go.set()
    await slots.acquire("first")
    async with trio.open_nursery() as nursery:
        for key in ["flood"] * 5 + ["good"]:  # the flood queued first
            nursery.start_soon(_hold, slots, key, order, go)
            await trio.testing.wait_all_tasks_blocked()
        slots.release()
    assert order == ["flood", "good", "flood", "flood", "flood", "flood"]
    assert slots.used == 0


async def test_a_waiter_cancelled_takes_no_slot() -> None:
    slots = sqlite_pool.FairSlots(1)
    await slots.acquire("a")
    with trio.move_on_after(0.01):
        await slots.acquire("b")
    slots.release()
    assert slots.used == 0
    await slots.acquire("c")  # at once: nothing was left queued
    assert slots.used == 1


def test_the_caller_key_outside_a_call_is_empty() -> None:
    assert sqlite_pool.FairSlots.caller() == ""
