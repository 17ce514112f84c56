"""``--registry-token-file`` on the client commands (``call``, ``list``, ...): the token
reaches the registry behind a ``registry://`` target, which a ``--protect-lookups``
registry needs to answer; with another target the flag is a usage error.

The command runs in a worker thread (its own ``trio.run``) while the test's event loop
runs the registry and the service.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from trio_micro import registry, rpc
from trio_micro.cli._main import main

from ..rpc.services import TestService

GET_USER = "grpc.testing.TestService.get_user"
TOKEN = "s3cret-token"
ENV = "TRIO_MICRO_REGISTRY_TOKEN_FILE"

pytestmark = pytest.mark.usefixtures("quiet_logging")


async def cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


def token_file(tmp_path: Path, token: str = TOKEN) -> str:
    path = tmp_path / f"token-{len(token)}"
    path.write_text(token + "\n")
    return str(path)


@pytest.fixture
async def protected() -> AsyncIterator[str]:
    """``registry://HOST:PORT/test``: a registry that protects lookups with TOKEN, and the
    test service registered in it."""
    async with (
        registry.open_registry_server(port=0, token=TOKEN, protect_lookups=True) as srv,
        registry.open_registry_client(srv.target, token=TOKEN) as reg,
        rpc.open_server([TestService()], host="127.0.0.1", port=0) as server,
    ):
        host, port = server.address
        async with reg.register("test", f"{host}:{port}"):
            yield f"registry://{srv.target}/test"


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert TOKEN not in err
    assert "Traceback" not in err
    return err


async def test_call_with_the_token_reaches_the_service(
    protected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--registry-token-file", token_file(tmp_path)]
    code = await cli("call", protected, GET_USER, '{"user_id": 3}', *flags)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["user_id"] == 3


async def test_list_with_the_token_lists_the_service(
    protected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("list", protected, "--json", "--registry-token-file", token_file(tmp_path))
    assert code == 0
    names = [s["name"] for s in json.loads(capsys.readouterr().out)["services"]]
    assert "grpc.testing.TestService" in names


async def test_the_token_file_defaults_to_the_environment(
    protected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, token_file(tmp_path))
    assert await cli("call", protected, GET_USER, '{"user_id": 4}') == 0
    assert json.loads(capsys.readouterr().out)["user_id"] == 4


async def test_call_without_the_token_fails_with_one_line(
    protected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    code = await cli("call", protected, GET_USER, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAUTHENTICATED
    assert one_line(capsys).startswith("UNAUTHENTICATED: ")


async def test_list_with_a_wrong_token_fails_with_one_line(
    protected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = token_file(tmp_path, "not-the-token")
    code = await cli("list", protected, "--registry-token-file", wrong, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAUTHENTICATED
    err = one_line(capsys)
    assert err.startswith("UNAUTHENTICATED: ")
    assert "wrong registry token" in err
    assert "not-the-token" not in err


async def test_health_with_the_token_checks_the_service(
    protected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("health", protected, "--registry-token-file", token_file(tmp_path))
    assert code == 0
    assert capsys.readouterr().out == "SERVING\n"


NON_REGISTRY_TARGETS = [
    ("127.0.0.1:1", "'127.0.0.1:1' is one server, reached without a registry"),
    ("etcd://127.0.0.1:1/test", "an etcd:// target is looked up in etcd, which does not take it"),
]


@pytest.mark.parametrize(("target", "why"), NON_REGISTRY_TARGETS)
@pytest.mark.parametrize(
    "command", [["call", GET_USER], ["list"], ["bench", GET_USER], ["health"], ["schema"]]
)
def test_the_flag_with_another_target_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], target: str, why: str
) -> None:
    argv = [command[0], target, *command[1:], "--registry-token-file", token_file(tmp_path)]
    assert main(argv) == 2
    err = one_line(capsys)
    assert err.startswith(f"trio-micro {command[0]}: error: --registry-token-file is for ")
    assert f"registry://HOST:PORT/SERVICE targets: {why}" in err


def test_the_gateway_refuses_the_flag_with_another_target_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["gateway", "127.0.0.1:1", "--registry-token-file", token_file(tmp_path)]
    assert main(argv) == 2
    assert "--registry-token-file is for registry://HOST:PORT/SERVICE" in one_line(capsys)


def test_the_environment_default_is_ignored_for_another_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exported for registry:// targets, it must not break `health 127.0.0.1:PORT` (a probe):
    # the missing file is not even read.
    monkeypatch.setenv(ENV, str(tmp_path / "missing"))
    code = main(["health", "127.0.0.1:1", "--timeout", "5"])
    assert code == 64 + rpc.Status.UNAVAILABLE
    assert "registry-token-file" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "why"), [(b"", "is empty"), (b"x" * 5000, "is larger than 4096 bytes")]
)
def test_an_unusable_token_file_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    argv = ["list", "registry://127.0.0.1:1/test", "--registry-token-file", str(path)]
    assert main(argv) == 2
    err = one_line(capsys)
    assert f"trio-micro list: error: --registry-token-file: {str(path)!r} {why}" in err
    assert "xxxx" not in err


def test_a_missing_token_file_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing")
    argv = ["bench", "registry://127.0.0.1:1/test", GET_USER, "--registry-token-file", missing]
    assert main(argv) == 2
    assert f"--registry-token-file: cannot read {missing!r}" in one_line(capsys)
