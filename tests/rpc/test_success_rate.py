"""Success-rate outlier ejection (issue #15): a replica that answers, but wrongly -- an
empty one answering NOT_FOUND where its peers find the row -- is ejected, while errors
every replica gives alike (a missing key is missing everywhere) eject nobody."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_micro import rpc

from .replicas import ReplicaService, count_errors
from .test_balancing import replicas, wait_ready

NOT_FOUND = rpc.Status.NOT_FOUND
POLICY = rpc.OutlierEjection()


# ------------------------------------------------------------------ the arithmetic


def test_an_endpoint_failing_everything_among_good_peers_is_an_outlier() -> None:
    assert POLICY.rate_outliers([(100, 0), (100, 100), (100, 0)]) == [1]


def test_errors_every_endpoint_gives_alike_make_no_outlier() -> None:
    # 30% of the keys are missing, on every replica.
    assert POLICY.rate_outliers([(100, 31), (100, 28), (100, 33)]) == []


def test_a_partly_empty_endpoint_is_an_outlier_when_far_below_its_peers() -> None:
    # Peers find 70%, it finds 20%: below half their rate, and far more than chance.
    assert POLICY.rate_outliers([(100, 30), (100, 80), (100, 29)]) == [1]


def test_a_few_successes_more_or_less_are_chance() -> None:
    # Peers succeed 2% of the time; none of 100 calls succeeding is not significant.
    assert POLICY.rate_outliers([(100, 98), (100, 100), (100, 98)]) == []


def test_two_endpoints_cannot_tell_which_one_is_wrong() -> None:
    assert POLICY.rate_outliers([(100, 0), (100, 100)]) == []


def test_endpoints_with_too_few_calls_are_not_judged() -> None:
    assert POLICY.rate_outliers([(100, 0), (49, 49), (100, 0), (100, 0)]) == []
    assert POLICY.rate_outliers([(100, 0), (50, 50), (100, 0), (100, 0)]) == [1]


def test_outliers_come_lowest_rate_first() -> None:
    counts = [(100, 0), (100, 90), (100, 0), (100, 100), (100, 0)]
    assert POLICY.rate_outliers(counts) == [3, 1]


def test_a_ratio_of_zero_turns_the_check_off() -> None:
    policy = rpc.OutlierEjection(success_rate_ratio=0)
    assert policy.rate_outliers([(100, 0), (100, 100), (100, 0)]) == []
    assert policy.success_rate_window == 0


def test_not_found_counts_by_default_and_ok_cancelled_never() -> None:
    assert NOT_FOUND in rpc.EJECTION_ERROR_CODES
    assert rpc.Status.OK not in rpc.EJECTION_ERROR_CODES
    assert rpc.Status.CANCELLED not in rpc.EJECTION_ERROR_CODES


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"success_rate_ratio": 1.5}, ValueError, "success_rate_ratio must be in [0, 1], got 1.5"),
        (
            {"success_rate_ratio": "0.5"},
            TypeError,
            "success_rate_ratio must be an int or float, got '0.5'",
        ),
        (
            {"success_rate_minimum_hosts": 1},
            ValueError,
            "success_rate_minimum_hosts must be >= 2, got 1",
        ),
        (
            {"success_rate_request_volume": 0},
            ValueError,
            "success_rate_request_volume must be >= 1, got 0",
        ),
        (
            {"error_codes": {NOT_FOUND}},
            TypeError,
            "error_codes must be a frozenset of rpc.Status, got {<Status.NOT_FOUND: 5>}",
        ),
        (
            {"error_codes": frozenset({5})},
            TypeError,
            "error_codes must be a frozenset of rpc.Status, got frozenset({5})",
        ),
        (
            {"error_codes": frozenset({rpc.Status.OK})},
            ValueError,
            "error_codes must not hold Status.OK",
        ),
    ],
)
def test_the_success_rate_settings_are_checked(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        rpc.OutlierEjection(**kwargs)  # type: ignore[arg-type]


def test_a_ratio_of_one_is_allowed_and_judges_by_significance_alone() -> None:
    # Peers succeed 98%: 90 of 100 is 3 standard deviations (4.2 calls) below 98.
    policy = rpc.OutlierEjection(success_rate_ratio=1.0)
    assert policy.rate_outliers([(100, 2), (100, 2), (100, 10)]) == [2]


def test_an_endpoint_at_exactly_the_ratio_is_not_an_outlier() -> None:
    # Peers succeed every time (no spread): 50 of 100 is exactly half, 49 is below.
    assert POLICY.rate_outliers([(100, 0), (100, 50), (100, 0)]) == []
    assert POLICY.rate_outliers([(100, 0), (100, 51), (100, 0)]) == [1]


def test_an_endpoint_exactly_3_standard_deviations_below_is_not_an_outlier() -> None:
    # Peers succeed 50%: 100 calls expect 50 successes, 3 standard deviations are 15.
    policy = rpc.OutlierEjection(success_rate_ratio=1.0)
    assert policy.rate_outliers([(100, 50), (100, 50), (100, 65)]) == []
    assert policy.rate_outliers([(100, 50), (100, 50), (100, 66)]) == [2]


def test_outliers_are_ordered_by_rate_not_by_successes() -> None:
    # 20 of 200 (10%) is a lower rate than 10 of 50 (20%), though more successes.
    counts = [(100, 0), (100, 0), (100, 0), (50, 40), (200, 180)]
    assert POLICY.rate_outliers(counts) == [4, 3]


# ------------------------------------------------------------------ over real servers


async def lookups(channel: rpc.Channel, calls: int) -> int:
    """Make ``calls`` idempotent calls; return how many answered NOT_FOUND."""
    return await count_errors(channel.stub(ReplicaService).whoami, calls, NOT_FOUND)


async def test_an_empty_replica_is_ejected_after_one_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    empty = ReplicaService("empty", failing=True, status=NOT_FOUND)
    async with (
        replicas(ReplicaService("a"), empty, ReplicaService("b")) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 3)
        with capture_logs() as logs:
            failed = await lookups(channel, 300)  # one window: 2 x 50 calls each
        # The window ends when the first endpoint in turn has counted 100 calls: the
        # empty one (100 failed), or one before it in the turn (99).
        assert failed in (99, 100)
        assert channel.statistics().ejected == (target[1],)
        ejected = [e for e in logs if e["event"] == "rpc.channel.endpoint_ejected"]
        assert [(e["peer"], e["reason"], e["success_rate"]) for e in ejected] == [
            (target[1], "success_rate", 0.0)
        ]
        assert await lookups(channel, 100) == 0  # the others answer everything now
        await trio.sleep(POLICY.base_ejection_time + 1)
        assert channel.statistics().ejected == ()


async def test_not_found_from_every_replica_ejects_nobody(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = [ReplicaService(n, failing=True, status=NOT_FOUND) for n in "abc"]
    async with (
        replicas(*services) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin()) as channel,
    ):
        await wait_ready(channel, 3)
        assert await lookups(channel, 900) == 900
        assert channel.statistics().ejected == ()


async def test_codes_left_out_of_error_codes_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    empty = ReplicaService("empty", failing=True, status=NOT_FOUND)
    policy = rpc.OutlierEjection(error_codes=rpc.EJECTION_ERROR_CODES - {NOT_FOUND})
    async with (
        replicas(ReplicaService("a"), empty, ReplicaService("b")) as target,
        rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=policy) as channel,
    ):
        await wait_ready(channel, 3)
        assert await lookups(channel, 600) == 200
        assert channel.statistics().ejected == ()


async def test_the_success_rate_check_respects_max_ejected_fraction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two of four replicas empty: half may go, so both do; with 0.25, only one.
    for fraction, expected in ((0.5, 2), (0.25, 1)):
        services = [ReplicaService("a"), ReplicaService("b")] + [
            ReplicaService(f"e{i}", failing=True, status=NOT_FOUND) for i in range(2)
        ]
        policy = rpc.OutlierEjection(max_ejected_fraction=fraction)
        async with (
            replicas(*services) as target,
            rpc.open_channel(target, balancer=rpc.RoundRobin(), outlier_ejection=policy) as ch,
        ):
            await wait_ready(ch, 4)
            await lookups(ch, 400)
            assert len(ch.statistics().ejected) == expected
            assert set(ch.statistics().ejected) <= set(target[2:])
