"""``python -m examples.user_service seed --db PATH --users N``: prepare the database.

Creates the database file and its schema if missing and inserts the generated users with
ids 1..N that are not there yet (the same users every time), so running it again changes
nothing and users added or updated through the service are kept. Prints one line, e.g.
``seeded users.db: 10,000 users (10,000 new)``; exits 1 with a one-line message on
stderr when the database can't be opened, 2 on bad arguments.

The service itself runs with ``trio-micro serve examples.user_service:UserService -o db=PATH``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

import trio

from .database import UserDatabase


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m examples.user_service``."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.user_service",
        description="Tools for the example user service.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    seed = commands.add_parser(
        "seed",
        help="create the database and load users 1..N (idempotent)",
        description="Create the database (schema included) if missing and insert the "
        "generated users with ids 1..N that are missing. Existing rows are kept.",
    )
    seed.add_argument("--db", required=True, metavar="PATH", help="SQLite database file")
    seed.add_argument(
        "--users", type=_count, default=10_000, metavar="N", help="users to have (default 10000)"
    )
    return parser


async def _seed(path: str, n: int) -> tuple[int, int]:
    async with UserDatabase(path) as db:
        inserted = await db.seed(n, replace=False)
        return inserted, await db.count()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        inserted, total = trio.run(_seed, args.db, args.users)
    except (sqlite3.Error, OSError) as exc:
        print(f"seed: error: cannot seed {args.db!r}: {exc}", file=sys.stderr)
        return 1
    print(f"seeded {args.db}: {total:,} users ({inserted:,} new)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
