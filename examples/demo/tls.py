"""``--tls``: a throwaway certificate authority and certificates for one run of the demo.

:func:`make_certificates` writes, in a folder the caller removes at exit (a
:class:`tempfile.TemporaryDirectory`):

* ``ca.pem``: a self-signed CA, valid for a day;
* ``service.pem`` / ``service.key``: the certificate every child process (registry,
  replicas, notifier) serves with and presents as a client (replicas to the registry,
  orders to users), for ``127.0.0.1`` and ``localhost``, common name ``demo-service``;
* ``client.pem`` / ``client.key``: the demo's own client certificate, common name
  ``demo-client``.

Every server requires a client certificate signed by the CA (mutual TLS), so a call the
demo makes over plain TCP, or with a certificate from another CA, fails at the handshake.

The keys are P-256 ECDSA (fast to make: the whole set takes a few milliseconds). Made with
the ``cryptography`` package, which the locked environment of ``make demo`` holds (it is
what the tests' ``trustme`` is built on); ``trustme`` itself is a test dependency only.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .config import DemoError

SERVICE_NAME: Final = "demo-service"
CLIENT_NAME: Final = "demo-client"
_VALID_FOR: Final = datetime.timedelta(days=1)


@dataclass(frozen=True)
class DemoCertificates:
    """Paths of the run's CA and certificates (see the module docs)."""

    ca: Path
    service_cert: Path
    service_key: Path
    client_cert: Path
    client_key: Path

    def service_flags(self) -> list[str]:
        """The ``trio-micro`` TLS flags of a child: serve with the service certificate,
        require clients signed by the CA, present the same certificate to other servers."""
        return [
            "--tls-cert", str(self.service_cert), "--tls-key", str(self.service_key),
            "--tls-ca", str(self.ca),
        ]  # fmt: skip


def make_certificates(folder: Path) -> DemoCertificates:
    """Write a new CA and the service and client certificates into ``folder``.

    Not a checkpoint (a few milliseconds of CPU).

    Raises:
        DemoError: The ``cryptography`` package is not installed (``make venv`` installs
            it), or a file cannot be written.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise DemoError(
            "--tls needs the `cryptography` package: run the demo with `make demo TLS=1`, "
            "whose environment holds it"
        ) from None

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trio_micro demo CA")])

    def builder(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALID_FOR)
        )

    ca_cert = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        cert = (
            builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    certs = DemoCertificates(
        ca=folder / "ca.pem",
        service_cert=folder / "service.pem",
        service_key=folder / "service.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    service_pem, service_key = leaf(SERVICE_NAME)
    client_pem, client_key = leaf(CLIENT_NAME)
    try:
        certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        certs.service_cert.write_bytes(service_pem)
        certs.service_key.write_bytes(service_key)
        certs.client_cert.write_bytes(client_pem)
        certs.client_key.write_bytes(client_key)
    except OSError as exc:
        raise DemoError(f"cannot write the demo's certificates in {folder}: {exc}") from None
    return certs
