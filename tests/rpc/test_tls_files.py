"""rpc.server_ssl_context / client_ssl_context: a file that cannot be used is named."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from trio_micro import rpc


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    other = ca.issue_cert("127.0.0.2")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_key": tmp_path / "other.key",
        "garbage": tmp_path / "garbage.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    other.private_key_pem.write_to_path(str(paths["other_key"]))
    paths["garbage"].write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    return {name: str(path) for name, path in paths.items()}


def test_good_files_make_a_server_context_that_requires_client_certificates(
    files: dict[str, str],
) -> None:
    context = rpc.server_ssl_context(files["cert"], files["key"], client_ca=files["ca"])
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_a_malformed_certificate_is_named(files: dict[str, str]) -> None:
    with pytest.raises(rpc.TlsFileError, match=r"garbage\.pem: cannot load certificate"):
        rpc.server_ssl_context(files["garbage"], files["key"])


def test_a_missing_certificate_is_named(files: dict[str, str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(rpc.TlsFileError, match=r"nope\.pem: cannot load certificate") as info:
        rpc.client_ssl_context(certfile=missing, keyfile=files["key"])
    assert info.value.path == missing


def test_a_malformed_key_is_named(files: dict[str, str]) -> None:
    with pytest.raises(rpc.TlsFileError, match=r"garbage\.pem: cannot load private key"):
        rpc.server_ssl_context(files["cert"], files["garbage"])


def test_a_key_of_another_certificate_is_named(files: dict[str, str]) -> None:
    with pytest.raises(rpc.TlsFileError, match=r"other\.key: key does not match certificate"):
        rpc.server_ssl_context(files["cert"], files["other_key"])


def test_a_malformed_ca_is_named(files: dict[str, str]) -> None:
    with pytest.raises(rpc.TlsFileError, match=r"garbage\.pem: cannot load CA certificates"):
        rpc.client_ssl_context(ca=files["garbage"])


def test_a_key_without_its_certificate_is_refused(files: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="needs its certificate file"):
        rpc.client_ssl_context(keyfile=files["key"])
