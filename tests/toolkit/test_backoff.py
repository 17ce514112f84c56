from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_micro.toolkit import Backoff


class BoundCapture(random.Random):
    """A generator that reports the upper bound it was asked for and returns it."""

    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        assert a == 0
        self.bounds.append(b)
        return b


def test_the_bound_grows_by_the_multiplier_up_to_the_maximum() -> None:
    rng = BoundCapture()
    backoff = Backoff(initial=1.0, maximum=10.0, multiplier=2.0, rng=rng)
    for _ in range(6):
        backoff.next_delay()
    assert rng.bounds == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_reset_starts_again_from_the_initial_bound() -> None:
    rng = BoundCapture()
    backoff = Backoff(initial=0.5, maximum=5.0, rng=rng)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    backoff.next_delay()
    assert rng.bounds == [0.5, 1.0, 0.5]


def test_delays_are_full_jitter_from_the_seeded_generator() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(7))
    expected = random.Random(7)
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == [expected.uniform(0, bound) for bound in (1.0, 2.0, 4.0, 8.0, 8.0)]


def test_delay_is_stateless() -> None:
    rng = BoundCapture()
    backoff = Backoff(initial=0.1, maximum=1.0, rng=rng)
    backoff.delay(3)
    assert rng.bounds == [pytest.approx(0.4)]
    assert backoff.attempt == 0


def test_a_huge_attempt_is_capped_at_the_maximum() -> None:
    assert Backoff(initial=0.1, maximum=5.0).bound(100_000) == 5.0


@given(
    initial=st.floats(min_value=1e-3, max_value=10),
    maximum=st.floats(min_value=1e-3, max_value=100),
    attempts=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_lies_in_zero_to_the_maximum(
    initial: float, maximum: float, attempts: int, seed: int
) -> None:
    backoff = Backoff(initial=initial, maximum=maximum, rng=random.Random(seed))
    for _ in range(attempts):
        assert 0 <= backoff.next_delay() <= maximum


async def test_a_retry_loop_sleeps_the_delays(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, rng=random.Random(3))
    expected = random.Random(3)
    start = trio.current_time()
    for _ in range(4):
        await trio.sleep(backoff.next_delay())
    total = sum(expected.uniform(0, bound) for bound in (1.0, 2.0, 4.0, 4.0))
    assert trio.current_time() - start == pytest.approx(total)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"initial": 0}, ValueError),
        ({"maximum": float("inf")}, ValueError),
        ({"multiplier": -1.0}, ValueError),
        ({"initial": "1"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Backoff(**kwargs)  # type: ignore[arg-type]
