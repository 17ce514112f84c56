from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import pytest
from ddsketch import DDSketch
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_micro.analysis import MIN_TRACKED, RELATIVE_ERROR, LatencySketch
from trio_micro.analysis._sketch import bucket_index

durations = st.floats(min_value=0, max_value=1e7, allow_nan=False)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0])


def exact_quantile(values: list[float], q: float) -> float:
    return sorted(values)[math.floor(q * (len(values) - 1))]


def within_bound(estimate: float, exact: float) -> bool:
    if exact < MIN_TRACKED:
        return estimate < MIN_TRACKED
    return abs(estimate - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9)


@given(st.lists(durations, min_size=1), quantiles)
def test_quantile_is_within_relative_error_of_exact_quantile(values: list[float], q: float) -> None:
    assert within_bound(LatencySketch(values).quantile(q), exact_quantile(values, q))


@given(st.lists(durations), st.lists(durations))
def test_merged_sketches_equal_one_sketch_of_all_values(a: list[float], b: list[float]) -> None:
    merged = LatencySketch(a)
    merged.merge(LatencySketch(b))
    assert merged == LatencySketch(a + b)


@given(st.lists(durations, min_size=1), st.lists(durations), quantiles)
def test_merged_quantiles_are_within_bound_of_exact(
    a: list[float], b: list[float], q: float
) -> None:
    merged = LatencySketch(a)
    merged.merge(LatencySketch(b))
    assert within_bound(merged.quantile(q), exact_quantile(a + b, q))


@given(st.lists(durations), st.lists(durations), st.lists(durations))
def test_merge_is_associative(a: list[float], b: list[float], c: list[float]) -> None:
    left = LatencySketch(a)
    left.merge(LatencySketch(b))
    left.merge(LatencySketch(c))
    bc = LatencySketch(b)
    bc.merge(LatencySketch(c))
    right = LatencySketch(a)
    right.merge(bc)
    assert left == right


@given(st.lists(durations), st.lists(durations))
def test_merge_is_commutative(a: list[float], b: list[float]) -> None:
    ab = LatencySketch(a)
    ab.merge(LatencySketch(b))
    ba = LatencySketch(b)
    ba.merge(LatencySketch(a))
    assert ab == ba


def test_count_min_max_and_mean_are_exact() -> None:
    sketch = LatencySketch([1.0, 2.0, 9.0])
    assert (sketch.count, sketch.min, sketch.max, sketch.mean) == (3, 1.0, 9.0, 4.0)


def test_memory_is_bounded_by_buckets_not_values() -> None:
    sketch = LatencySketch(1 + (i % 1000) / 1000 for i in range(100_000))
    assert len(sketch.bucket_counts()) <= 40  # values span one doubling: ~35 buckets


def test_negative_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        LatencySketch().add(-1.0)


def test_quantile_of_empty_sketch_raises() -> None:
    with pytest.raises(ValueError, match=r"^quantile of an empty sketch$"):
        LatencySketch().quantile(0.5)


def test_quantile_outside_unit_interval_raises() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LatencySketch([1.0]).quantile(1.5)


def test_buckets_cover_all_values_in_order() -> None:
    sketch = LatencySketch([0.0, 0.5, 0.5, 100.0])
    rows = list(sketch.buckets())
    assert sum(n for _, _, n in rows) == 4
    assert [low for low, _, _ in rows] == sorted(low for low, _, _ in rows)
    assert all(low <= 100.0 for low, _, _ in rows)


def test_each_bucket_holds_its_values_and_spans_one_step_of_the_error_bound() -> None:
    values = [0.0, 5e-7, 0.5, 1.0, 100.0, 12345.0]
    rows = list(LatencySketch(values).buckets())
    assert rows[0] == (0.0, MIN_TRACKED, 2)  # 0 and 5e-7 are below MIN_TRACKED
    gamma = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
    for (low, high, count), value in zip(rows[1:], values[2:], strict=True):
        assert (low <= value < high, count) == (True, 1)
        assert math.isclose(high / low, gamma)


def test_sketches_that_differ_only_in_their_total_are_not_equal() -> None:
    # 1.001 and 1.002 share a bucket, so only the totals differ.
    assert LatencySketch([1.0, 1.001, 2.0]) != LatencySketch([1.0, 1.002, 2.0])


def test_adding_at_a_precomputed_bucket_equals_adding() -> None:
    # The analysis kernel computes the buckets itself and passes them to add_many.
    values = [0.0, 0.25, 0.25, 3.0]
    sketch = LatencySketch()
    sketch.add_many(values, indices=[bucket_index(value) for value in values])
    assert sketch == LatencySketch(values)


def test_copy_is_independent() -> None:
    sketch = LatencySketch([1.0])
    copy = sketch.copy()
    copy.add(2.0)
    assert sketch.count == 1


@given(st.lists(durations))
def test_add_many_equals_adding_one_at_a_time(values: list[float]) -> None:
    one_by_one = LatencySketch()
    for value in values:
        one_by_one.add(value)
    bulk = LatencySketch()
    bulk.add_many(values)
    assert bulk == one_by_one


@given(st.lists(durations))
def test_add_many_with_precomputed_indices_equals_add_many(values: list[float]) -> None:
    bulk = LatencySketch()
    bulk.add_many(values, LatencySketch.bucket_indices(values))
    assert bulk == LatencySketch(values)


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_add_many_rejects_a_bad_value_and_adds_nothing(bad: float) -> None:
    sketch = LatencySketch()
    with pytest.raises(ValueError, match="non-negative"):
        sketch.add_many([1.0, bad, 2.0])
    assert sketch == LatencySketch()


@pytest.mark.parametrize("bad", [-2.0, math.nan])
def test_add_many_names_the_first_bad_value(bad: float) -> None:
    # The good values before it include 0 and values in (0, 1), and a bad one follows.
    with pytest.raises(ValueError, match=re.escape(f"got {bad!r}") + "$"):
        LatencySketch().add_many([0.0, 0.5, 1.0, bad, 3.0, -4.0])


def test_add_many_adds_to_the_values_already_there() -> None:
    sketch = LatencySketch([1.0, 2.0])
    sketch.add_many([3.0, 4.0])
    assert (sketch.count, sketch.total) == (4, 10.0)


def test_a_value_of_exactly_min_tracked_is_tracked() -> None:
    sketch = LatencySketch()
    sketch.add(MIN_TRACKED)
    [(low, high, count)] = sketch.buckets()
    assert (0 < low <= MIN_TRACKED < high, count) == (True, 1)


@pytest.mark.parametrize("kind", [tuple, iter])
def test_bucket_indices_of_any_iterable_equal_those_of_a_list(
    kind: Callable[[list[float]], Iterable[float]],
) -> None:
    values = [0.0, 0.5, 2.0, 700.0]
    assert LatencySketch.bucket_indices(kind(values)) == LatencySketch.bucket_indices(values)


@given(st.lists(durations))
def test_from_buckets_rebuilds_a_sketch(values: list[float]) -> None:
    sketch = LatencySketch(values)
    rebuilt = LatencySketch.from_buckets(
        sketch.bucket_counts(), total=sketch.total, min=sketch.min, max=sketch.max
    )
    assert rebuilt == sketch


# DDSketch (Masson et al., 2019) with the same relative accuracy maps values to the same
# buckets (numbered one higher) and answers a quantile with the same representative, so
# both give the same quantiles; only a value within rounding of a bucket edge (a power of
# gamma) may land on the other side in one of them.
positive = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False)


def near_an_edge(value: float) -> bool:
    position = math.log(value) / math.log((1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR))
    return abs(position - round(position)) < 1e-6


@given(st.lists(positive, min_size=1), quantiles)
def test_quantiles_equal_ddsketch_with_the_same_relative_accuracy(
    values: list[float], q: float
) -> None:
    assume(not any(near_an_edge(v) for v in values))
    ours = LatencySketch(values)
    theirs = DDSketch(relative_accuracy=RELATIVE_ERROR)
    for value in values:
        theirs.add(value)
    expected = theirs.get_quantile_value(q)
    assert expected is not None
    # At rank 0 and the last rank the sketch answers the exact min and max; elsewhere it
    # clamps the representative into [min, max]: both within the same bound.
    exact = exact_quantile(values, q)
    assert within_bound(ours.quantile(q), exact)
    assert within_bound(expected, exact)
    rank = math.floor(q * (len(values) - 1))
    if 0 < rank < len(values) - 1:
        assert ours.quantile(q) == pytest.approx(min(max(expected, ours.min), ours.max), rel=1e-12)
