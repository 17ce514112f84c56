"""The keyword options of :func:`~trio_micro.rpc.serve`, as a type.

:func:`~trio_micro.rpc.open_server` passes its keyword arguments on to ``serve``; typing
them ``**options: Unpack[ServerOptions]`` (PEP 692) lets a type checker check each one,
where ``**options: Any`` let any name and any value through. ``serve``'s docstring
documents them; ``tests/rpc/test_typing.py`` checks that the two lists agree.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TypedDict

import trio

from ._interceptors import ServerInterceptor

__all__ = ["ServerOptions"]


class ServerOptions(TypedDict, total=False):
    """The options of :func:`~trio_micro.rpc.serve` besides ``services``, ``host`` and
    ``port``; every one may be left out (``serve``'s default).

    For code that passes options through, as ``open_server`` does::

        def start(**options: Unpack[rpc.ServerOptions]) -> ...:
            return rpc.open_server([UserService()], port=0, **options)

    .. versionadded:: 0.1
    """

    ssl_context: ssl.SSLContext | None
    interceptors: Sequence[ServerInterceptor]
    reflection: bool
    health: bool
    max_connections: int | None
    max_connections_per_peer: int | None
    max_inflight: int | None
    max_concurrent_streams: int
    max_buffered_bytes: int
    max_server_buffered_bytes: int
    max_stalled_streams: int
    stall_timeout: float
    max_frame_size: int
    max_metadata_size: int
    handshake_timeout: float
    keepalive_interval: float
    keepalive_timeout: float
    idle_timeout: float
    min_ping_interval: float
    compression: str | None
    compression_threshold: int
    grace_period: float
    listeners: Sequence[trio.SocketListener] | None
