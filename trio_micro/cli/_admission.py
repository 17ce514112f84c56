"""``trio-micro serve``'s admission-control flags: ``--max-inflight``, ``--rate-limit``,
``--rate-limit-key`` (docs/rpc.md §14), parsed into what :func:`trio_micro.rpc.serve` and
:class:`trio_micro.rpc.RateLimitInterceptor` take. Kept apart from :mod:`._serve` so that
module stays about serving.
"""

from __future__ import annotations

import argparse

from trio_micro import rpc

from ._common import integer, number

__all__: list[str] = []  # internal to the cli package


def rate_limit(text: str) -> tuple[float, int]:
    """argparse type: ``RATE[/BURST]``, calls per second (> 0) and a burst (>= 1, default 1)."""
    rate_text, sep, burst_text = text.partition("/")
    try:
        rate = number("a rate in calls per second")(rate_text)
        burst = integer(1)(burst_text) if sep else 1
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected RATE[/BURST] such as 100 or 100/20 (calls per second > 0, burst >= 1), "
            f"got {text!r}"
        ) from None
    return rate, burst


def rate_limit_key(text: str) -> str:
    """argparse type: ``peer`` or ``metadata:NAME``."""
    if text == "peer" or (text.startswith("metadata:") and len(text) > len("metadata:")):
        return text
    raise argparse.ArgumentTypeError(f"expected peer or metadata:NAME, got {text!r}")


def add_admission_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-inflight``, ``--rate-limit`` and ``--rate-limit-key``."""
    parser.add_argument(
        "--max-inflight",
        type=integer(1),
        default=None,
        metavar="N",
        help="refuse calls beyond N running at once with RESOURCE_EXHAUSTED, at once "
        "(clients retry elsewhere); near N, a connection holding its fair share of N is "
        "refused first; default: no limit",
    )
    parser.add_argument(
        "--rate-limit",
        type=rate_limit,
        default=None,
        metavar="RATE[/BURST]",
        help="give each caller RATE calls per second, bursts of BURST (default 1); more "
        "are refused with RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--rate-limit-key",
        type=rate_limit_key,
        default="peer",
        metavar="peer|metadata:NAME",
        help="who a caller is for --rate-limit: its host, or the value of metadata NAME "
        "such as an API key (default: peer)",
    )


def admission_interceptors(
    rate: tuple[float, int] | None, key: str
) -> list[rpc.RateLimitInterceptor]:
    """The rate-limit interceptor ``--rate-limit`` asks for (outermost), or none."""
    if rate is None:
        return []
    return [rpc.RateLimitInterceptor(rate[0], rate[1], key=key)]
