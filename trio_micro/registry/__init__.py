"""Service discovery: register replicas, resolve and watch a service's endpoints.

* :class:`Registry`: the protocol every backend implements (``register`` as an async
  context manager that keeps a TTL entry alive, ``resolve``, ``watch``).
* :class:`MemoryRegistry`: in-process, for tests and single-process applications.
* :class:`EtcdRegistry` / :func:`open_etcd_registry`: etcd v3 through its JSON gateway,
  for many machines.
* :class:`Endpoint`, :class:`Registration`, :func:`parse_address`, and the
  :class:`RegistryError` tree.

Log events defined here: ``registry.endpoint.registered``, ``registry.endpoint.deregistered``,
``registry.endpoint.expired``, ``registry.endpoint.added``, ``registry.endpoint.removed``,
``registry.endpoint.malformed``, ``registry.lease.lost``, ``registry.lease.renew_failed``,
``registry.deregister.failed``, ``registry.watch.retry``, ``registry.watch.canceled``,
``registry.watch.relist``.
"""

from __future__ import annotations

from ._etcd import EtcdRegistry, open_etcd_registry
from ._memory import MemoryRegistry
from ._types import (
    DuplicateRegistrationError,
    Endpoint,
    Registration,
    Registry,
    RegistryBackendError,
    RegistryError,
    RegistryUnavailableError,
    parse_address,
)

__all__ = [
    "DuplicateRegistrationError",
    "Endpoint",
    "EtcdRegistry",
    "MemoryRegistry",
    "Registration",
    "Registry",
    "RegistryBackendError",
    "RegistryError",
    "RegistryUnavailableError",
    "open_etcd_registry",
    "parse_address",
]
