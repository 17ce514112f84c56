"""Choosing a connection per call, and keeping failing endpoints out of the choice.

* :class:`Balancer` is the protocol; :class:`PowerOfTwoChoices` (the default) and
  :class:`RoundRobin` implement it. ``pick`` is called synchronously on every call that
  has at least two ready connections, so it must be cheap and must not await.
* :class:`OutlierEjection` holds the rules by which a channel stops using an endpoint
  that keeps failing: after ``consecutive_failures`` failures in a row (connection
  failures, ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` results, and slow calls: failure
  accrual, so a replica that hangs -- SIGSTOPped, deadlocked -- is ejected too) it is
  ejected for ``base_ejection_time`` x the number
  of times it was ejected (at most ``max_ejection_time``), and never more than
  ``max_ejected_fraction`` of the endpoints are ejected at once. The channel applies them
  (see :mod:`._channel`); this module only does the arithmetic, so it needs no clock.
* :class:`LatencyTracker` keeps a method's recent latencies and derives the slow-call
  threshold from them: ``slow_call_factor`` x their median, at least ``slow_call_min``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, final, runtime_checkable

from trio_micro._validate import check_int, check_number, check_seconds
from trio_micro.protocol import Status

from ._transport import Endpoint

__all__ = [
    "EJECTION_ERROR_CODES",
    "Balancer",
    "LatencyTracker",
    "OutlierEjection",
    "PowerOfTwoChoices",
    "RoundRobin",
    "Subchannel",
]


@runtime_checkable
class Subchannel(Protocol):
    """What a :class:`Balancer` sees of a ready connection."""

    @property
    def endpoint(self) -> Endpoint:
        """The server it is connected to."""
        ...

    @property
    def outstanding(self) -> int:
        """Calls in flight on it."""
        ...


@runtime_checkable
class Balancer(Protocol):
    """Chooses the connection for each call.

    ``pick`` is called synchronously on every call with at least two ready connections and
    must be cheap. The list holds only connections that may take calls (ejected endpoints
    are left out), in no particular order; it changes between calls.
    """

    def pick(self, ready: Sequence[Subchannel]) -> int:
        """Return the index in ``ready`` of the connection to use."""
        ...


@final
class RoundRobin:
    """A :class:`Balancer` that takes each ready connection in turn (the article's)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, ready: Sequence[Subchannel]) -> int:
        """Return the next index, wrapping around."""
        index = self._next % len(ready)
        self._next = index + 1
        return index


@final
class PowerOfTwoChoices:
    """The default :class:`Balancer`: of two candidate connections, the less loaded.

    Load is :attr:`Subchannel.outstanding` (calls in flight), so a slow or stalled replica,
    which accumulates calls, gets fewer new ones -- unlike round robin, which keeps sending
    it its share. Two choices instead of the global minimum avoid the herd effect of every
    caller rushing to the same idle replica (Mitzenmacher, "The Power of Two Choices in
    Randomized Load Balancing").

    The first candidate is taken in turn (round robin, from a random starting point), the
    second at random among the others; ties go to the first. Against two random draws this
    keeps the comparison that steers calls away from a loaded replica, and it spreads
    consecutive calls over the connections the way round robin does: calls that resume
    together (their responses arrived in one read) leave on several connections and join
    the frames other calls queue there, instead of following each other back to the
    connection that just emptied. Measured in ``benchmarks/balancing_bench.py``: two random
    draws needed about 1.3 times the ``send`` system calls of round robin for the same
    calls; this choice needs about as many as round robin (see ``benchmarks/RESULTS.md``).

    Args:
        seed: Seeds the private random generator (for reproducible tests); ``None``
            seeds it from the OS.
    """

    __slots__ = ("_next", "_random")

    def __init__(self, *, seed: int | None = None) -> None:
        rng = random.Random(seed)
        self._random = rng.random
        self._next = rng.randrange(1 << 30)

    def pick(self, ready: Sequence[Subchannel]) -> int:
        """Return the index of the less loaded of the next-in-turn and a random other."""
        count = len(ready)
        if count < 2:
            return 0
        first = self._next % count
        self._next = first + 1
        second = int(self._random() * (count - 1))
        if second >= first:  # draw from the other count - 1 connections
            second += 1
        if ready[second].outstanding < ready[first].outstanding:
            return second
        return first


#: The answered status codes :class:`OutlierEjection`'s success-rate check counts as
#: errors: every code but ``OK``, ``CANCELLED`` (the caller's doing), ``RESOURCE_EXHAUSTED``
#: (overload is admission control's and the retry budget's to handle: ejecting a loaded
#: replica loads the others more) and ``UNAVAILABLE`` / ``DEADLINE_EXCEEDED`` (failures,
#: which count anyway). ``NOT_FOUND`` and ``INVALID_ARGUMENT`` are in: a correct answer for a
#: missing key or a bad request comes from every replica alike, so only an endpoint that
#: gives it far more often than its peers, for the same traffic, stands out.
EJECTION_ERROR_CODES: Final = frozenset(Status) - {
    Status.OK,
    Status.CANCELLED,
    Status.RESOURCE_EXHAUSTED,
    Status.UNAVAILABLE,
    Status.DEADLINE_EXCEEDED,
}

# The success-rate check's significance: an endpoint is an outlier only if its successes
# fall this many standard deviations below what its peers' rate predicts for its calls
# (one-sided normal tail 0.13%: about one false alarm per 740 endpoint-windows of traffic
# that is in fact alike -- and then also only if below ``success_rate_ratio``).
_Z: Final = 3.0


@final
@dataclass(frozen=True, slots=True)
class OutlierEjection:
    """When a channel stops sending calls to an endpoint, and for how long.

    A failure is a connection failure, an ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` result,
    a call still unanswered when the caller's deadline passed, or a *slow* call: one that
    took longer than ``slow_call_factor`` x the median latency of the method's recent
    successful calls (and at least ``slow_call_min``). Idempotent calls that may be retried
    are also cut at that threshold and retried on another endpoint, so a replica that
    stops answering costs its callers a threshold's wait, not their deadline.

    Success rate (an endpoint that answers, but wrongly): the channel counts each
    endpoint's unary calls and errors (failures as above, and answers with a code in
    ``error_codes``); a window ends when one endpoint has counted ``2 x
    success_rate_request_volume`` calls. An endpoint with at least
    ``success_rate_request_volume`` calls in the window, among at least
    ``success_rate_minimum_hosts`` such endpoints, is ejected when its success rate is
    below ``success_rate_ratio`` x that of the others together *and* significantly so (3
    standard deviations below what their rate predicts for its number of calls). So an
    empty replica answering ``NOT_FOUND`` for ids its peers find is ejected after about
    ``2 x success_rate_request_volume`` calls, while a workload whose ``NOT_FOUND`` s are
    real (a missing key is missing everywhere) ejects nobody; with two endpoints nobody
    can say which one is wrong, hence at least three. Windows are counted in calls, not
    seconds (Envoy sweeps every 10 s): detection time scales with traffic, and no clock is
    read per call. ``max_ejected_fraction`` and the ejection times apply as for failures.

    Args:
        consecutive_failures: Failures in a row (no fast success in between) that eject
            an endpoint.
        base_ejection_time: Seconds of the first ejection; the n-th lasts n times this.
        max_ejection_time: Upper bound on one ejection (seconds).
        max_ejected_fraction: At most this fraction of the endpoints is ejected at once
            (rounded down), so a failing cluster keeps being tried instead of being
            emptied.
        slow_call_factor: A call slower than this many times the method's median latency
            counts as a failure (``math.inf``: slowness never does, and nothing is cut).
        slow_call_min: The slow-call threshold is never below this (seconds), so that
            jitter on a method that takes microseconds is not called slow.
        success_rate_ratio: An endpoint whose success rate is below this fraction of its
            peers' is an outlier (0: the success-rate check is off).
        success_rate_minimum_hosts: Endpoints with enough calls needed for the check
            (Envoy's name; at least 2).
        success_rate_request_volume: Calls an endpoint needs in a window to be judged.
        error_codes: The answered codes that count as errors (a set of
            :class:`~trio_micro.rpc.Status`, without ``OK``); see
            :data:`EJECTION_ERROR_CODES`.

    Raises:
        TypeError / ValueError: A bad value.
    """

    consecutive_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejected_fraction: float = 0.5
    slow_call_factor: float = 10.0
    slow_call_min: float = 0.1
    success_rate_ratio: float = 0.5
    success_rate_minimum_hosts: int = 3
    success_rate_request_volume: int = 50
    error_codes: frozenset[Status] = EJECTION_ERROR_CODES

    def __post_init__(self) -> None:
        check_int("consecutive_failures", self.consecutive_failures, minimum=1)
        check_seconds("base_ejection_time", self.base_ejection_time, finite=True)
        check_seconds("max_ejection_time", self.max_ejection_time, finite=True)
        fraction = self.max_ejected_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"max_ejected_fraction must be a float, got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"max_ejected_fraction must be in [0, 1], got {fraction!r}")
        if check_number("slow_call_factor", self.slow_call_factor, finite=False) < 1:
            raise ValueError(f"slow_call_factor must be >= 1, got {self.slow_call_factor!r}")
        check_seconds("slow_call_min", self.slow_call_min, finite=True)
        ratio = check_number("success_rate_ratio", self.success_rate_ratio, zero=True)
        if not 0 <= ratio <= 1:
            raise ValueError(f"success_rate_ratio must be in [0, 1], got {ratio!r}")
        check_int("success_rate_minimum_hosts", self.success_rate_minimum_hosts, minimum=2)
        check_int("success_rate_request_volume", self.success_rate_request_volume, minimum=1)
        codes = self.error_codes
        if not isinstance(codes, frozenset) or not all(isinstance(c, Status) for c in codes):
            raise TypeError(f"error_codes must be a frozenset of rpc.Status, got {codes!r}")
        if Status.OK in codes:
            raise ValueError("error_codes must not hold Status.OK")

    def ejection_time(self, times_ejected: int) -> float:
        """Seconds the ``times_ejected``-th ejection (1 for the first) lasts."""
        return min(self.base_ejection_time * times_ejected, self.max_ejection_time)

    def may_eject(self, ejected: int, endpoints: int) -> bool:
        """Whether one more endpoint may be ejected while ``ejected`` of ``endpoints`` are."""
        return ejected + 1 <= math.floor(endpoints * self.max_ejected_fraction)

    @property
    def success_rate_window(self) -> int:
        """The calls of one endpoint that end a success-rate window (0: the check is off)."""
        return 2 * self.success_rate_request_volume if self.success_rate_ratio else 0

    def rate_outliers(self, counts: Sequence[tuple[int, int]]) -> list[int]:
        """The indexes in ``counts`` of the success-rate outliers, lowest rate first.

        Args:
            counts: ``(calls, errors)`` of each endpoint over one window.

        An endpoint is judged only with at least ``success_rate_request_volume`` calls,
        and only when ``success_rate_minimum_hosts`` endpoints are; it is an outlier
        when its successes are below ``success_rate_ratio`` x and 3 standard deviations
        below what the others' pooled success rate predicts for its calls. Synchronous.
        """
        volume = self.success_rate_request_volume
        judged = [i for i, (calls, _) in enumerate(counts) if calls >= volume]
        if not self.success_rate_ratio or len(judged) < self.success_rate_minimum_hosts:
            return []
        total_calls = sum(counts[i][0] for i in judged)
        total_successes = total_calls - sum(counts[i][1] for i in judged)
        outliers: list[tuple[float, int]] = []
        for i in judged:
            calls, errors = counts[i]
            successes = calls - errors
            rate = (total_successes - successes) / (total_calls - calls)  # the others'
            expected = calls * rate
            spread = _Z * math.sqrt(calls * rate * (1 - rate))
            if successes < self.success_rate_ratio * expected and successes < expected - spread:
                outliers.append((successes / calls, i))
        return [i for _, i in sorted(outliers)]


# Successful calls a LatencyTracker remembers, how many it needs before it calls anything
# slow, and how often (in calls) it recomputes the median.
_WINDOW: Final = 64
_MIN_SAMPLES: Final = 16
_REFRESH: Final = 16


@final
class LatencyTracker:
    """The latencies of a method's last 64 successful calls, and the slow-call threshold.

    :attr:`threshold` is ``factor`` x their median, at least ``minimum``; ``math.inf``
    until 16 calls were seen. The median is recomputed every 16 calls (sorting 64 floats),
    so :meth:`add` costs O(1) amortised. Synchronous; no clock (the caller measures).

    Args:
        factor: ``OutlierEjection.slow_call_factor``.
        minimum: ``OutlierEjection.slow_call_min`` (seconds).
    """

    __slots__ = ("_factor", "_minimum", "_next", "_samples", "_seen", "threshold")

    def __init__(self, factor: float, minimum: float) -> None:
        self._factor = factor
        self._minimum = minimum
        self._samples: list[float] = []
        self._next = 0  # where the next sample goes once the window is full
        self._seen = 0
        self.threshold = math.inf

    def add(self, seconds: float) -> None:
        """Remember the latency of a successful call."""
        samples = self._samples
        if len(samples) < _WINDOW:
            samples.append(seconds)
        else:
            samples[self._next] = seconds
            self._next = (self._next + 1) % _WINDOW
        self._seen += 1
        if self._seen >= _MIN_SAMPLES and self._seen % _REFRESH == 0:
            ordered = sorted(samples)
            median = ordered[len(ordered) // 2]
            self.threshold = max(self._factor * median, self._minimum)
