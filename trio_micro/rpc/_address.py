"""Server addresses: :class:`Endpoint`, parsed and canonical; no I/O and no trio.

Kept apart from the transport so that what only names a server (the asyncio client of
:mod:`trio_micro.aio`, the registry's addresses) can use it without importing Trio.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, final

__all__ = ["Endpoint"]

_ADDRESS_FORM: Final = "'host:port' or '[ipv6]:port'"
# RFC 1123 host name labels (after lower-casing); dotted numbers must be an IPv4 address.
_HOST_LABEL_RE: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DOTTED_NUMBERS_RE: Final = re.compile(r"[0-9.]+")
# An IPv6 zone (``fe80::1%eth0``): an interface name or number.
_ZONE_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")


@final
class Endpoint:
    """A server address: ``host`` and ``port``, in canonical form.

    The one address type of trio_micro: ``registry.Endpoint.address`` is ``str()`` of one,
    and :func:`trio_micro.registry.parse_address` is :meth:`parse`. The rules:

    * a host name is ASCII letters, digits and ``-`` in dot-separated labels of 1-63
      characters that neither start nor end with ``-``, at most 253 characters, an optional
      final dot (RFC 1123); it is lower-cased;
    * an IPv4 address is four decimal numbers (no leading zeros); an IPv6 address, with an
      optional ``%zone`` (letters, digits, ``_.-``), is compressed (``0:0::1`` becomes
      ``::1``) and written in brackets in an address string (``[::1]:80``), never without;
    * the port is 1-65535.

    No name lookup happens. Endpoints compare and hash by ``(host, port)``.

    Args:
        host: A host name or an IP address (IPv6 without brackets).
        port: The TCP port, 1-65535.

    Raises:
        TypeError: ``host`` is not a str or ``port`` not an int.
        ValueError: A bad host or port; the message says which and shows it.
    """

    __slots__ = ("_hash", "host", "port")

    def __init__(self, host: str, port: int) -> None:
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {port!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be in [1, 65535], got {port!r}")
        if ":" in host:
            host = _ipv6(host, f"host {host!r} is not a valid IPv6 address (without brackets)")
        else:
            host = _host(host, f"host {host!r}")
        self.host = host
        self.port = port
        self._hash = hash((host, port))  # a channel looks endpoints up on every call

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        """Parse ``"host:port"`` or ``"[ipv6]:port"`` into its canonical endpoint.

        Not a checkpoint; no name lookup happens. See the class docs for the rules.

        Raises:
            TypeError: ``address`` is not a str.
            ValueError: It is not of the form ``host:port`` / ``[ipv6]:port``; the message
                says which part is wrong and shows the whole address.
        """
        if not isinstance(address, str):
            raise TypeError(f"address must be a str of the form {_ADDRESS_FORM}, got {address!r}")
        if "/" in address:
            raise ValueError(
                f"address must be {_ADDRESS_FORM} without a scheme or path, got {address!r}"
            )
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"address must look like {_ADDRESS_FORM}, got {address!r}")
        if not port_text.isascii() or not port_text.isdigit():
            raise ValueError(f"address must end in ':<port>' with a decimal port, got {address!r}")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"address port must be in [1, 65535], got {address!r}")
        if host.startswith("[") and host.endswith("]"):
            host = _ipv6(
                host[1:-1], f"address has brackets but no valid IPv6 address in them: {address!r}"
            )
        elif ":" in host:
            raise ValueError(
                f"an IPv6 address needs brackets, as in '[::1]:50051', got {address!r}"
            )
        else:
            host = _host(host, f"address {address!r}")
        endpoint: Endpoint = object.__new__(cls)
        endpoint.host = host
        endpoint.port = port
        endpoint._hash = hash((host, port))
        return endpoint

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"Endpoint({self.host!r}, {self.port!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return self.host == other.host and self.port == other.port

    def __hash__(self) -> int:
        return self._hash


def _ipv6(text: str, error: str) -> str:
    """The compressed form of an IPv6 address (without brackets); ``error`` if it is none."""
    _, percent, zone = text.partition("%")
    if percent and not _ZONE_RE.fullmatch(zone):
        raise ValueError(error)
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ValueError(error) from None


def _host(text: str, shown: str) -> str:
    """The canonical form of a host name or IPv4 address; ``shown`` names it in errors."""
    # isascii first: str.lower() maps some non-ASCII letters to ASCII ones (KELVIN SIGN -> k).
    host = text.lower() if text.isascii() else text
    if _DOTTED_NUMBERS_RE.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"{shown}: the host is not a valid IPv4 address") from None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(
            f"{shown}: the host must be an IP address or a DNS name (ASCII letters, digits, "
            "'-' and '.'; labels of 1-63 characters, not starting or ending with '-')"
        )
    return host
