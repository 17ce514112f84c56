"""One channel to a target, with TLS to the registry behind it as well as to the endpoints.

``rpc.open_channel("registry://HOST:PORT/users", ssl_context=...)`` verifies the
endpoints with the context, but the ``registry://`` (and ``etcd://``) resolver connects
to the registry as registered, without TLS: the example services that call others (the
order service, the notifier) open a TLS registry client themselves, here, when they are
given certificates (the demo's ``--tls``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from trio_micro import rpc
from trio_micro.registry import Registry, open_etcd_registry, open_registry_client

__all__ = ["open_target", "tls_context"]


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The client context for these PEM files (``None`` when none is given): verify the
    servers with ``ca``, present ``cert``/``key`` (mutual TLS). Not a checkpoint.

    Raises:
        rpc.TlsFileError: A file can't be used (the message names it).
        ValueError: ``key`` without ``cert``.
    """
    if ca is None and cert is None and key is None:
        return None
    return rpc.client_ssl_context(ca=ca, certfile=cert, keyfile=key)


@asynccontextmanager
async def open_target(
    target: str, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[rpc.Channel]:
    """``rpc.open_channel(target)``; with ``ssl_context``, TLS to the endpoints and to the
    registry of a ``registry://`` / ``etcd://`` target (``https://`` for etcd).

    Entering and leaving are checkpoints; the body's exception comes out unwrapped, as from
    :func:`rpc.open_channel`.
    """
    scheme, sep, rest = target.partition("://")
    if ssl_context is None or not sep or scheme not in ("registry", "etcd"):
        async with rpc.open_channel(target, ssl_context=ssl_context) as channel:
            yield channel
        return
    authority, _, service = rest.partition("/")
    registry: AbstractAsyncContextManager[Registry] = (
        open_registry_client(authority, ssl_context=ssl_context)
        if scheme == "registry"
        else open_etcd_registry(f"https://{authority}", ssl_context=ssl_context)
    )
    async with (
        registry as reg,
        rpc.open_channel(service, registry=reg, ssl_context=ssl_context) as channel,
    ):
        yield channel
