"""WindowCounter: the sans-io sliding-window counter behind the rapid-reset guard."""

from __future__ import annotations

import math

import pytest

from trio_micro.protocol import WindowCounter


def test_trips_on_the_event_past_the_limit_within_one_window() -> None:
    guard = WindowCounter(limit=3, window=10.0)
    assert [guard.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert guard.record(9.9) is False
    assert guard.tripped


def test_events_spread_over_more_than_a_window_never_trip() -> None:
    guard = WindowCounter(limit=3, window=10.0)
    # One every 4 s, forever: each new event finds the oldest remembered one 12 s old.
    assert all(guard.record(t * 4.0) for t in range(10_000))
    assert len(guard) == 3  # memory bounded by the limit, not by the number of events


def test_stays_tripped() -> None:
    guard = WindowCounter(limit=1, window=1.0)
    guard.record(0.0)
    assert guard.record(0.5) is False
    assert guard.record(100.0) is False


@pytest.mark.parametrize(
    ("limit", "window"),
    [(0, 1.0), (True, 1.0), (1.5, 1.0), (1, 0.0), (1, -1.0), (1, math.inf), (1, "1")],
)
def test_bad_arguments(limit: object, window: object) -> None:
    with pytest.raises(ValueError, match=r"^(limit|window) must be"):
        WindowCounter(limit, window)  # type: ignore[arg-type]


def test_with_max_fraction_a_small_share_of_many_events_never_trips() -> None:
    # 10 cancels a second, each among 100 calls: 10%, far below a half.
    guard = WindowCounter(limit=3, window=10.0, max_fraction=0.5)
    assert all(guard.record(t * 0.1, out_of=(t + 1) * 10) for t in range(1_000))
    assert not guard.tripped


def test_with_max_fraction_a_flood_that_cancels_most_calls_trips() -> None:
    guard = WindowCounter(limit=3, window=10.0, max_fraction=0.5)
    # Every call cancelled: out_of grows by one per event.
    assert [guard.record(t * 0.1, out_of=t + 1) for t in range(3)] == [True, True, True]
    assert guard.record(0.3, out_of=4) is False


def test_with_max_fraction_trips_just_above_the_fraction() -> None:
    # 3 events among 5 calls since the oldest: 60% > 50%.
    guard = WindowCounter(limit=3, window=10.0, max_fraction=0.5)
    for t, total in ((0.0, 1), (0.1, 3), (0.2, 5)):
        assert guard.record(t, out_of=total)
    assert guard.record(0.3, out_of=6) is False


def test_with_max_fraction_stays_quiet_at_exactly_the_fraction() -> None:
    # 3 events among 6 calls since the oldest: exactly 50%, not above it.
    guard = WindowCounter(limit=3, window=10.0, max_fraction=0.5)
    for t, total in ((0.0, 1), (0.1, 3), (0.2, 5)):
        assert guard.record(t, out_of=total)
    assert guard.record(0.3, out_of=7)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, math.nan, True, "0.5"])
def test_bad_max_fraction(fraction: object) -> None:
    with pytest.raises(ValueError, match=r"^max_fraction must be"):
        WindowCounter(1, 1.0, fraction)  # type: ignore[arg-type]
