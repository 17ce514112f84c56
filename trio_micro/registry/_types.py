"""What every registry backend shares: endpoints, the protocol, errors, input checks.

::

    TrioMicroError
    └── RegistryError
        ├── DuplicateRegistrationError   this registry already holds that service + address
        ├── RegistryUnavailableError     the backend can't be reached (refused, reset, timed out)
        └── RegistryBackendError         the backend answered with an error, or unreadably

Bad arguments (a malformed address, a service name with a ``/``, a TTL that is not in
(0, :data:`MAX_TTL`]) raise
``TypeError`` / ``ValueError`` when the method is called, before any I/O, like the rest of
trio_micro. Using a closed registry raises :class:`trio.ClosedResourceError`.
"""

from __future__ import annotations

import re
import types
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol, final

import structlog
import trio

from trio_micro import rpc

from .._background import open_background_nursery
from .._errors import TrioMicroError
from .._validate import check_seconds, check_str_mapping

__all__ = [
    "MAX_TTL",
    "DuplicateRegistrationError",
    "Endpoint",
    "Registration",
    "Registry",
    "RegistryBackendError",
    "RegistryError",
    "RegistryUnavailableError",
    "parse_address",
]

log: Final = structlog.get_logger("trio_micro.registry")

#: The longest TTL a registration may ask for (seconds), in every backend: a lease that
#: outlives its process by more than this would keep a dead replica listed for too long,
#: and a registry full of never-expiring leases could only grow.
MAX_TTL: Final = 300.0

_SERVICE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RegistryError(TrioMicroError):
    """Base class of the registry's errors."""


class DuplicateRegistrationError(RegistryError):
    """This registry object already holds a live registration of that service and address.

    Only registrations made through the same registry object are compared: two processes
    registering the same address in etcd is a restart or a handover, and the later one wins.
    """


class RegistryUnavailableError(RegistryError):
    """The backend could not be reached: connection refused or reset, or a timeout.

    One-shot operations (:meth:`Registry.resolve`, entering :meth:`Registry.register`)
    raise it; long-running ones (keeping a registration alive, :meth:`Registry.watch`)
    log it and retry with backoff.
    """


class RegistryBackendError(RegistryError):
    """The backend answered, but with an error or with something we could not read.

    Args:
        message: What was expected and what came back (shown with ``!r``).
        code: The backend's error code when it gave one (etcd: a gRPC status code).

    Attributes:
        message: As passed.
        code: As passed.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def parse_address(address: object) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[ipv6]:port"`` into a normalised host and a port.

    The same parser and rules as :meth:`rpc.Endpoint.parse <trio_micro.rpc.Endpoint.parse>`
    (host names lower-cased, IPv6 addresses compressed and returned without brackets), as
    a tuple. Not a checkpoint; no name lookup happens.

    Args:
        address: The address to check.

    Returns:
        ``(host, port)``, the port in 1-65535.

    Raises:
        TypeError: ``address`` is not a str.
        ValueError: It is not of the form ``host:port`` / ``[ipv6]:port``; the message
            says which part is wrong and shows the whole address.
    """
    endpoint = rpc.Endpoint.parse(address)  # type: ignore[arg-type]  # it checks the type
    return endpoint.host, endpoint.port


def check_address(address: object) -> str:
    """Return the canonical form of ``address``; errors as in :func:`parse_address`."""
    return str(rpc.Endpoint.parse(address))  # type: ignore[arg-type]  # it checks the type


def check_service(service: object) -> str:
    """Return ``service`` if it is a valid service name, else raise ``TypeError``/``ValueError``.

    A name is 1-128 ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or
    digit: it becomes one segment of an etcd key, so it can't hold a ``/``.
    """
    if not isinstance(service, str):
        raise TypeError(f"service must be a str, got {service!r}")
    if not _SERVICE_RE.fullmatch(service):
        raise ValueError(
            "service must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, got {service!r}"
        )
    return service


def check_ttl(ttl: object) -> float:
    """Return ``ttl`` as a float if it is a number of seconds in (0, :data:`MAX_TTL`]."""
    checked = check_seconds("ttl", ttl, finite=True)
    if checked > MAX_TTL:
        raise ValueError(f"ttl must be at most {MAX_TTL:g} seconds, got {ttl!r}")
    return checked


@final
@dataclass(frozen=True, slots=True, init=False, repr=False)
class Endpoint:
    """One replica of a service: where it listens and what it says about itself.

    Endpoints are immutable and hashable, compare by address and metadata, and sort by
    address in what :meth:`Registry.resolve` and :meth:`Registry.watch` return.

    Args:
        address: ``"host:port"`` or ``"[ipv6]:port"``; stored in canonical form (see
            :func:`parse_address`).
        metadata: Free-form str-to-str labels (zone, version, weight, ...); copied.

    Raises:
        TypeError / ValueError: A malformed address or metadata that is not str to str.
    """

    address: str
    metadata: Mapping[str, str] = field(compare=False)
    _metadata_key: frozenset[tuple[str, str]]

    def __init__(self, address: str, metadata: Mapping[str, str] | None = None) -> None:
        copied = check_str_mapping("metadata", metadata)
        object.__setattr__(self, "address", check_address(address))
        object.__setattr__(self, "metadata", types.MappingProxyType(copied))
        # Compared and hashed instead of the mapping, which is neither orderable nor hashable.
        object.__setattr__(self, "_metadata_key", frozenset(copied.items()))

    @property
    def host(self) -> str:
        """The host part of :attr:`address` (an IPv6 address without brackets)."""
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        """The port part of :attr:`address`."""
        return parse_address(self.address)[1]

    def __repr__(self) -> str:
        return f"Endpoint(address={self.address!r}, metadata={dict(self.metadata)!r})"


def endpoint_list(endpoints: Mapping[str, Endpoint]) -> list[Endpoint]:
    """The endpoints of an ``address -> Endpoint`` map, sorted by address."""
    return [endpoints[address] for address in sorted(endpoints)]


def log_changes(service: str, before: list[Endpoint] | None, after: list[Endpoint]) -> None:
    """Log ``registry.endpoint.added`` / ``.removed`` for what a watcher saw change.

    A changed metadata is logged as removed-then-added. ``before`` is ``None`` for the
    first set a watcher sees; its endpoints are logged as added.
    """
    old = set(before or ())
    new = set(after)
    for endpoint in sorted(old - new, key=lambda e: e.address):
        log.info("registry.endpoint.removed", service=service, address=endpoint.address)
    for endpoint in sorted(new - old, key=lambda e: e.address):
        log.info(
            "registry.endpoint.added",
            service=service,
            address=endpoint.address,
            metadata=dict(endpoint.metadata),
        )


def check_registration(
    service: str, address: str, ttl: float, metadata: Mapping[str, str] | None
) -> tuple[str, Endpoint, float]:
    """Check the arguments of :meth:`Registry.register`; return ``(service, endpoint, ttl)``.

    Not a checkpoint; backends call it in ``register`` itself, so that bad arguments are
    raised by the call, before any ``async with``.

    Raises:
        TypeError / ValueError: A bad service name, metadata, address or ``ttl``.
    """
    checked_service = check_service(service)
    endpoint = Endpoint(address, metadata)
    return checked_service, endpoint, check_ttl(ttl)


@contextmanager
def claim_registration(
    active: set[tuple[str, str]], service: str, endpoint: Endpoint, *, owner: str
) -> Iterator[None]:
    """Hold ``(service, endpoint.address)`` in a backend's set of open registrations.

    Not a checkpoint. The key is removed again when the block is left, however it is left.

    Args:
        active: The backend's set of ``(service, address)`` keys of open registrations.
        service: The (checked) service name.
        endpoint: The endpoint being registered.
        owner: How the error message names the backend, e.g. ``repr(self)``.

    Raises:
        DuplicateRegistrationError: On entry, when the key is already held.
    """
    key = (service, endpoint.address)
    if key in active:
        raise DuplicateRegistrationError(
            f"{endpoint.address!r} is already registered for service {service!r} by {owner}"
        )
    active.add(key)
    try:
        yield
    finally:
        active.discard(key)


@asynccontextmanager
async def run_alongside(
    fn: Callable[..., Awaitable[object]], *args: object, name: str
) -> AsyncIterator[None]:
    """Run ``fn(*args)`` (a registration's renewal) in a nursery of its own while the body
    runs, and cancel it when the body ends.

    ``trio_util.run_and_cancelling`` does the same but cannot name the task, and the name
    is what the task tree (``/debug/tasks``) and the task monitor show.

    Entering is not a checkpoint; leaving waits for ``fn`` to finish being cancelled.
    An exception from the body comes out unwrapped; one from ``fn`` in the nursery's
    :class:`BaseExceptionGroup` (:func:`trio_micro.open_background_nursery`).
    """
    async with open_background_nursery() as nursery:
        nursery.start_soon(fn, *args, name=name)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


@final
class Registration:
    """A live registration, as yielded by :meth:`Registry.register`.

    Attributes:
        service: The service name.
        endpoint: The registered endpoint (canonical address and a copy of the metadata).
        ttl: Seconds an entry lives without renewal: the requested TTL, or what the backend
            granted (etcd counts whole seconds and has a minimum).
    """

    __slots__ = ("_abandoned", "_renewal_scope", "endpoint", "service", "ttl")

    def __init__(self, service: str, endpoint: Endpoint, ttl: float) -> None:
        self.service = service
        self.endpoint = endpoint
        self.ttl = ttl
        self._abandoned = False
        # The backend's renewal task runs inside this scope.
        self._renewal_scope = trio.CancelScope()

    @property
    def address(self) -> str:
        """The registered address (canonical form)."""
        return self.endpoint.address

    def _abandon(self) -> None:
        """Stop renewing and skip deregistration on exit: a crash, for tests.

        The entry then disappears when its TTL runs out, as when the process is killed.
        """
        self._abandoned = True
        self._renewal_scope.cancel()

    def __repr__(self) -> str:
        return f"Registration(service={self.service!r}, address={self.address!r}, ttl={self.ttl!r})"


class Registry(Protocol):
    """Service discovery: register replicas, resolve and watch a service's endpoints.

    Backends: :class:`~trio_micro.registry.MemoryRegistry` (in-process),
    :class:`~trio_micro.registry.RegistryClient` (the registry server) and
    :class:`~trio_micro.registry.EtcdRegistry` (etcd v3); all pass the same contract tests
    (``tests/registry/test_contract.py``). Every registry is also an
    :class:`rpc.Resolver <trio_micro.rpc.Resolver>`, so channels can follow its services.
    """

    def register(
        self,
        service: str,
        address: str,
        *,
        ttl: float = 10.0,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Registration]:
        """Register ``address`` as a replica of ``service`` while the ``async with`` runs.

        The arguments are checked when called. Entering adds the entry (a checkpoint, with
        I/O for remote backends); a task in a nursery owned by the context manager renews
        it about every ``ttl / 3`` seconds; exiting, also on error or cancellation, removes
        it. An entry that is not renewed (the process died) disappears after ``ttl``.
        The body's exceptions come out unwrapped (the renewal task never raises), as do
        errors raised while entering.

        Args:
            service: The service name (letters, digits, ``.``, ``_``, ``-``).
            address: ``"host:port"`` or ``"[ipv6]:port"``.
            ttl: Seconds the entry outlives its last renewal, at most :data:`MAX_TTL` (300).
            metadata: str-to-str labels published with the address.

        Returns:
            An async context manager yielding the :class:`Registration`.

        Raises:
            TypeError / ValueError: Bad service name, address, ``ttl`` or metadata (raised
                by this call, before entering).
            DuplicateRegistrationError: On entry: this registry already has a live
                registration of ``service`` at ``address``.
            RegistryUnavailableError: On entry: the backend can't be reached.
        """
        ...

    async def resolve(self, service: str) -> list[Endpoint]:
        """Return the live endpoints of ``service``, sorted by address.

        A service nobody registered has no endpoints: ``[]``, not an error. A checkpoint.

        Raises:
            TypeError / ValueError: Bad service name.
            RegistryUnavailableError: The backend can't be reached (not retried).
        """
        ...

    def watch(self, service: str) -> AsyncGenerator[list[Endpoint], None]:
        """Iterate over the endpoint sets of ``service``: the current one, then each change.

        Each item is a new list sorted by address; an item is produced only when the set
        (addresses or metadata) differs from the previous item. The generator runs no
        task and holds no nursery; close it promptly with :func:`contextlib.aclosing`
        when leaving the loop early. Backend outages are retried with backoff, keeping
        the last set meanwhile.

        Raises:
            TypeError / ValueError: Bad service name (on the first iteration).
        """
        ...
