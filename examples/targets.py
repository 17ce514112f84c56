"""The client TLS context of the example services that call others (the order service,
the notifier), from the PEM files they are given (the demo's ``--tls``).

``rpc.open_channel(target, ssl_context=...)`` uses it for the endpoints and for the
registry behind a ``registry://`` / ``etcd://`` target alike.
"""

from __future__ import annotations

import ssl

from trio_micro import rpc

__all__ = ["tls_context"]


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
