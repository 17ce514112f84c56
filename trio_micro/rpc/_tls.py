"""TLS and mutual TLS: contexts built from PEM files, and the verified peer's identity.

:func:`server_ssl_context` is the server's option to require and verify client
certificates (mutual TLS): given ``client_ca``, the handshake fails for a client with no
certificate, one signed by another CA, or an expired one, and every call on the connection
carries the client's :class:`PeerIdentity` (:attr:`ServerCall.peer_identity
<trio_micro.rpc.ServerCall>`), which an interceptor can authorize by.
:func:`client_ssl_context` builds the other side. Both are plain :class:`ssl.SSLContext`
objects, so they also serve the registry client (through :func:`open_channel`) and etcd
(httpx's ``verify=``).

A file that cannot be used raises :class:`TlsFileError` naming it: missing, unreadable,
not PEM, a key that does not match its certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from .._errors import TrioMicroError

if TYPE_CHECKING:
    import trio

__all__ = [
    "PeerIdentity",
    "TlsFileError",
    "client_ssl_context",
    "server_ssl_context",
]

# What an X.509 name attribute is called in a subject (getpeercert's long names).
_SHORT_NAMES: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
}


class TlsFileError(TrioMicroError, ValueError):
    """A certificate, key or CA file cannot be used; the message names the file.

    Attributes:
        path: The file.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


@final
@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The identity in a client certificate the server verified.

    Attributes:
        subject: The subject's attributes in certificate order, e.g.
            ``(("commonName", "billing"), ("organizationName", "Example"))``.
        sans: The subject alternative names, e.g.
            ``(("DNS", "billing.internal"), ("URI", "spiffe://example/billing"))``.
    """

    subject: tuple[tuple[str, str], ...]
    sans: tuple[tuple[str, str], ...]

    @property
    def common_name(self) -> str | None:
        """The subject's (last) common name, or ``None``."""
        names = [value for key, value in self.subject if key == "commonName"]
        return names[-1] if names else None

    def san_values(self, kind: str) -> tuple[str, ...]:
        """The SANs of one kind (``"DNS"``, ``"URI"``, ``"IP Address"``, ``"email"``)."""
        return tuple(value for key, value in self.sans if key == kind)

    def __str__(self) -> str:
        return ",".join(f"{_SHORT_NAMES.get(key, key)}={value}" for key, value in self.subject)


def peer_identity(stream: trio.SSLStream[Any]) -> PeerIdentity | None:
    """The verified certificate identity of ``stream``'s peer, or ``None`` when it sent
    none (after the handshake; not a checkpoint)."""
    cert = stream.getpeercert()
    if not cert:  # None or {}: no certificate, or one that was not verified
        return None
    subject = tuple((str(key), str(value)) for rdn in cert.get("subject", ()) for key, value in rdn)
    sans = tuple((str(key), str(value)) for key, value in cert.get("subjectAltName", ()))
    return PeerIdentity(subject, sans)


def server_ssl_context(
    certfile: str, keyfile: str | None = None, *, client_ca: str | None = None
) -> ssl.SSLContext:
    """A server-side context serving ``certfile`` (and ``keyfile``, unless the key is in
    ``certfile``).

    Args:
        certfile: PEM certificate chain of the server.
        keyfile: PEM private key; ``None`` when ``certfile`` holds it.
        client_ca: PEM CA bundle. Given, clients must present a certificate signed by it
            and valid now (mutual TLS); the handshake fails otherwise, and the server logs
            ``rpc.connection.tls_failed``.

    Raises:
        TlsFileError: A file is missing, unreadable, not PEM, or the key does not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, certfile, keyfile)
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    *, ca: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """A client-side context that verifies the server (by ``ca``, else the system's CAs)
    and, given ``certfile``, presents that client certificate (mutual TLS).

    Raises:
        TlsFileError: A file is missing, unreadable, not PEM, or the key does not match.
        ValueError: ``keyfile`` without ``certfile``.
    """
    context = ssl.create_default_context()
    if ca is not None:
        _load_ca(context, ca)
    if certfile is not None:
        _load_chain(context, certfile, keyfile)
    elif keyfile is not None:
        raise ValueError(f"a key file ({keyfile!r}) needs its certificate file")
    return context


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise TlsFileError(path, f"cannot load CA certificates ({_reason(exc)})") from exc


def _load_chain(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    # load_cert_chain's errors don't say which file is bad: check the certificate alone
    # first, so that a later failure is the key's.
    try:
        ssl.create_default_context().load_verify_locations(cafile=certfile)
    except OSError as exc:
        raise TlsFileError(certfile, f"cannot load certificate ({_reason(exc)})") from exc
    try:
        context.load_cert_chain(certfile, keyfile)
    except OSError as exc:
        if keyfile is None:
            raise TlsFileError(certfile, f"cannot load private key ({_reason(exc)})") from exc
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError(keyfile, f"key does not match certificate {certfile}") from exc
        raise TlsFileError(keyfile, f"cannot load private key ({_reason(exc)})") from exc


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)
