"""Faults on purpose: an interceptor that delays or fails chosen calls, and a TCP proxy
that drops connections.

:class:`FaultInjector` is both a server and a client interceptor (it reads only the call's
``service`` and ``method``). Its rules are checked in the order they were added; the first
that matches a call acts on it. Delays sleep with :func:`trio.sleep`, so under
:class:`trio.testing.MockClock` (``autojump_clock``) they cost no real time.

Dropping a connection needs the connection, which no interceptor sees: :func:`open_service`
(given ``faults=``) routes the channel through a :class:`Proxy` and attaches it to the
injector, and a ``drop`` rule closes every connection through it, abruptly (the client
sees ``UNAVAILABLE``, as after a crashed server).
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Literal, final

import trio

from trio_micro._background import open_background_nursery
from trio_micro.rpc import ClientCall, RpcError, ServerCall, Status

__all__ = ["FaultInjector"]

_Action = Literal["delay", "fail", "drop"]
# A hostile or careless test must not make the proxy hold unbounded data: it copies in
# chunks of this size and holds at most one chunk per direction.
_CHUNK: Final = 65536


@final
class _Rule:
    __slots__ = ("action", "code", "message", "method", "nth", "seconds", "seen", "service")

    def __init__(
        self,
        action: _Action,
        *,
        service: str | None,
        method: str | None,
        nth: int | None,
        seconds: float = 0.0,
        code: Status = Status.UNAVAILABLE,
        message: str = "",
    ) -> None:
        self.action: _Action = action
        self.service = service
        self.method = method
        self.nth = nth
        self.seconds = seconds
        self.code = code
        self.message = message
        self.seen = 0

    def matches(self, service: str, method: str) -> bool:
        """Count the call if it is one of this rule's; true when the rule acts on it."""
        if self.service is not None and self.service != service:
            return False
        if self.method is not None and self.method != method:
            return False
        self.seen += 1
        return self.nth is None or self.seen == self.nth


def _check_nth(nth: int | None) -> None:
    if nth is not None and (isinstance(nth, bool) or not isinstance(nth, int) or nth < 1):
        raise ValueError(f"nth must be a positive int or None (every call), got {nth!r}")


@final
class FaultInjector:
    """A server and client interceptor that delays, fails or cuts chosen calls.

    ::

        faults = testing.FaultInjector()
        faults.fail(rpc.Status.UNAVAILABLE, method="get_user", nth=2)  # the 2nd call fails
        faults.delay(1.5, method="get_user")                           # every call waits

    Each rule matches by ``service`` and ``method`` (``None``: any) and acts on the
    ``nth`` matching call (counting from 1), or on every one with ``nth=None``. The first
    rule (in the order added) that acts on a call wins. ``calls`` records every
    ``(service, method)`` the injector saw, faulted or not.

    Interceptors run inside the call's task: a delay is cancelled with the call (the
    client's deadline or cancel), which then ends as usual.
    """

    __slots__ = ("_proxy", "_rules", "calls")

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._proxy: Proxy | None = None
        self.calls: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"<testing.FaultInjector rules={len(self._rules)} calls={len(self.calls)}>"

    def delay(
        self,
        seconds: float,
        *,
        service: str | None = None,
        method: str | None = None,
        nth: int | None = None,
    ) -> None:
        """Sleep ``seconds`` (trio's clock) before the matching call proceeds."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {seconds!r}")
        if not 0 <= seconds < math.inf:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        _check_nth(nth)
        self._rules.append(_Rule("delay", service=service, method=method, nth=nth, seconds=seconds))

    def fail(
        self,
        code: Status,
        message: str = "injected fault",
        *,
        service: str | None = None,
        method: str | None = None,
        nth: int | None = None,
    ) -> None:
        """Fail the matching call with ``RpcError(code, message)`` instead of running it."""
        if not isinstance(code, Status) or code is Status.OK:
            raise ValueError(f"code must be an rpc.Status other than OK, got {code!r}")
        _check_nth(nth)
        self._rules.append(
            _Rule("fail", service=service, method=method, nth=nth, code=code, message=message)
        )

    def drop_connection(
        self, *, service: str | None = None, method: str | None = None, nth: int | None = None
    ) -> None:
        """Close every client connection, abruptly, when the matching call reaches the server.

        Needs the proxy that :func:`open_service` sets up when given this injector as
        ``faults``; the call itself then fails with ``UNAVAILABLE`` on the client -- unless
        the channel retries it (a method marked ``idempotent``, see
        :class:`~trio_micro.rpc.RetryPolicy`) and the retry, on a new connection, is not
        dropped too: with ``nth=1`` it may then succeed, depending on whether the retry's
        jittered backoff outlasts the reconnect. Without the proxy, the matching call
        fails with ``FAILED_PRECONDITION``, saying so.
        """
        _check_nth(nth)
        self._rules.append(_Rule("drop", service=service, method=method, nth=nth))

    async def intercept(
        self, call: ServerCall | ClientCall, proceed: Callable[[], Awaitable[None]]
    ) -> None:
        """Apply the first rule that acts on ``call``, else proceed. A checkpoint."""
        self.calls.append((call.service, call.method))
        rule = next((r for r in self._rules if r.matches(call.service, call.method)), None)
        if rule is None:
            await proceed()
        elif rule.action == "delay":
            await trio.sleep(rule.seconds)
            await proceed()
        elif rule.action == "fail":
            await trio.lowlevel.checkpoint()
            raise RpcError(rule.code, rule.message)
        else:
            if self._proxy is None:
                # An RpcError, not a RuntimeError: the test sees the message in the call's
                # failure instead of a bare INTERNAL.
                raise RpcError(
                    Status.FAILED_PRECONDITION,
                    "FaultInjector.drop_connection needs the injector passed to "
                    "testing.open_service(faults=...), which routes calls through a proxy",
                )
            await self._proxy.drop()
            raise RpcError(Status.UNAVAILABLE, "connection dropped by the fault injector")


@final
class Proxy:
    """A TCP proxy in front of ``target``, from :func:`open_proxy`: counts the bytes it
    forwards each way and can cut every connection (what
    :meth:`FaultInjector.drop_connection` does).

    Attributes:
        address: ``(host, port)`` it listens on (127.0.0.1, a free port).
        bytes_up: Bytes forwarded from clients to ``target`` so far.
        bytes_down: Bytes forwarded from ``target`` to clients so far.
        dropped: Connections cut by :meth:`drop`.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._scopes: set[trio.CancelScope] = set()
        self.address: tuple[str, int] = ("", 0)
        self.bytes_up = 0
        self.bytes_down = 0
        self.dropped = 0

    async def drop(self) -> None:
        """Cancel every live connection's forwarding (closing both sockets). A checkpoint."""
        for scope in self._scopes:
            scope.cancel()
        self.dropped += len(self._scopes)
        await trio.lowlevel.checkpoint()

    async def _handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await trio.open_tcp_stream(*self._target)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, client, upstream, True, nursery.cancel_scope)
                    nursery.start_soon(self._pipe, upstream, client, False, nursery.cancel_scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the server or the client went away: so does the other side
            finally:
                self._scopes.discard(scope)
                await trio.aclose_forcefully(client)

    async def _pipe(
        self, source: trio.SocketStream, sink: trio.SocketStream, up: bool, done: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(_CHUNK):
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # one side ended: end the other too


@asynccontextmanager
async def open_proxy(target: tuple[str, int]) -> AsyncIterator[Proxy]:
    """Run a :class:`Proxy` to ``target`` on 127.0.0.1 for the body of an ``async with``.

    ::

        async with testing.open_proxy(server.address) as proxy:
            host, port = proxy.address
            async with rpc.open_channel(f"{host}:{port}") as channel: ...
            print(proxy.bytes_up, proxy.bytes_down)

    Entering is a checkpoint (it listens before the body runs); leaving cuts every
    connection still open. The body's exception comes out unwrapped.
    """
    proxy = Proxy(target)
    async with open_background_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1")
        )
        proxy.address = tuple(listeners[0].socket.getsockname()[:2])
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
