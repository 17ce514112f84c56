"""Serving the gateway: hypercorn's trio worker, its limits set, routes from reflection."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn, final

import msgspec
import structlog
import trio

from trio_micro import rpc
from trio_micro._validate import check_int, check_seconds
from trio_micro.protocol import DEFAULT_MAX_FRAME_SIZE

from ._app import ConnectApp

__all__ = ["open_gateway", "routes_of", "serve_gateway"]

_log = structlog.get_logger("trio_micro.gateway")

#: The stdlib logger hypercorn writes its own records to.
HTTP_LOGGER: Final = "trio_micro.gateway.http"
_REFLECTION: Final = "trio_micro.reflection/list_services"
# The call shapes the gateway serves; client- and bidi-streams have no route (yet).
GATEWAY_KINDS: Final = ("unary", "server_stream")
# An unknown route asks the server's reflection again at most this often (seconds).
_REFRESH_INTERVAL: Final = 5.0


def routes_of(services: Iterable[rpc.Service | type[rpc.Service]]) -> dict[str, str]:
    """The route table of ``services``: ``"<service>/<method>"`` -> ``"unary"`` /
    ``"server_stream"`` (what :func:`serve_gateway` takes as ``routes``)."""
    return {
        info.wire_name: info.kind
        for service in services
        for info in service.__rpc_methods__.values()
        if info.kind in GATEWAY_KINDS
    }


@final
class _ReflectedRoutes:
    """Routes read from the server's reflection; asked again (rate-limited) on a miss."""

    def __init__(self, channel: rpc.Channel) -> None:
        self._channel = channel
        self._routes: dict[str, str] = {}
        self._asked_at = -float("inf")
        self._lock = trio.Lock()

    async def __call__(self, method: str) -> str | None:
        kind = self._routes.get(method)
        if kind is not None:
            return kind
        async with self._lock:
            if method not in self._routes and (
                trio.current_time() - self._asked_at >= _REFRESH_INTERVAL
            ):
                self._asked_at = trio.current_time()
                await self._refresh()
        return self._routes.get(method)

    async def _refresh(self) -> None:
        try:
            with trio.fail_after(5):
                answer = await self._channel.call(_REFLECTION, {}, idempotent=True)
            listed = msgspec.convert(answer, rpc.ListServicesResponse)
        except (rpc.RpcError, trio.TooSlowError, msgspec.ValidationError) as exc:
            _log.warning("gateway.reflection_failed", reason=str(exc))
            return
        self._routes = {
            f"{service.name}/{method.name}": method.kind
            for service in listed.services
            for method in service.methods
            if method.kind in GATEWAY_KINDS
        }


@final
class _StaticRoutes:
    def __init__(self, routes: Mapping[str, str]) -> None:
        self._routes = dict(routes)

    async def __call__(self, method: str) -> str | None:
        return self._routes.get(method)


async def serve_gateway(
    channel: rpc.Channel,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    routes: Mapping[str, str] | None = None,
    max_body_size: int = DEFAULT_MAX_FRAME_SIZE,
    read_timeout: float = 30.0,
    keep_alive_timeout: float = 5.0,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the Connect protocol (JSON) over HTTP for the methods behind ``channel``.

    Start it with ``address = await nursery.start(partial(serve_gateway, channel))``;
    ``task_status`` receives the bound ``(host, port)``. Never returns; cancellation closes
    the listener and every connection (in-flight calls are cancelled, which sends CANCEL).

    Hypercorn's limits are set, not left at their defaults, against slow and greedy
    clients: request headers at most 16 KiB (``h11_max_incomplete_size``, and the HTTP/2
    header list), a connection that sends nothing for ``read_timeout`` seconds is closed
    (slowloris: hypercorn has no read timeout by default), idle keep-alive connections
    close after ``keep_alive_timeout``, at most 100 streams per HTTP/2 connection, and
    the body is cut at ``max_body_size`` by the application.

    Args:
        channel: Where the calls go (a channel to the local server, or a registry target).
        routes: ``"<service>/<method>"`` -> kind (:func:`routes_of`); by default the
            server's reflection is asked, and asked again (at most every 5 s) for a route
            it did not list.
        max_body_size: The largest request body, bytes (default: the RPC max frame size).
        read_timeout: Seconds a connection may send nothing while a request is due.
        keep_alive_timeout: Seconds an idle keep-alive connection stays open.
        task_status: Receives ``(host, port)``.

    Raises:
        TypeError / ValueError: A bad argument.
        OSError: The address can't be bound (before ``task_status.started``).
    """
    if not isinstance(channel, rpc.Channel):
        raise TypeError(f"channel must be an rpc.Channel, got {channel!r}")
    check_int("max_body_size", max_body_size, minimum=1)
    check_seconds("read_timeout", read_timeout, finite=True)
    check_seconds("keep_alive_timeout", keep_alive_timeout, finite=True)
    router = _ReflectedRoutes(channel) if routes is None else _StaticRoutes(routes)
    app = ConnectApp(channel, router, max_body_size)

    import hypercorn.trio  # here: only a process serving HTTP pays for hypercorn
    from hypercorn.config import Config

    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger(HTTP_LOGGER)
    config.h11_max_incomplete_size = 16 * 1024
    config.h2_max_header_list_size = 16 * 1024
    config.h2_max_concurrent_streams = 100
    config.read_timeout = int(read_timeout) or 1
    config.keep_alive_timeout = keep_alive_timeout
    config.keep_alive_max_requests = 10_000
    config.include_server_header = False
    sock = _bind(host, port)
    address: tuple[str, int] = tuple(sock.getsockname()[:2])
    fd = sock.detach()
    config.bind = [f"fd://{fd}"]
    handed_over = False

    class _Started:
        def started(self, value: object = None) -> None:
            nonlocal handed_over
            handed_over = True
            _log.info("gateway.started", address=list(address))
            task_status.started(address)

    try:
        await hypercorn.trio.serve(app, config, mode="asgi", task_status=_Started())
    finally:
        if not handed_over:
            os.close(fd)  # hypercorn never made its socket: the descriptor is ours
    raise RuntimeError("hypercorn stopped serving the gateway unexpectedly")


@asynccontextmanager
async def open_gateway(channel: rpc.Channel, **options: Any) -> AsyncIterator[tuple[str, int]]:
    """Run :func:`serve_gateway` for the ``async with`` body; yield its ``(host, port)``.

    Entering waits until the socket listens (a checkpoint); leaving stops the gateway
    (in-flight HTTP calls are cancelled). ``options`` are :func:`serve_gateway`'s. As with
    trio's nurseries, an exception from the body comes out in an ``ExceptionGroup``.
    """
    async with trio.open_nursery() as nursery:
        address = await nursery.start(functools.partial(serve_gateway, channel, **options))
        try:
            yield address
        finally:
            nursery.cancel_scope.cancel()


def _bind(host: str, port: int) -> socket.socket:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {host!r}")
    check_int("port", port, minimum=0)
    if port > 65535:
        raise ValueError(f"port must be in 0..65535, got {port!r}")
    family, type_, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
