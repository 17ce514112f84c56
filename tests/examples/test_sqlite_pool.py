"""examples/sqlite_pool.py: opening a database that other processes are opening too."""

from __future__ import annotations

import sqlite3

import pytest

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
