"""The TLS options of ``serve``, ``registry``, ``call``, ``list``, ``bench``, ``health``,
``schema`` and ``gateway`` (cli/_tls.py), with throwaway CAs from trustme: mutual TLS from
the command line, and a one-line usage error naming an unusable file."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
import trio
import trustme

from trio_micro import registry, rpc
from trio_micro.cli._main import main

from ..rpc.services import TestService

ROOT = Path(__file__).resolve().parents[2]
GET_USER = "grpc.testing.TestService.get_user"
SLOW = "tests.cli._slow_service:SlowService"
WAIT = 20.0

pytestmark = pytest.mark.usefixtures("quiet_logging")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield  # in-process runs of a command configure structlog process-wide
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class Pki:
    """PEM files on disk: a CA, a server certificate, a client certificate, a client
    certificate of another CA, and a file of garbage."""

    def __init__(self, directory: Path) -> None:
        self.ca_authority = trustme.CA()
        self.ca = self._write(directory / "ca.pem", self.ca_authority.cert_pem.bytes())
        server = self.ca_authority.issue_cert("127.0.0.1", "localhost", common_name="server")
        self.server_cert, self.server_key = self._leaf(directory, "server", server)
        client = self.ca_authority.issue_cert("client.internal", common_name="client")
        self.client_cert, self.client_key = self._leaf(directory, "client", client)
        stranger = trustme.CA().issue_cert("client.internal", common_name="stranger")
        self.stranger_cert, self.stranger_key = self._leaf(directory, "stranger", stranger)
        self.garbage = self._write(directory / "garbage.pem", b"-----BEGIN CERTIFICATE-----\nxx\n")

    @staticmethod
    def _write(path: Path, data: bytes) -> str:
        path.write_bytes(data)
        return str(path)

    def _leaf(self, directory: Path, name: str, cert: trustme.LeafCert) -> tuple[str, str]:
        return (
            self._write(directory / f"{name}.pem", cert.cert_chain_pems[0].bytes()),
            self._write(directory / f"{name}.key", cert.private_key_pem.bytes()),
        )

    def server_context(self) -> ssl.SSLContext:
        return rpc.server_ssl_context(self.server_cert, self.server_key, client_ca=self.ca)

    def client_flags(self, *, cert: str | None = None, key: str | None = None) -> list[str]:
        return [
            "--tls-ca",
            self.ca,
            "--tls-cert",
            cert or self.client_cert,
            "--tls-key",
            key or self.client_key,
        ]

    def server_flags(self) -> list[str]:
        return ["--tls-cert", self.server_cert, "--tls-key", self.server_key, "--tls-ca", self.ca]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def mtls_target(pki: Pki) -> AsyncIterator[str]:
    async with rpc.open_server(
        [TestService()], host="127.0.0.1", port=0, ssl_context=pki.server_context()
    ) as server:
        host, port = server.address
        yield f"{host}:{port}"


async def cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


# --- clients against an mTLS server ---------------------------------------------------


async def test_call_with_a_good_client_certificate_succeeds(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("call", mtls_target, GET_USER, '{"user_id": 7}', *pki.client_flags())
    assert code == 0
    assert json.loads(capsys.readouterr().out)["user_id"] == 7


async def test_call_without_a_client_certificate_is_unavailable(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("call", mtls_target, GET_USER, "--tls-ca", pki.ca, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAVAILABLE
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err


async def test_call_with_a_certificate_of_another_ca_is_unavailable(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = pki.client_flags(cert=pki.stranger_cert, key=pki.stranger_key)
    code = await cli("call", mtls_target, GET_USER, *flags, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAVAILABLE


async def test_call_in_plaintext_to_a_tls_port_says_so(
    mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("call", mtls_target, GET_USER, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAVAILABLE
    assert "does the server require TLS?" in capsys.readouterr().err


async def test_list_over_mtls(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("list", mtls_target, "--json", *pki.client_flags()) == 0
    assert "grpc.testing.TestService" in capsys.readouterr().out


async def test_health_and_schema_over_mtls(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # They took the TLS flags and connected in plain text (a TLS port hangs up on that).
    assert await cli("health", mtls_target, *pki.client_flags()) == 0
    assert await cli("schema", mtls_target, "--format", "jsonschema", *pki.client_flags()) == 0
    out = capsys.readouterr().out
    assert out.startswith("SERVING\n")
    assert "grpc.testing.TestService" in out


async def test_gateway_reaches_an_mtls_service(pki: Pki, mtls_target: str) -> None:
    # The gateway's HTTP side is plain; its calls to the service go over mutual TLS.
    argv = ["gateway", mtls_target, "--port", "0", *pki.client_flags()]
    async with started(argv) as line:
        url = line.rpartition(" on ")[2]
        async with httpx.AsyncClient(base_url=url) as http:
            reply = await http.post("/grpc.testing.TestService/get_user", json={"user_id": 3})
    assert (reply.status_code, reply.json()["user_id"]) == (200, 3)


async def test_bench_over_mtls(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", mtls_target, GET_USER, '{"user_id": 1}', "-n", "20", "--quiet", "--json"]
    assert await cli(*argv, *pki.client_flags()) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 20


async def test_server_name_overrides_the_name_checked(
    pki: Pki, mtls_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*pki.client_flags(), "--tls-server-name", "not-in-the-cert.example"]
    code = await cli("call", mtls_target, GET_USER, *flags, "--timeout", "5")
    assert code == 64 + rpc.Status.UNAVAILABLE
    assert "not-in-the-cert.example" in capsys.readouterr().err


# --- bad files: one line naming the file, exit 2 --------------------------------------


@pytest.mark.parametrize(
    "command", [["serve", SLOW], ["registry", "--port", "0"], ["call", "127.0.0.1:1", GET_USER]]
)
@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key", "--tls-ca"])
def test_a_malformed_tls_file_is_a_one_line_usage_error(
    pki: Pki, capsys: pytest.CaptureFixture[str], command: list[str], flag: str
) -> None:
    flags = {"--tls-cert": pki.server_cert, "--tls-key": pki.server_key, "--tls-ca": pki.ca}
    flags[flag] = pki.garbage
    argv = [*command, *(item for pair in flags.items() for item in pair)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"trio-micro {command[0]}: error: {flag}: {pki.garbage}: "), err


@pytest.mark.parametrize("command", [["list", "127.0.0.1:1"], ["bench", "127.0.0.1:1", GET_USER]])
def test_a_missing_tls_file_is_a_one_line_usage_error(
    pki: Pki, capsys: pytest.CaptureFixture[str], command: list[str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.pem")
    code = main([*command, "--tls-ca", missing])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"--tls-ca: {missing}: cannot load CA certificates" in err


def test_a_key_that_does_not_match_is_named(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", SLOW, "--tls-cert", pki.server_cert, "--tls-key", pki.client_key])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--tls-key: {pki.client_key}: key does not match certificate" in err


def test_serving_tls_without_a_certificate_is_a_usage_error(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registry", "--port", "0", "--tls-ca", pki.ca]) == 2
    assert "serving TLS needs --tls-cert" in capsys.readouterr().err


# --- serve and registry processes over mTLS -------------------------------------------


@asynccontextmanager
async def started(argv: list[str]) -> AsyncIterator[str]:
    """Run ``python -m trio_micro *argv``; yield its first stdout line; terminate it."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_micro", *argv], stdout=subprocess.PIPE, cwd=ROOT
    )
    assert process.stdout is not None
    try:
        output = b""
        with trio.fail_after(WAIT):
            while not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "exited early"
                output += chunk
        yield output.decode().strip()
    finally:
        process.terminate()
        with trio.fail_after(WAIT):
            await process.wait()
        await process.stdout.aclose()


async def test_serve_registers_over_mtls_and_answers_calls_found_through_the_registry(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with registry.open_registry_server(port=0, ssl_context=pki.server_context()) as reg:
        argv = [
            "serve", SLOW, "--port", "0", "--registry", f"registry://{reg.target}",
            *pki.server_flags(), "--log-file", str(tmp_path / "serve.jsonl"),
        ]  # fmt: skip
        # serve presents its server certificate to the registry too: one identity per
        # service, both ways (the server certificate is also valid as a client one).
        async with started(argv) as line:
            assert line.startswith("serving slow on ")
            target = f"registry://{reg.target}/slow"
            assert await cli("list", target, *pki.client_flags()) == 0
            assert "slow" in capsys.readouterr().out


async def test_registry_command_serves_mtls(pki: Pki, tmp_path: Path) -> None:
    argv = ["registry", "--port", "0", *pki.server_flags()]
    async with started([*argv, "--log-file", str(tmp_path / "registry.jsonl")]) as line:
        target = line.removeprefix("registry listening on ")
        context = rpc.client_ssl_context(
            ca=pki.ca, certfile=pki.client_cert, keyfile=pki.client_key
        )
        async with registry.open_registry_client(target, ssl_context=context) as client:
            with trio.fail_after(WAIT):
                async with client.register("users", "127.0.0.1:1"):
                    assert [e.address for e in await client.resolve("users")] == ["127.0.0.1:1"]
