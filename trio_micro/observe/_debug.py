"""The debug HTTP endpoint: Prometheus metrics, the task tree, memory and stats.

The pprof endpoint of this world. :func:`serve_debug` (or :func:`open_debug_server`) serves
a small ASGI application with hypercorn's trio worker, in the caller's trio run:

==================  ===============================================================
``/``               an index of the pages (HTML)
``/metrics``        every metric of the registry, in Prometheus's text format (or
                    OpenMetrics, when the scraper's ``Accept`` header asks for it)
``/debug/tasks``    the live task tree, each task with the line it waits at
                    (:func:`format_task_tree`) (text)
``/debug/memory``   RSS, gc counters and thresholds, and the top allocation sites when
                    :mod:`tracemalloc` is tracing; ``?top=N`` lists N sites (text)
``/debug/stats``    process id, uptime, RSS, live tasks and every registered stats
                    source -- servers, channels, task monitor, caches (JSON)
``/debug/profile``  a wall-clock CPU profile of ``?seconds=N`` (pyinstrument, the
                    ``trio-micro[profile]`` extra), as HTML or ``?format=speedscope``
                    JSON; one at a time (:mod:`._profile`)
``/debug/heap``     tracemalloc's top allocation sites and their growth since a
                    baseline (``?baseline=1`` takes one) (text)
``/healthz``        liveness: ``200 ok`` whenever the event loop answers (text)
``/readyz``         readiness: ``200 ready`` when the ``ready`` callable passed in
                    says so, else ``503 not ready`` (text); for Kubernetes probes
==================  ===============================================================

What "ready" means is the caller's: ``trio-micro serve`` passes a callable that is true
while its server's health is ``SERVING`` and it is registered (this package does not
import the RPC layer). Without one, ``/readyz`` answers like ``/healthz``.

Other paths get 404; methods other than GET and HEAD get 405.

**Security.** These pages show the code's structure, its memory and its load, and
``/debug/memory`` can make the process take a tracemalloc snapshot, which holds the event
loop for a while. They have no authentication. The server therefore binds to 127.0.0.1 by
default and refuses a non-loopback address unless ``allow_remote=True`` is passed as well:
expose it beyond the machine only behind something that authenticates (an SSH tunnel, a
reverse proxy), or on a network only trusted peers reach.

Hypercorn's own log records go to the stdlib logger ``trio_micro.observe.debug_http``
(nothing is printed unless logging is configured to); it writes no access log.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import logging
import os
import socket
import time
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn, final

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._background import open_background_nursery
from .._validate import check_bool, check_callable, check_int
from ._memory import _top_allocations, memory_snapshot
from ._metrics import hub_for, register_process_metrics, resolve_registry, uptime_seconds
from ._profile import BadRequestError, HeapBaseline, heap_page, profile_page
from ._tasks import _walk, format_task_tree

__all__ = ["DebugServer", "open_debug_server", "serve_debug"]

_log = structlog.get_logger("trio_micro.observe")

#: The stdlib logger hypercorn writes its own records to.
HTTP_LOGGER: Final = "trio_micro.observe.debug_http"

_PAGES: Final = (
    ("/metrics", "Prometheus metrics"),
    ("/debug/tasks", "live task tree"),
    ("/debug/memory", "memory: RSS, gc, top allocations (tracemalloc)"),
    ("/debug/stats", "stats as JSON: uptime, RSS, tasks, servers, channels, caches"),
    ("/debug/profile", "CPU profile: ?seconds=N (pyinstrument), ?format=html|speedscope"),
    ("/debug/heap", "heap: top allocation sites, growth since ?baseline=1 (tracemalloc)"),
    ("/healthz", "liveness (200 while the event loop answers)"),
    ("/readyz", "readiness (200 when ready, else 503)"),
)
_DEFAULT_TOP: Final = 25
_MAX_TOP: Final = 1000
_TEXT: Final = b"text/plain; charset=utf-8"
_IMPORTED_AT: Final = time.monotonic()

_json_encode: Final = msgspec.json.Encoder(enc_hook=repr).encode


@final
class DebugServer:
    """A running debug endpoint, as :func:`open_debug_server` yields it.

    Attributes:
        address: ``(host, port)`` it listens on; with ``port=0``, the port the system chose.
        url: Its base URL, e.g. ``"http://127.0.0.1:41234/"``.
    """

    __slots__ = ("address", "url")

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.url = _url(address)

    def __repr__(self) -> str:
        return f"<observe.DebugServer {self.url}>"


def _url(address: tuple[str, int]) -> str:
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


async def serve_debug(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    registry: CollectorRegistry | None = None,
    allow_remote: bool = False,
    before_scrape: Callable[[], Awaitable[object]] | None = None,
    ready: Callable[[], bool] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the debug pages over HTTP until cancelled.

    Start it with ``address = await nursery.start(functools.partial(serve_debug, port=0))``;
    ``task_status`` receives the bound ``(host, port)`` once the socket listens (with
    ``port=0``, the port the system chose). Also calls :func:`register_process_metrics`
    for the registry, so ``/metrics`` always has RSS and GC figures. See the module docs
    for the pages and the security note.

    Never returns. Cancellation stops it: open connections are closed and hypercorn's
    tasks end before this returns (it leaves no task behind). Errors after the start
    (none are expected) come out of hypercorn's nurseries, as :class:`ExceptionGroup`.

    Args:
        host: The address to bind. Must be a loopback address (or a name resolving to
            one, like ``localhost``) unless ``allow_remote`` is true.
        port: The port; 0 lets the system choose.
        registry: The metrics to serve on ``/metrics``, and the stats sources for
            ``/debug/stats``; default ``prometheus_client.REGISTRY``.
        allow_remote: Allow binding to a non-loopback address (``"0.0.0.0"``, a public
            interface): anyone who can reach it can read the pages.
        before_scrape: Awaited before each ``/metrics`` answer, so that collectors whose
            figures need I/O (a supervisor scraping its workers) can refresh them; a
            collector's ``collect()`` is synchronous. Its errors are logged and the
            scrape goes on.
        ready: Called (synchronously, in the trio thread) for each ``/readyz``; true
            means ready. ``None``: ready whenever live.
        task_status: Receives ``(host, port)``.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``host`` is not a loopback address and ``allow_remote`` is false, or
            ``port`` is out of range.
        OSError: The address could not be resolved or bound (e.g. the port is in use),
            raised before ``task_status.started``.
    """
    sock, registry = await _prepare(host, port, registry, allow_remote, before_scrape, ready)
    await _serve_bound(sock, registry, before_scrape, ready, task_status=task_status)


async def _prepare(
    host: str,
    port: int,
    registry: CollectorRegistry | None,
    allow_remote: bool,
    before_scrape: Callable[[], Awaitable[object]] | None,
    ready: Callable[[], bool] | None,
) -> tuple[socket.socket, CollectorRegistry]:
    """Check the arguments and bind the socket (the part that can fail on bad input)."""
    if ready is not None:
        check_callable("ready", ready)
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {host!r}")
    if before_scrape is not None:
        check_callable("before_scrape", before_scrape, expected="an async function")
    check_int("port", port, minimum=0)
    if port > 65535:
        raise ValueError(f"port must be in 0..65535, got {port!r}")
    check_bool("allow_remote", allow_remote)
    registry = resolve_registry(registry)
    register_process_metrics(registry)
    return await _bind(host, port, allow_remote=allow_remote), registry


async def _serve_bound(
    sock: socket.socket,
    registry: CollectorRegistry,
    before_scrape: Callable[[], Awaitable[object]] | None,
    ready: Callable[[], bool] | None,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    address: tuple[str, int] = tuple(sock.getsockname()[:2])
    # hypercorn is imported here, not at module level: importing trio_micro.observe must
    # not cost every process hypercorn's memory (the RPC server's RSS figure).
    import hypercorn.trio
    from hypercorn.config import Config

    config = Config()
    # Hypercorn takes the listening socket over by file descriptor: it makes its own socket
    # object for it before it reports that it started, and closes it when it stops.
    # Binding beforehand turns a taken port into a plain OSError, raised before anything
    # runs, instead of one inside hypercorn's nurseries.
    fd = sock.detach()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger(HTTP_LOGGER)
    relay = _Relay(task_status, address)
    try:
        await hypercorn.trio.serve(
            _DebugApp(registry, before_scrape, ready), config, mode="asgi", task_status=relay
        )
    finally:
        if not relay.handed_over:
            # Cancelled or failed before hypercorn made its socket: the descriptor is ours.
            os.close(fd)
    raise RuntimeError("hypercorn stopped serving the debug endpoint unexpectedly")


@final
class _Relay:
    """The ``task_status`` hypercorn gets: reports our ``(host, port)`` instead of its URLs."""

    def __init__(self, outer: trio.TaskStatus[tuple[str, int]], address: tuple[str, int]) -> None:
        self._outer = outer
        self._address = address
        self.handed_over = False

    def started(self, value: object = None) -> None:
        self.handed_over = True
        _log.info("observe.debug.started", url=_url(self._address))
        self._outer.started(self._address)


async def _bind(host: str, port: int, *, allow_remote: bool) -> socket.socket:
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, type_, proto, _canonname, sockaddr = infos[0]
    bound_host = str(sockaddr[0])
    if not allow_remote and not ipaddress.ip_address(bound_host.split("%")[0]).is_loopback:
        raise ValueError(
            f"the debug endpoint binds to loopback addresses only, got {host!r} "
            f"({bound_host}); pass allow_remote=True to expose it (it has no authentication)"
        )
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
        # Listening here too means hypercorn's own listen() cannot fail after the hand-over.
        sock.listen(100)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def open_debug_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    registry: CollectorRegistry | None = None,
    allow_remote: bool = False,
    before_scrape: Callable[[], Awaitable[object]] | None = None,
    ready: Callable[[], bool] | None = None,
) -> AsyncIterator[DebugServer]:
    """Run :func:`serve_debug` for the ``async with`` body; yield a :class:`DebugServer`.

    Entering waits until the socket listens (a checkpoint). On exit, or when the body is
    cancelled, the server is cancelled and every task of it has ended before ``async
    with`` completes. An exception raised by the body comes out unwrapped
    (:func:`trio_micro.open_background_nursery`); only if the server task failed too do
    both come out in a :class:`BaseExceptionGroup`.

    Args:
        host: See :func:`serve_debug`.
        port: See :func:`serve_debug`.
        registry: See :func:`serve_debug`.
        allow_remote: See :func:`serve_debug`.
        before_scrape: See :func:`serve_debug`.
        ready: See :func:`serve_debug`.

    Raises:
        TypeError, ValueError, OSError: As :func:`serve_debug`, on entry (not wrapped).
    """
    # Checking and binding happen here, outside the nursery, so that their errors are not
    # wrapped in an ExceptionGroup.
    sock, resolved = await _prepare(host, port, registry, allow_remote, before_scrape, ready)
    try:
        async with open_background_nursery() as nursery:
            address = await nursery.start(
                functools.partial(_serve_bound, sock, resolved, before_scrape, ready)
            )
            try:
                yield DebugServer(address)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        # Still open only if _serve_bound never ran (it detaches the socket first thing).
        sock.close()


# -- The ASGI application --

_Headers = list[tuple[bytes, bytes]]


@final
class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes = _TEXT) -> None:
        self.status = status
        self.body = body
        self.headers: _Headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]


def _text(status: int, text: str) -> _Response:
    return _Response(status, text.encode())


@final
class _DebugApp:
    """The ASGI 3 application behind :func:`serve_debug`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        before_scrape: Callable[[], Awaitable[object]] | None,
        ready: Callable[[], bool] | None,
    ) -> None:
        self._registry = registry
        self._before_scrape = before_scrape
        self._ready = ready
        self._heap_baseline = HeapBaseline()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            response = await self._respond(scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response.headers,
                }
            )
            body = b"" if scope["method"] == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _respond(self, scope: Any) -> _Response:
        path: str = scope["path"]
        method: str = scope["method"]
        page = self._pages.get(path)
        if page is None:
            return _text(404, f"not found: {path}\nsee / for the pages\n")
        if method not in ("GET", "HEAD"):
            response = _text(405, f"method not allowed: {method}\n")
            response.headers.append((b"allow", b"GET, HEAD"))
            return response
        query = urllib.parse.parse_qs(
            scope["query_string"].decode("latin-1"), keep_blank_values=True
        )
        try:
            return await page(self, scope, query)
        except BadRequestError as exc:
            return _text(400, f"{exc}\n")
        except Exception as exc:
            _log.exception("observe.debug.page_failed", path=path)
            return _text(500, f"internal error: {type(exc).__name__}\n")

    async def _index(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        items = "\n".join(
            f'<li><a href="{path}">{html.escape(path)}</a> — {html.escape(title)}</li>'
            for path, title in _PAGES
        )
        body = (
            # The empty icon saves the browser a request for /favicon.ico (a 404 it logs
            # as a console error); the viewport makes the page readable on a phone.
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<link rel=icon href='data:,'><title>trio_micro debug</title>"
            f"</head>\n<body><h1>trio_micro debug (pid {os.getpid()})</h1>\n<ul>\n{items}\n"
            "</ul></body></html>\n"
        )
        return _Response(200, body.encode(), b"text/html; charset=utf-8")

    async def _metrics(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        if self._before_scrape is not None:
            try:
                await self._before_scrape()
            except Exception:
                _log.exception("observe.debug.before_scrape_failed")
        accept = _header(scope["headers"], b"accept")
        encoder, content_type = choose_encoder(accept)
        return _Response(200, encoder(self._registry), content_type.encode())

    async def _tasks(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        return _text(200, format_task_tree() + "\n")

    async def _memory(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        top = _int_param(query, "top", _DEFAULT_TOP, maximum=_MAX_TOP)
        allocations = None
        if top and tracemalloc.is_tracing():
            # The snapshot's sorting is pure Python: a worker thread lets the loop run
            # between its GIL switches.
            allocations = await trio.to_thread.run_sync(_top_allocations, top)
        return _text(200, _format_memory(allocations))

    async def _stats(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        snap = memory_snapshot()
        uptime = uptime_seconds(time.time())
        if uptime is None:  # no /proc: count from when this module was imported
            uptime = time.monotonic() - _IMPORTED_AT
        sources: dict[str, list[dict[str, object]]] = {}
        for source, values in hub_for(self._registry).readings():
            sources.setdefault(source.name, []).append(
                {"labels": dict(source.labels), "stats": values}
            )
        root = trio.lowlevel.current_root_task()
        stats = {
            "pid": os.getpid(),
            "uptime_s": round(uptime, 3),
            "rss_bytes": snap.rss_bytes,
            "peak_rss_bytes": snap.peak_rss_bytes,
            "tasks": {"live": 0 if root is None else sum(1 for _ in _walk(root))},
            "gc": {
                "collections": snap.gc_collections,
                "collected": snap.gc_collected,
                "uncollectable": snap.gc_uncollectable,
                "frozen": snap.gc_frozen,
            },
            "tracemalloc": {
                "current_bytes": snap.tracemalloc_current_bytes,
                "peak_bytes": snap.tracemalloc_peak_bytes,
            },
            "sources": sources,
        }
        return _Response(200, _json_encode(stats) + b"\n", b"application/json")

    async def _profile(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        return _Response(*await profile_page(query))

    async def _heap(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        top = _int_param(query, "top", _DEFAULT_TOP, maximum=_MAX_TOP)
        take_baseline = _int_param(query, "baseline", 0, maximum=1) == 1
        return _Response(*await heap_page(self._heap_baseline, top, take_baseline))

    async def _healthz(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        return _text(200, "ok\n")

    async def _readyz(self, scope: Any, query: dict[str, list[str]]) -> _Response:
        if self._ready is None or self._ready():
            return _text(200, "ready\n")
        return _text(503, "not ready\n")

    _pages: Final = {
        "/": _index,
        "/metrics": _metrics,
        "/debug/tasks": _tasks,
        "/debug/memory": _memory,
        "/debug/stats": _stats,
        "/debug/profile": _profile,
        "/debug/heap": _heap,
        "/healthz": _healthz,
        "/readyz": _readyz,
    }


async def _lifespan(receive: Any, send: Any) -> None:
    # Hypercorn runs the lifespan protocol; nothing to set up, so just acknowledge.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ",".join(values)


def _int_param(query: dict[str, list[str]], name: str, default: int, *, maximum: int) -> int:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not text.isdigit() or int(text) > maximum:
        raise BadRequestError(f"{name} must be an integer in 0..{maximum}, got {text!r}")
    return int(text)


def _mib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**20:.1f} MiB"


def _format_memory(allocations: list[dict[str, object]] | None) -> str:
    snap = memory_snapshot()
    lines = [
        f"rss: {_mib(snap.rss_bytes)} (peak {_mib(snap.peak_rss_bytes)})",
        f"gc thresholds: {', '.join(map(str, snap.gc_threshold))}",
        f"gc pending (per generation): {', '.join(map(str, snap.gc_counts))}",
        f"gc collections: {', '.join(map(str, snap.gc_collections))}",
        f"gc collected: {', '.join(map(str, snap.gc_collected))}",
        f"gc uncollectable: {', '.join(map(str, snap.gc_uncollectable))}",
        f"gc frozen objects: {snap.gc_frozen}",
    ]
    if snap.tracemalloc_current_bytes is None:
        lines.append(
            "tracemalloc: not tracing (start it with PYTHONTRACEMALLOC=1 or "
            "tracemalloc.start() to see the top allocation sites)"
        )
    else:
        lines.append(
            f"tracemalloc: {_mib(snap.tracemalloc_current_bytes)} traced "
            f"(peak {_mib(snap.tracemalloc_peak_bytes)})"
        )
    if allocations is not None:
        lines.append(f"top {len(allocations)} allocation sites:")
        lines.extend(
            f"  {site['size_bytes']:>12} bytes  {site['count']:>9} blocks  {site['where']}"
            for site in allocations
        )
    return "\n".join(lines) + "\n"
