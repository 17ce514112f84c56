"""A server on a free port and a channel to it, for a test's body; the captured access log.

:func:`open_service` is what ``tests/rpc/conftest.py`` used to spell out by hand: start
:func:`trio_micro.rpc.open_server` on 127.0.0.1 with port 0, open a channel to it, and hand
both out with a typed ``stub()``. :func:`capture_access_log` collects the records the
server's :class:`~trio_micro.rpc.AccessLogInterceptor` writes, on
:func:`structlog.testing.capture_logs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar, final

import structlog
import structlog.testing
import trio
from structlog.typing import EventDict

from trio_micro import rpc
from trio_micro.observe import CALL_EVENTS
from trio_micro.registry import Registry

from ._faults import FaultInjector, open_proxy

__all__ = ["AccessLog", "ServiceHarness", "capture_access_log", "open_service"]

_S = TypeVar("_S", bound=rpc.Service)


@final
class ServiceHarness:
    """What :func:`open_service` yields.

    Attributes:
        server: The running :class:`~trio_micro.rpc.Server`.
        channel: A :class:`~trio_micro.rpc.Channel` to it (through the fault proxy when
            ``faults`` was given).
        address: The server's own ``"host:port"`` (not the proxy's).
    """

    __slots__ = ("address", "channel", "server")

    def __init__(self, server: rpc.Server, channel: rpc.Channel) -> None:
        self.server = server
        self.channel = channel
        host, port = server.address
        self.address = f"{host}:{port}"

    def __repr__(self) -> str:
        return f"<testing.ServiceHarness {self.address}>"

    def stub(self, service: type[_S]) -> _S:
        """A typed stub of ``service`` on the channel (``channel.stub(service)``)."""
        return self.channel.stub(service)


@asynccontextmanager
async def open_service(
    services: Iterable[rpc.Service],
    *,
    interceptors: Sequence[rpc.ServerInterceptor] = (),
    client_interceptors: Sequence[rpc.ClientInterceptor] = (),
    access_log: bool = True,
    faults: FaultInjector | None = None,
    registry: Registry | None = None,
    **server_options: Any,
) -> AsyncIterator[ServiceHarness]:
    """Serve ``services`` on 127.0.0.1 (a free port) and open a channel to them.

    ::

        async with testing.open_service([UserService()]) as svc:
            user = await svc.stub(UserService).get_user(GetUserRequest(user_id=1))

    Entering is a checkpoint; on exit the channel closes, then the server shuts down
    (gracefully when the body returned, at once when it raised or was cancelled). The
    body's exception comes out unwrapped, as :func:`~trio_micro.rpc.open_server`'s does.

    Args:
        services: The service instances to serve.
        interceptors: Server interceptors, after the access log and the fault injector.
        client_interceptors: The channel's interceptors.
        access_log: Put :class:`~trio_micro.rpc.AccessLogInterceptor` first (what
            :func:`capture_access_log` reads).
        faults: A :class:`FaultInjector` to run as a server interceptor (after the access
            log, so faulted calls are logged); the channel then goes through a local TCP
            proxy that the injector's ``drop_connection`` rules cut.
        registry: Also register each service's wire name at the server's address in this
            registry for the body (e.g. a :class:`~trio_micro.registry.MemoryRegistry`,
            for a client that discovers the service).
        server_options: Passed to :func:`~trio_micro.rpc.open_server` (``grace_period``,
            ``max_inflight``, ...).

    Raises:
        TypeError, ValueError: Bad arguments, from ``open_server`` or ``open_channel``.
    """
    chain: list[rpc.ServerInterceptor] = []
    if access_log:
        chain.append(rpc.AccessLogInterceptor())
    if faults is not None:
        chain.append(faults)
    chain.extend(interceptors)
    services = list(services)
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            rpc.open_server(
                services, host="127.0.0.1", port=0, interceptors=chain, **server_options
            )
        )
        host, port = server.address
        target = f"{host}:{port}"
        if faults is not None:
            proxy = await stack.enter_async_context(open_proxy(server.address))
            faults._proxy = proxy
            stack.callback(setattr, faults, "_proxy", None)
            target = f"{proxy.address[0]}:{proxy.address[1]}"
        if registry is not None:
            for service in services:
                await stack.enter_async_context(
                    registry.register(type(service).__rpc_name__, f"{host}:{port}")
                )
        channel = await stack.enter_async_context(
            rpc.open_channel(target, interceptors=client_interceptors)
        )
        yield ServiceHarness(server, channel)


@final
class AccessLog:
    """The log records captured by :func:`capture_access_log`.

    Attributes:
        entries: Every structlog record captured, as dicts (``event``, ``log_level`` and the
            record's fields, with structlog's contextvars merged in).
    """

    __slots__ = ("entries",)

    def __init__(self, entries: list[EventDict]) -> None:
        self.entries = entries

    def __repr__(self) -> str:
        return f"<testing.AccessLog calls={len(self.calls())}>"

    def calls(self, method: str | None = None) -> list[EventDict]:
        """The access-log records (``rpc.call.complete`` / ``rpc.call.failed``), in order;
        only those of ``method`` when given."""
        return [
            entry
            for entry in self.entries
            if entry.get("event") in CALL_EVENTS and (method is None or entry["method"] == method)
        ]

    async def wait_for_calls(self, count: int, method: str | None = None) -> list[EventDict]:
        """Wait until at least ``count`` call records are captured; return them.

        The server writes a call's record after it has sent the response, so the client
        can see the response first. Waits by letting the other tasks run (and polling
        trio's clock every millisecond, free under ``autojump_clock``); bound it with
        :func:`trio.fail_after`. A checkpoint.
        """
        while len(self.calls(method)) < count:
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.001)
        return self.calls(method)


@contextmanager
def capture_access_log() -> Iterator[AccessLog]:
    """Capture structlog's records for the block (:func:`structlog.testing.capture_logs`,
    merging contextvars, so handler-bound fields such as ``cache="hit"`` are kept).

    Like ``capture_logs``, it reconfigures structlog for the block and restores the
    configuration after; loggers cached before (``cache_logger_on_first_use``) are not
    captured.
    """
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as entries:
        yield AccessLog(entries)
