"""An in-process registry for tests and single-process applications.

Theory of operation
-------------------
Entries live in ``service -> address -> _Entry`` with an absolute expiry time on trio's
clock. A registration's renewal task pushes the expiry to ``now + ttl`` every ``ttl / 3``
seconds, like a lease keepalive; an entry whose expiry has passed is dead and is pruned by
whoever looks next (``resolve``, ``watch``, ``register``), so the behaviour under
:class:`trio.testing.MockClock` is exact. Watchers park on a per-service
:class:`trio.Event` that every change sets (and replaces), with a deadline at the earliest
expiry of the service's entries, so an expiry wakes them without any background task.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import final

import trio

from ._types import (
    Endpoint,
    Registration,
    check_registration,
    check_service,
    claim_registration,
    endpoint_list,
    log,
    log_changes,
    run_alongside,
)

__all__ = ["MemoryRegistry"]


@dataclass(slots=True)
class _Entry:
    registration: Registration
    expires_at: float


@final
class MemoryRegistry:
    """A :class:`~trio_micro.registry.Registry` held in this process's memory.

    Time is trio's clock, so TTLs, renewal and expiry are exact under
    :class:`trio.testing.MockClock`. Nothing is shared between instances. The object may be
    created outside ``trio.run``, but each instance must be used from one run only.
    """

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {}
        self._active: set[tuple[str, str]] = set()
        self._changed: dict[str, trio.Event] = {}

    def register(
        self,
        service: str,
        address: str,
        *,
        ttl: float = 10.0,
        metadata: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Registration]:
        """Register ``address`` as a replica of ``service`` while the ``async with`` runs.

        See :meth:`Registry.register` for the arguments and the contract. Entering is a
        checkpoint; the renewal task (named ``trio_micro.registry.renew``) runs in a nursery
        owned by the context manager; exceptions from the body come out unwrapped.

        Raises:
            TypeError / ValueError: Bad arguments (raised by this call, before entering).
            DuplicateRegistrationError: On entry, when ``service`` at ``address`` is already
                registered through this registry and that registration is still open.
        """
        return self._register(*check_registration(service, address, ttl, metadata))

    @asynccontextmanager
    async def _register(
        self, service: str, endpoint: Endpoint, ttl: float
    ) -> AsyncIterator[Registration]:
        await trio.lowlevel.checkpoint()
        with claim_registration(self._active, service, endpoint, owner="this registry"):
            registration = Registration(service, endpoint, ttl)
            try:
                self._put(registration)
                log.info(
                    "registry.endpoint.registered",
                    service=service,
                    address=endpoint.address,
                    ttl=ttl,
                    backend="memory",
                )
                async with run_alongside(
                    self._renew, registration, name="trio_micro.registry.renew"
                ):
                    yield registration
            finally:
                if not registration._abandoned:
                    self._remove(registration)

    async def _renew(self, registration: Registration) -> None:
        with registration._renewal_scope:
            while True:
                await trio.sleep(registration.ttl / 3)
                entry = self._entries.get(registration.service, {}).get(registration.address)
                if entry is None or entry.registration is not registration:
                    # Only possible if the event loop was blocked for longer than the TTL.
                    log.warning(
                        "registry.lease.lost",
                        service=registration.service,
                        address=registration.address,
                        backend="memory",
                    )
                    self._put(registration)
                else:
                    entry.expires_at = trio.current_time() + registration.ttl

    def _put(self, registration: Registration) -> None:
        entries = self._entries.setdefault(registration.service, {})
        expires_at = trio.current_time() + registration.ttl
        entries[registration.address] = _Entry(registration, expires_at)
        self._notify(registration.service)

    def _remove(self, registration: Registration) -> None:
        entries = self._entries.get(registration.service, {})
        entry = entries.get(registration.address)
        # A newer registration of the same address (after this one was abandoned) stays.
        if entry is not None and entry.registration is registration:
            del entries[registration.address]
            log.info(
                "registry.endpoint.deregistered",
                service=registration.service,
                address=registration.address,
                backend="memory",
            )
            self._notify(registration.service)

    def _notify(self, service: str) -> None:
        event = self._changed.pop(service, None)
        if event is not None:
            event.set()

    def _live(self, service: str) -> dict[str, _Entry]:
        """The service's entries after dropping the expired ones."""
        entries = self._entries.get(service, {})
        now = trio.current_time()
        expired = [address for address, entry in entries.items() if entry.expires_at <= now]
        for address in expired:
            del entries[address]
            log.info("registry.endpoint.expired", service=service, address=address)
        if expired:
            self._notify(service)
        return entries

    async def resolve(self, service: str) -> list[Endpoint]:
        """Return the live endpoints of ``service``, sorted by address (``[]`` if none).

        A checkpoint.

        Raises:
            TypeError / ValueError: Bad service name.
        """
        service = check_service(service)
        await trio.lowlevel.checkpoint()
        return self._snapshot(service)

    def _snapshot(self, service: str) -> list[Endpoint]:
        live = self._live(service)
        return endpoint_list({address: e.registration.endpoint for address, e in live.items()})

    async def watch(self, service: str) -> AsyncGenerator[list[Endpoint], None]:
        """Iterate over the endpoint sets of ``service``: the current one, then each change.

        See :meth:`Registry.watch`. Waiting for the next item is a checkpoint; the first
        item (possibly ``[]``) comes after one checkpoint. No task, no nursery: the
        generator parks on a change event with a deadline at the next expiry.

        Raises:
            TypeError / ValueError: Bad service name (on the first iteration).
        """
        service = check_service(service)
        await trio.lowlevel.checkpoint()
        last: list[Endpoint] | None = None
        while True:
            changed = self._changed.setdefault(service, trio.Event())
            current = self._snapshot(service)
            if current != last:
                log_changes(service, last, current)
                last = current
                yield list(current)
                # Things may have changed while the consumer had the item: look again.
                continue
            expiries = [entry.expires_at for entry in self._entries.get(service, {}).values()]
            with trio.move_on_at(min(expiries, default=math.inf)):
                await changed.wait()
