"""What a channel needs from service discovery: the :class:`Resolver` protocol.

The RPC layer never imports :mod:`trio_micro.registry`; it defines the little it needs and
the registry implements it. Every :class:`~trio_micro.registry.Registry` *is* a
:class:`Resolver` as it stands: its ``watch(service)`` yields lists of
``registry.Endpoint``, which have the ``address`` and ``metadata`` that
:class:`ResolvedEndpoint` asks for. No adapter, no second endpoint type to convert.

Target strings with a scheme (``"etcd://127.0.0.1:2379/users"``) are looked up in a
table of scheme -> opener that packages fill with :func:`register_resolver`;
:mod:`trio_micro.registry` registers ``etcd`` and ``registry`` (the registry server)
when it is imported.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol, runtime_checkable

__all__ = ["ResolvedEndpoint", "Resolver", "register_resolver", "split_target"]

_SCHEME_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*")

#: Opens a resolver for the authority part of a target (``"127.0.0.1:2379"``).
ResolverOpener = Callable[[str], AbstractAsyncContextManager["Resolver"]]

_schemes: dict[str, ResolverOpener] = {}


@runtime_checkable
class ResolvedEndpoint(Protocol):
    """One replica as a :class:`Resolver` reports it."""

    @property
    def address(self) -> str:
        """``"host:port"`` or ``"[ipv6]:port"``."""
        ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """Labels the replica published (version, zone, weight, ...)."""
        ...


@runtime_checkable
class Resolver(Protocol):
    """Service discovery as a channel uses it: watch a service's endpoint set.

    Implemented by every :class:`~trio_micro.registry.Registry`.
    """

    def watch(self, service: str) -> AsyncGenerator[Sequence[ResolvedEndpoint], None]:
        """Yield the current endpoint set of ``service``, then each new one.

        The channel closes the generator with ``aclose()`` when it is done. A resolver
        that loses its backend should keep the generator alive and retry; an exception
        from it is logged by the channel (``rpc.channel.resolver_failed``) and the watch
        is started again after a backoff, except ``TypeError`` / ``ValueError`` (a bad
        service name), which end the channel.
        """
        ...


def register_resolver(scheme: str, opener: ResolverOpener) -> None:
    """Make :func:`~trio_micro.rpc.open_channel` accept ``"<scheme>://<authority>/<service>"``.

    Args:
        scheme: Lower-case URL scheme, e.g. ``"etcd"``.
        opener: Called with the authority (``"127.0.0.1:2379"``); returns an async context
            manager yielding a :class:`Resolver`, entered for the life of the channel.
            A later registration of the same scheme replaces the earlier one.

    Raises:
        TypeError / ValueError: A bad scheme or a non-callable opener.
    """
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str, got {scheme!r}")
    if not _SCHEME_RE.fullmatch(scheme):
        raise ValueError(f"scheme must be a lower-case URL scheme like 'etcd', got {scheme!r}")
    if not callable(opener):
        raise TypeError(f"opener must be callable, got {opener!r}")
    _schemes[scheme] = opener


def split_target(target: str) -> tuple[ResolverOpener, str, str] | None:
    """Split a ``"<scheme>://<authority>/<service>"`` target as :func:`open_channel` does.

    For tools that check a target before opening a channel (``trio-micro call``). Not a
    checkpoint; the opener is not called.

    Returns:
        ``(opener, authority, service)``, the opener being what :func:`register_resolver`
        registered for the scheme; ``None`` when ``target`` has no ``://`` (an address or
        a service name).

    Raises:
        ValueError: An unknown scheme, or no authority or service name.
    """
    scheme, sep, rest = target.partition("://")
    if not sep:
        return None
    opener = _schemes.get(scheme)
    if opener is None:
        known = ", ".join(sorted(_schemes)) or "none"
        raise ValueError(
            f"no resolver for the scheme of {target!r} (known: {known}; "
            "import trio_micro.registry for 'etcd://' and 'registry://')"
        )
    authority, slash, service = rest.partition("/")
    if not slash or not authority or not service or "/" in service:
        raise ValueError(
            f"a target with a scheme must look like '{scheme}://host:port/service', got {target!r}"
        )
    return opener, authority, service
