"""The user service as a process: ``UserService.open`` options, the query log, ``seed``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from examples.user_service import UserService
from examples.user_service.__main__ import main as user_service_main
from examples.user_service.database import UserDatabase
from examples.user_service.service import DB_QUERY, GetUserRequest
from trio_micro import rpc


async def test_open_creates_the_database_and_takes_string_options(tmp_path: Path) -> None:
    path = tmp_path / "data" / "users.db"
    async with UserService.open(db=str(path), cache_size="5", cache_ttl="2.5", threads="2") as svc:
        assert await svc.db.count() == 0
        assert (svc.cache.max_size, svc.cache.ttl) == (5, 2.5)
    assert path.exists()
    with pytest.raises(trio.ClosedResourceError):
        await svc.db.count()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"db": ""}, "db must be the path"),
        ({"cache_size": "0"}, "cache_size must be a whole number >= 1, got '0'"),
        ({"cache_size": "1.5"}, "cache_size"),
        ({"cache_size": True}, "cache_size"),
        ({"cache_ttl": "soon"}, "cache_ttl must be a number of seconds > 0, got 'soon'"),
        ({"cache_ttl": "inf"}, "cache_ttl"),
        ({"cache_ttl": "-1"}, "cache_ttl"),
        ({"threads": "x"}, "threads"),
    ],
)
async def test_open_rejects_bad_options_naming_them(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    options = {"db": str(tmp_path / "users.db"), **options}
    with pytest.raises(ValueError, match=message):
        async with UserService.open(**options):
            pass  # pragma: no cover


async def test_open_reports_an_unopenable_database_as_a_bad_db_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot open the database"):
        async with UserService.open(db=str(tmp_path)):  # a directory
            pass  # pragma: no cover


def test_open_rejects_unknown_options_with_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="colour"):
        UserService.open(db="x", colour="red")  # type: ignore[call-arg]


async def test_one_query_record_per_load_not_per_coalesced_waiter(tmp_path: Path) -> None:
    async with UserDatabase(tmp_path / "users.db") as db:
        await db.seed(20)
    async with UserService.open(db=str(tmp_path / "users.db")) as svc:
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(svc.get_user, GetUserRequest(user_id=i % 10 + 1))
            await svc.get_user(GetUserRequest(user_id=1))  # a hit: no query
            with pytest.raises(rpc.RpcError):
                await svc.get_user(GetUserRequest(user_id=99))  # a miss for no user: one query
    queries = [r for r in logs if r["event"] == DB_QUERY]
    assert sorted(r["user_id"] for r in queries) == [*range(1, 11), 99]
    assert [r["found"] for r in queries if r["user_id"] == 99] == [False]


def test_seed_command_is_idempotent_and_keeps_other_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.db"
    assert user_service_main(["seed", "--db", str(path), "--users", "50"]) == 0
    assert capsys.readouterr().out == f"seeded {path}: 50 users (50 new)\n"
    assert user_service_main(["seed", "--db", str(path), "--users", "50"]) == 0
    assert capsys.readouterr().out == f"seeded {path}: 50 users (0 new)\n"

    async def update_and_reseed() -> tuple[object, int]:
        async with UserDatabase(path) as db:
            await db.update_user(3, "Changed", "c@example.com")
            added = await db.seed(60, replace=False)
            return await db.get_user(3), added

    row, added = trio.run(update_and_reseed)
    assert added == 10
    assert getattr(row, "name", None) == "Changed"


def test_seed_command_reports_an_unopenable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert user_service_main(["seed", "--db", str(tmp_path), "--users", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("seed: error: cannot seed")
    assert err.count("\n") == 1


@pytest.mark.parametrize("users", ["-1", "x"])
def test_seed_command_rejects_a_bad_count(users: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        user_service_main(["seed", "--db", "x.db", "--users", users])
    assert exc.value.code == 2
    assert "--users" in capsys.readouterr().err
