"""Service discovery: register replicas, resolve and watch a service's endpoints.

* :class:`Registry`: the protocol every backend implements (``register`` as an async
  context manager that keeps a TTL entry alive, ``resolve``, ``watch``).
* :class:`MemoryRegistry`: in-process, for tests and single-process applications.
* :class:`EtcdRegistry` / :func:`open_etcd_registry`: etcd v3 through its JSON gateway,
  for many machines.
* :func:`open_registry_server` / :func:`serve_registry` (:class:`RegistryServer`,
  :class:`RegistryService`): a registry as a service on trio_micro's RPC, the default for
  one machine; :func:`open_registry_client` (:class:`RegistryClient`) talks to it.
* :class:`Endpoint`, :class:`Registration`, :func:`parse_address`, :func:`check_service`
  (the rule every backend applies to service names), :func:`check_token` (what a registry
  server's shared token may be), :data:`MAX_TTL` (the longest TTL any
  backend accepts), and the :class:`RegistryError` tree.

Every backend is also an :class:`rpc.Resolver <trio_micro.rpc.Resolver>`, so
``rpc.open_channel("users", registry=reg)`` follows a service live. Importing this package
registers the ``etcd://`` and ``registry://`` target schemes of ``rpc.open_channel``.

Log events defined here: ``registry.endpoint.registered``, ``registry.endpoint.deregistered``,
``registry.endpoint.expired``, ``registry.endpoint.added``, ``registry.endpoint.removed``,
``registry.endpoint.malformed``, ``registry.lease.lost``, ``registry.lease.renew_failed``,
``registry.deregister.failed``, ``registry.watch.retry``, ``registry.watch.canceled``,
``registry.watch.relist``.
"""

from __future__ import annotations

from .._lazy import fixup_module_metadata
from . import _schemes  # noqa: F401  (registers the etcd:// and registry:// schemes)
from ._client import RegistryClient, open_registry_client
from ._etcd import EtcdRegistry, open_etcd_registry
from ._memory import MemoryRegistry
from ._server import (
    DEFAULT_WARMUP,
    RegistryServer,
    RegistryService,
    check_token,
    open_registry_server,
    serve_registry,
)
from ._types import (
    MAX_TTL,
    DuplicateRegistrationError,
    Endpoint,
    Registration,
    Registry,
    RegistryBackendError,
    RegistryError,
    RegistryUnavailableError,
    check_service,
    parse_address,
)

__all__ = [
    "DEFAULT_WARMUP",
    "MAX_TTL",
    "DuplicateRegistrationError",
    "Endpoint",
    "EtcdRegistry",
    "MemoryRegistry",
    "Registration",
    "Registry",
    "RegistryBackendError",
    "RegistryClient",
    "RegistryError",
    "RegistryServer",
    "RegistryService",
    "RegistryUnavailableError",
    "check_service",
    "check_token",
    "open_etcd_registry",
    "open_registry_client",
    "open_registry_server",
    "parse_address",
    "serve_registry",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
