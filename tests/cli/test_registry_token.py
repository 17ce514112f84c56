"""``registry --token-file`` and ``serve --registry-token-file`` (issue #15): a token file
that can't be used is a one-line usage error that never shows the token; a replica with
the right token registers."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trio_micro import registry
from trio_micro.cli._main import build_parser, main
from trio_micro.cli._serve_args import _check_args

from .test_tls import SLOW, WAIT, started

TOKEN = "s3cret-token"


def one_line_usage_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert TOKEN not in err
    return err


def test_a_missing_token_file_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing")
    err = one_line_usage_error(capsys, main(["registry", "--port", "0", "--token-file", missing]))
    assert f"trio-micro registry: error: --token-file: cannot read {missing!r}: " in err


@pytest.mark.parametrize(("content", "why"), [(b" \n", "is empty"), (b"two words\n", "one")])
def test_an_unusable_registry_token_file_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    argv = ["serve", SLOW, "--registry", "127.0.0.1:1", "--registry-token-file", str(path)]
    err = one_line_usage_error(capsys, main(argv))
    assert f"--registry-token-file: {str(path)!r} " in err
    assert why in err
    assert "two words" not in err


def test_the_token_file_defaults_to_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "from-env")
    monkeypatch.setenv("TRIO_MICRO_REGISTRY_TOKEN_FILE", missing)
    err = one_line_usage_error(capsys, main(["registry", "--port", "0"]))
    assert f"--token-file: cannot read {missing!r}" in err


def test_serve_ignores_the_environment_token_with_an_etcd_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One environment for a host's replicas and its probes: the variable is meant for
    # registry:// registries, so serve with etcd:// neither reads nor refuses it.
    monkeypatch.setenv("TRIO_MICRO_REGISTRY_TOKEN_FILE", str(tmp_path / "unread"))
    for extra in (["--registry", "etcd://127.0.0.1:1", "--advertise", "127.0.0.1:1"], []):
        config = _check_args(build_parser().parse_args(["serve", SLOW, *extra]))
        assert config.registry_token is None


@pytest.mark.parametrize(
    ("target", "why"), [("etcd://127.0.0.1:1", "not etcd"), (None, "given without --registry")]
)
def test_serve_refuses_the_token_flag_where_no_registry_server_takes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str | None, why: str
) -> None:
    path = tmp_path / "token"
    path.write_text("secret\n")
    argv = ["serve", SLOW, "--registry-token-file", str(path)]
    argv += ["--registry", target, "--advertise", "127.0.0.1:1"] if target else []
    err = one_line_usage_error(capsys, main(argv))
    assert f"--registry-token-file is for registry:// registries: {why}" in err
    assert "secret" not in err


def test_allow_identity_needs_client_certificates(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_usage_error(capsys, main(["registry", "--port", "0", "--allow-identity", "a"]))
    assert "--allow-identity needs --tls-ca" in err


async def test_serve_with_the_registry_token_registers(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # the newline an editor adds is stripped
    async with registry.open_registry_server(port=0, token=TOKEN) as reg:
        argv = [
            "serve", SLOW, "--port", "0", "--registry", reg.target,
            "--registry-token-file", str(token_file), "--log-file", str(tmp_path / "s.jsonl"),
        ]  # fmt: skip
        async with started(argv) as line, registry.open_registry_client(reg.target) as client:
            assert line.startswith("serving slow on ")
            with trio.fail_after(WAIT):
                assert [e.address for e in await client.resolve("slow")] == [line.split()[-1]]
