"""TCP listeners for :func:`~trio_micro.rpc.serve`, with ``SO_REUSEPORT`` when asked.

Several processes that each bind the same port with ``SO_REUSEPORT`` (Linux 3.9+, the BSDs,
macOS) all accept on it, and the kernel spreads new connections over them -- on Linux by a
hash of the connection's addresses, so one client connection always lands on one process.
``trio-micro serve --workers N`` uses it for the port outside clients know.
"""

from __future__ import annotations

import errno
import socket

import trio

from trio_micro._validate import check_bool, check_int, check_optional_int

__all__ = ["open_tcp_listeners"]


async def open_tcp_listeners(
    port: int, *, host: str | None = None, reuse_port: bool = False, backlog: int | None = None
) -> list[trio.SocketListener]:
    """Bind and listen on ``host:port``, one listener per address ``host`` resolves to.

    Without ``reuse_port`` this is :func:`trio.open_tcp_listeners`. With it, every socket
    also gets ``SO_REUSEPORT``, so other processes (and other calls of this function) may
    bind the same port, and the kernel spreads the incoming connections over all of them.
    A checkpoint (name resolution); cancellation closes what was bound.

    Args:
        port: The TCP port; 0 lets the system choose (with ``reuse_port``, each resolved
            address may get a different one).
        host: As for :func:`trio.open_tcp_listeners` (``None``: every interface).
        reuse_port: Set ``SO_REUSEPORT``.
        backlog: The listen backlog (default: the system's maximum).

    Raises:
        TypeError / ValueError: A bad argument.
        OSError: The address can't be bound (``EADDRINUSE`` when a process holds the port
            without ``SO_REUSEPORT``, or as another user), or ``reuse_port`` was asked on a
            platform without ``SO_REUSEPORT`` (``ENOPROTOOPT``, saying so).
    """
    check_int("port", port, minimum=0)
    if port > 65535:
        raise ValueError(f"port must be in 0..65535, got {port!r}")
    check_bool("reuse_port", reuse_port)
    check_optional_int("backlog", backlog, minimum=1)
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:  # pragma: no cover - Linux, macOS and the BSDs have it
        raise OSError(
            errno.ENOPROTOOPT, "reuse_port needs SO_REUSEPORT, which this platform does not have"
        )
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, sockaddr in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, option, 1)
                if family == socket.AF_INET6:  # as trio does: no v4-mapped clash with AF_INET
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(backlog if backlog is not None else 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
