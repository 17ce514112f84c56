"""Client- and bidi-stream calls from asyncio: the trio client's send/receive pair, mirrored.

::

    async with users.import_users() as (send, receive):   # aio.StreamCall
        for user in batch:
            await send.send(user)          # waits for the server's credit
        await send.aclose()                # half-close: END
        summary = await receive.receive()  # the RESPONSE (bidi: async for receive)

The shapes, names and rules are those of :class:`trio_micro.rpc.StreamCall`,
:class:`~trio_micro.rpc.RequestSender` and :class:`~trio_micro.rpc.ResponseReceiver`
(docs/rpc.md §5a), so a type checker, which sees the ``rpc`` types on a stub (the stub is
typed as the service class), checks the item types both ways. What asyncio can't share is
trio's exception types: this module has its own :exc:`EndOfChannel`,
:exc:`ClosedResourceError` and :exc:`BrokenResourceError`, raised where the trio client
raises trio's.

The REQUEST is sent on ``async with``, with the deadline of the enclosing
:func:`~._deadline.timeout`. Sending spends the server's credit (its
``initial_stream_credit``, tracked by the sans-io ``Connection``) and parks on a future in
the call's record (``_Call.sender``) once it is used up; the connection's
``data_received`` resolves it on the server's CREDIT and when the call ends. Leaving the
block while the call is still running -- an exception, the task being cancelled, or just
not waiting for the answer -- sends CANCEL, and the server cancels the handler. No task
is started: the caller's own tasks do the sending and receiving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Self, TypeVar, cast, final

import msgspec

from trio_micro._validate import ENCODE_ERRORS, cannot_encode
from trio_micro.protocol import (
    DECODE_ERRORS,
    Error,
    ErrorCode,
    LocalProtocolError,
    Response,
    Status,
)
from trio_micro.rpc import MethodInfo, RpcError

from ._connection import AioConnection, _Call, inflated
from ._deadline import timeout_ms

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = [
    "BrokenResourceError",
    "ClosedResourceError",
    "EndOfChannel",
    "RequestSender",
    "ResponseReceiver",
    "StreamCall",
]

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")

_encode: Final = msgspec.msgpack.Encoder().encode
# A sender that never has to wait yields after this many items or queued bytes: the
# batched write then leaves (so the transport can push back) and other tasks run, even
# when a server grants far more credit than the default 64.
_RUN_ITEMS: Final = 64
_RUN_BYTES: Final = 64 * 1024


class EndOfChannel(Exception):  # noqa: N818 (trio's name)
    """``receive()`` on a call that ended cleanly once everything was received (the
    asyncio client's ``trio.EndOfChannel``; ``async for`` just stops)."""


class ClosedResourceError(Exception):
    """Sending after ``aclose()`` (the half-close) or after the call was cancelled, or
    receiving after the receiver's ``aclose()`` (as ``trio.ClosedResourceError``)."""


class BrokenResourceError(Exception):
    """Sending after the server answered (RESPONSE or END) before the caller was done
    (as ``trio.BrokenResourceError``)."""


class _Half:
    """What the two halves of a stream call share: the call they act on, and
    ``async with`` closing them."""

    __slots__ = ("_call", "_closed", "_conn", "_info", "_sid")

    def __init__(self, conn: AioConnection, sid: int, call: _Call, info: MethodInfo) -> None:
        self._conn = conn
        self._sid = sid
        self._call = call
        self._info = info
        self._closed = False

    def __repr__(self) -> str:
        return f"<aio.{type(self).__name__} {self._info.wire_name}>"

    async def aclose(self) -> None:
        raise NotImplementedError  # pragma: no cover

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _ended(call: _Call) -> Exception:
    """What sending on a call that has ended raises."""
    if call.error is not None:
        return call.error
    frame = call.frame
    if type(frame) is Error:
        return RpcError(frame.code, frame.message, frame.details)
    if call.cancelled:
        return ClosedResourceError("the call was cancelled")
    return BrokenResourceError("the server has already ended the call")


@final
class RequestSender(_Half, Generic[ReqT]):
    """The requests of a client- or bidi-stream call, as the caller sends them.

    :meth:`send` waits while the server's credit is used up or the connection's transport
    is paused (a checkpoint then). Otherwise it returns without yielding, except once per
    64 items or 64 KiB sent without waiting, when it yields to the loop (so the queued
    write leaves, the transport can push back, and other tasks run even if the server
    grants huge credit). A task cancelled while it waits re-raises
    :exc:`asyncio.CancelledError`; leaving the :class:`StreamCall` block then cancels the
    call. :meth:`aclose` half-closes the call (END); ``async with send:`` does so on exit.

    What ``send`` raises:


    Raises:
        TypeError: ``value`` is not of the method's request type (nothing is sent).
        ClosedResourceError: After :meth:`aclose`, or after the call was cancelled.
        RpcError: The call ended with that status (the server's ERROR, ``UNAVAILABLE`` for
            a lost connection), or ``RESOURCE_EXHAUSTED``: the item is over the server's
            frame size.
        BrokenResourceError: The server answered (RESPONSE or END) before you finished
            sending.
    """

    __slots__ = ("_run",)

    def __init__(self, conn: AioConnection, sid: int, call: _Call, info: MethodInfo) -> None:
        super().__init__(conn, sid, call, info)
        self._run = 0  # items sent since send() last yielded

    async def send(self, value: ReqT) -> None:
        """Send one request; see the class docs."""
        if self._closed:
            raise ClosedResourceError("can't send after aclose() (the half-close)")
        info = self._info
        if not isinstance(value, info.request_type):
            raise TypeError(
                f"{info.wire_name} takes {info.request_type.__name__} requests, got {value!r}"
            )
        try:
            payload = _encode(value)
        except ENCODE_ERRORS as exc:
            raise cannot_encode(f"request item of {info.wire_name}", value, exc) from None
        conn, call, sid = self._conn, self._call, self._sid
        proto = conn.proto
        while True:
            if call.frame is not None or call.error is not None or call.cancelled:
                raise _ended(call)
            if proto.send_credit_available(sid) <= 0:
                waiter: asyncio.Future[None] = conn.loop.create_future()
                call.sender = waiter
                try:
                    await waiter
                finally:
                    if call.sender is waiter:
                        call.sender = None
                self._run = 0
            elif conn.paused:
                await conn.wait_writable()
                self._run = 0
            else:
                break
        try:
            data = proto.send_item(sid, payload)
        except LocalProtocolError as exc:
            if exc.code is ErrorCode.FRAME_SIZE_ERROR:
                raise RpcError(Status.RESOURCE_EXHAUSTED, exc.message) from None
            raise _ended(call) from None  # pragma: no cover - checked just above
        conn.write(data)
        self._run += 1
        if self._run >= _RUN_ITEMS or conn.queued >= _RUN_BYTES:
            self._run = 0
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Half-close: tell the server no more requests come (END). Idempotent; does
        nothing once the call has ended. Not a checkpoint."""
        if not self._closed:
            self._closed = True
            call = self._call
            if call.frame is None and call.error is None and not call.cancelled:
                try:
                    data = self._conn.proto.send_end(self._sid)
                except LocalProtocolError:  # pragma: no cover - the stream just ended
                    return
                self._conn.write(data)


@final
class ResponseReceiver(_Half, Generic[RespT]):
    """The answers of a client- or bidi-stream call.

    A client-stream's receiver yields its one RESPONSE, then ends; a bidi-stream's yields
    the server's items until its END, granting the server credit as they are consumed (in
    steps of half the channel's ``initial_stream_credit``). ``receive()`` waits for the
    next answer (a checkpoint then, otherwise it returns without yielding); a task
    cancelled while waiting there cancels the call (CANCEL), as for server-streams.

    What ``receive`` raises:


    Raises:
        RpcError: The server's ERROR, ``UNAVAILABLE`` if the connection failed,
            ``INTERNAL`` for an answer that does not decode, ``CANCELLED`` if another task
            cancelled the call meanwhile.
        EndOfChannel: The call ended cleanly and everything was received.
        ClosedResourceError: After :meth:`aclose`, or after the call was cancelled.
    """

    __slots__ = ("_delivered",)

    def __init__(self, conn: AioConnection, sid: int, call: _Call, info: MethodInfo) -> None:
        super().__init__(conn, sid, call, info)
        self._delivered = False  # a client-stream's RESPONSE was returned

    async def receive(self) -> RespT:
        """The next answer; see the class docs."""
        call = self._call
        if self._closed or (call.cancelled and not call.items):
            what = "response receiver was closed" if self._closed else "call was cancelled"
            raise ClosedResourceError(f"the {what}")
        if call.items is not None:  # bidi: the server-stream machinery
            payload = await self._conn.next_item(self._sid, call)
            if payload is None:
                raise EndOfChannel
        else:
            payload = await self._response()
        try:
            return cast(RespT, self._info.decode_response(payload))
        except DECODE_ERRORS as exc:
            self._conn.cancel_stream(self._sid, call)
            raise RpcError(
                Status.INTERNAL, f"bad answer from {self._info.wire_name}: {exc}"
            ) from None

    async def _response(self) -> bytes:
        call = self._call
        if call.frame is None and call.error is None:
            waiter: asyncio.Future[None] = self._conn.loop.create_future()
            call.waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                self._conn.cancel_stream(self._sid, call)
                raise
        frame = call.frame
        if type(frame) is Response and not self._delivered:
            self._delivered = True
            return inflated(self._conn.proto, frame.payload)
        if type(frame) is Response:
            raise EndOfChannel
        exc = _ended(call)
        if isinstance(exc, BrokenResourceError):  # pragma: no cover - END ends bidi only
            raise RpcError(Status.INTERNAL, "END answered a client-stream call")
        raise exc

    def __aiter__(self) -> ResponseReceiver[RespT]:
        return self

    async def __anext__(self) -> RespT:
        try:
            return await self.receive()
        except EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving; cancels the call (CANCEL) if it is still running. Not a
        checkpoint."""
        self._closed = True
        call = self._call
        if call.frame is None and call.error is None:
            self._conn.cancel_stream(self._sid, call)


@final
class StreamCall(Generic[ReqT, RespT]):
    """One client- or bidi-stream call: ``async with stub.method() as (send, receive)``.

    Entering sends the REQUEST (waiting for a stream slot, connecting if need be; the
    deadline of the enclosing :func:`~trio_micro.aio.timeout` goes with it) and returns a
    :class:`RequestSender` and a :class:`ResponseReceiver`. Leaving the block while the
    call is still running cancels it on the server (CANCEL); the block's own exception
    propagates unchanged. Usable once.

    What ``async with`` raises:


    Raises:
        RpcError: ``UNAVAILABLE`` (no connection), ``CANCELLED`` on a closed channel.
        RuntimeError: Entered twice.
    """

    __slots__ = ("_channel", "_entered", "_info", "_metadata", "_opened")

    def __init__(self, channel: Channel, info: MethodInfo, metadata: dict[str, str] | None) -> None:
        self._channel = channel
        self._info = info
        self._metadata = metadata
        self._entered = False
        self._opened: tuple[AioConnection, int, _Call] | None = None

    def __repr__(self) -> str:
        return f"<aio.StreamCall {self._info.wire_name}>"

    async def __aenter__(self) -> tuple[RequestSender[ReqT], ResponseReceiver[RespT]]:
        if self._entered:
            raise RuntimeError(f"{self!r} was already used; call the stub method again")
        self._entered = True
        info = self._info
        conn = await self._channel.connection()
        sid, call = await conn.open_stream(
            info.wire_name, b"", timeout_ms(conn.loop), self._metadata, info.call_type
        )
        self._opened = (conn, sid, call)
        return RequestSender(conn, sid, call, info), ResponseReceiver(conn, sid, call, info)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            conn, sid, call = self._opened
            if call.frame is None and call.error is None:
                conn.cancel_stream(sid, call)


def streaming_method(
    channel: Channel, info: MethodInfo, metadata: dict[str, str] | None
) -> Callable[[], StreamCall[Any, Any]]:
    """The stub callable of a client- or bidi-stream method: ``() -> StreamCall``."""

    def call() -> StreamCall[Any, Any]:
        return StreamCall(channel, info, metadata)

    call.__name__ = call.__qualname__ = info.name
    return call
