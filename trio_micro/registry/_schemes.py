"""Target schemes for :func:`trio_micro.rpc.open_channel`, registered on import.

* ``etcd://host:port/service``: an :class:`~trio_micro.registry.EtcdRegistry` at
  ``http://host:port`` with the default key prefix.
* ``registry://host:port/service``: a registry server
  (:func:`~trio_micro.registry.open_registry_client`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from trio_micro import rpc

from ._client import RegistryClient, open_registry_client
from ._etcd import EtcdRegistry, open_etcd_registry

__all__: list[str] = []


def _open_etcd(authority: str) -> AbstractAsyncContextManager[EtcdRegistry]:
    return open_etcd_registry(f"http://{authority}")


def _open_registry(authority: str) -> AbstractAsyncContextManager[RegistryClient]:
    return open_registry_client(authority)


rpc.register_resolver("etcd", _open_etcd)
rpc.register_resolver("registry", _open_registry)
