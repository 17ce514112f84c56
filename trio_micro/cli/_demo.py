"""``trio-micro demo``: says where the demo is.

The multi-process demo (a registry, replicas of the example user service, a load with a
replica killed halfway, a report) is example code: it lives in ``examples/demo`` of the
source repository, next to the service it runs, and the installed package has neither.
``make demo`` (or ``python -m examples.demo`` from the repository's folder) runs it;
``make demo TLS=1`` (``--tls``) runs it over mutual TLS. This command prints that in one
line and exits 1, whatever its arguments (``trio-micro demo --tls`` included).
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from ._common import CommandError, epilog, run_command

__all__: list[str] = []  # internal to the cli package

WHERE: Final = (
    "the demo is not part of the installed package: in a checkout of the trio_micro "
    "repository, run `make demo` (`make demo TLS=1` for mutual TLS; or "
    "`python -m examples.demo --help`)"
)


def add_demo_parser(subparsers: Any) -> None:
    """Add the ``demo`` command to the ``trio-micro`` subparsers."""
    subparsers.add_parser(
        "demo",
        help="where the multi-process demo is (make demo, in a source checkout)",
        description="The multi-process demo (registry, user-service replicas, load, a "
        "replica killed halfway, report) is example code in examples/demo of the source "
        "repository. Run it there with `make demo` or `python -m examples.demo`.",
        epilog=epilog("It prints where the demo is, as an error: its exit code is always 1."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run_demo(args: argparse.Namespace) -> int:
    """Print where the demo is; return 1."""

    def body() -> int:
        raise CommandError(WHERE)

    return run_command("demo", body)
