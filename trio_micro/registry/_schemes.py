"""Target schemes for :func:`trio_micro.rpc.open_channel`, registered on import.

* ``etcd://host:port/service``: an :class:`~trio_micro.registry.EtcdRegistry` at
  ``http://host:port`` with the default key prefix; at ``https://host:port``, verified
  with the channel's ``ssl_context``, when the channel has one.
* ``registry://host:port/service``: a registry server
  (:func:`~trio_micro.registry.open_registry_client`), over TLS with the channel's
  ``ssl_context`` when it has one.

Both are registered with ``tls=True``: a channel's TLS reaches the registry behind its
target too, never in plain text. A registry with other TLS settings, or a registry
server that wants a token: open it and pass ``registry=`` to ``open_channel``.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager

from trio_micro import rpc

from ._client import RegistryClient, open_registry_client
from ._etcd import EtcdRegistry, open_etcd_registry

__all__: list[str] = []


def _open_etcd(
    authority: str, *, ssl_context: ssl.SSLContext | None = None
) -> AbstractAsyncContextManager[EtcdRegistry]:
    if ssl_context is None:
        return open_etcd_registry(f"http://{authority}")
    return open_etcd_registry(f"https://{authority}", ssl_context=ssl_context)


def _open_registry(
    authority: str, *, ssl_context: ssl.SSLContext | None = None
) -> AbstractAsyncContextManager[RegistryClient]:
    return open_registry_client(authority, ssl_context=ssl_context)


rpc.register_resolver("etcd", _open_etcd, tls=True)
rpc.register_resolver("registry", _open_registry, tls=True)
