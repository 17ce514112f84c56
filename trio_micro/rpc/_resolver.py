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

A resolver that can lose its backend (a registry server, etcd) may also implement
:class:`StatusResolver`: its ``watch_status`` yields a :class:`ResolverStatus` (the backend
is unreachable, and why) between endpoint sets, so that a channel's calls fail fast with
``UNAVAILABLE`` saying why instead of waiting out their deadline (see
:func:`~trio_micro.rpc.open_channel`, ``wait_for_ready``).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Literal, Protocol, final, runtime_checkable

from trio_micro.protocol import Status

__all__ = [
    "ResolvedEndpoint",
    "Resolver",
    "ResolverStatus",
    "StatusResolver",
    "register_resolver",
    "split_target",
]

_SCHEME_RE: Final = re.compile(r"[a-z][a-z0-9+.-]*")

#: Opens a resolver for the authority part of a target (``"127.0.0.1:2379"``); one
#: registered with ``tls=True`` also takes ``ssl_context=`` (:func:`register_resolver`).
ResolverOpener = Callable[..., AbstractAsyncContextManager["Resolver"]]

_schemes: dict[str, ResolverOpener] = {}
# The schemes whose opener takes the channel's ``ssl_context=`` keyword.
_tls_schemes: set[str] = set()


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


@final
@dataclass(frozen=True, slots=True)
class ResolverStatus:
    """How the resolution of a channel's service stands.

    ``str()`` gives ``"resolving"``, ``"resolved (3 endpoints)"`` or ``"unreachable
    (why)"``. A :class:`StatusResolver` yields ``ResolverStatus.unreachable(why)`` while
    its backend can't be reached; :attr:`Channel.resolver_status
    <trio_micro.rpc.Channel.resolver_status>` reports all three states.

    Attributes:
        state: ``"resolving"`` (no answer yet), ``"resolved"`` (the resolver gave an
            endpoint set) or ``"unreachable"`` (its backend failed; retried).
        endpoints: The endpoints the channel has (kept from the last set while
            unreachable).
        error: Why the backend is unreachable (``""`` in the other states).
        code: The status of the calls that fail fast meanwhile: ``UNAVAILABLE``, or what
            a backend that answers but refuses this client said (``UNAUTHENTICATED``,
            ``PERMISSION_DENIED``: a registry that protects lookups), so that the caller
            hears that retrying won't help.
    """

    state: Literal["resolving", "resolved", "unreachable"]
    endpoints: int = 0
    error: str = ""
    code: Status = Status.UNAVAILABLE

    def __post_init__(self) -> None:
        if self.state not in ("resolving", "resolved", "unreachable"):
            raise ValueError(
                f"state must be 'resolving', 'resolved' or 'unreachable', got {self.state!r}"
            )
        if not isinstance(self.endpoints, int) or self.endpoints < 0:
            raise ValueError(f"endpoints must be an int >= 0, got {self.endpoints!r}")
        if not isinstance(self.error, str) or bool(self.error) != (self.state == "unreachable"):
            raise ValueError("error must be a non-empty str exactly when state is 'unreachable'")
        if not isinstance(self.code, Status) or self.code is Status.OK:
            raise ValueError(f"code must be a Status other than OK, got {self.code!r}")

    @classmethod
    def unreachable(cls, why: str, code: Status = Status.UNAVAILABLE) -> ResolverStatus:
        """The status a resolver yields when its backend can't be reached, or (``code``)
        refuses it: ``why`` names it (``"registry unreachable at 127.0.0.1:7000:
        connection refused"``)."""
        return cls("unreachable", 0, str(why) or "unknown error", code)

    def __str__(self) -> str:
        if self.state == "resolved":
            return f"resolved ({self.endpoints} endpoint{'' if self.endpoints == 1 else 's'})"
        if self.state == "unreachable":
            return f"unreachable ({self.error})"
        return "resolving"


@runtime_checkable
class StatusResolver(Resolver, Protocol):
    """A :class:`Resolver` that also says when its backend is unreachable.

    A channel uses ``watch_status`` instead of ``watch`` when the resolver has it.
    Implemented by the registry server's client and by ``EtcdRegistry``.
    """

    def watch_status(
        self, service: str
    ) -> AsyncGenerator[Sequence[ResolvedEndpoint] | ResolverStatus, None]:
        """As :meth:`Resolver.watch`, and between sets a :class:`ResolverStatus` (made with
        :meth:`ResolverStatus.unreachable`) each time the backend fails, while retrying.

        The next endpoint set means the backend answers again. A status whose state is not
        ``"unreachable"`` is ignored.
        """
        ...


def register_resolver(scheme: str, opener: ResolverOpener, *, tls: bool = False) -> None:
    """Make :func:`~trio_micro.rpc.open_channel` accept ``"<scheme>://<authority>/<service>"``.

    Args:
        scheme: Lower-case URL scheme, e.g. ``"etcd"``.
        opener: Called with the authority (``"127.0.0.1:2379"``); returns an async context
            manager yielding a :class:`Resolver`, entered for the life of the channel.
            A later registration of the same scheme replaces the earlier one.
        tls: The opener also takes ``ssl_context=`` (keyword): the channel's
            ``ssl_context``, or ``None``; given one, it must reach its backend over TLS
            with it. A channel with an ``ssl_context`` refuses a scheme registered without
            ``tls`` (:func:`resolver_context`): its registry would be reached in plain
            text.

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
    if tls:
        _tls_schemes.add(scheme)
    else:
        _tls_schemes.discard(scheme)


def resolver_context(
    target: str, ssl_context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[Resolver] | None:
    """The resolver a ``"<scheme>://<authority>/<service>"`` target opens, with TLS to its
    backend when ``ssl_context`` is given; ``None`` for a target without a scheme. Not a
    checkpoint: nothing is opened until the result is entered.

    Raises:
        ValueError: As :func:`split_target`, or ``ssl_context`` with a scheme whose opener
            was registered without ``tls=True`` (it would reach its registry in plain
            text: open that registry yourself and pass ``registry=``).
    """
    split = split_target(target)
    if split is None:
        return None
    opener, authority, _ = split
    scheme = target.partition("://")[0]
    if scheme in _tls_schemes:
        return opener(authority, ssl_context=ssl_context)
    if ssl_context is not None:
        raise ValueError(
            f"the {scheme}:// resolver can't use TLS, and ssl_context is given: open the "
            "registry yourself and pass registry= (its connection would be in plain text)"
        )
    return opener(authority)


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
