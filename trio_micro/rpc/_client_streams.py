"""The caller's side of client- and bidi-stream calls: a send/receive pair like trio's channels.

::

    async with users.import_users() as (send, receive):   # rpc.StreamCall
        for user in batch:
            await send.send(user)          # waits for the server's credit
        await send.aclose()                # half-close: END
        summary = await receive.receive()  # the RESPONSE (bidi: async for receive)

:class:`RequestSender` is a ``trio.abc.SendChannel`` and :class:`ResponseReceiver` a
``trio.abc.ReceiveChannel``, so :mod:`trio_micro.toolkit`'s fan-out and merge (and anything
written for trio's memory channels) work on remote streams directly.

The REQUEST is sent on ``async with``. Sending parks on the call's record
(``_Call.sender``) while the server's credit is used up; the connection's reader wakes it
on the server's CREDIT and when the call ends. Leaving the block while the call is still
running -- an exception, a cancellation, or just not waiting for the answer -- sends CANCEL,
and the server cancels the handler. No task is started: the caller's own tasks do the
sending and receiving.

Frames leave through the connection's writer, so a run of sends goes out in one
``send_all``. An item sent right after the caller waited for an answer (ping-pong on a
bidi-stream) and the END are sent at once instead when the call is alone on its connection
(:meth:`~._client.ClientConnection.write_lone`, as for a lone unary REQUEST): the server is
probably waiting for them, and the writer task's scheduling round would delay them.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast, final

import msgspec
import trio

from trio_micro._validate import ENCODE_ERRORS, cannot_encode
from trio_micro.protocol import (
    DECODE_ERRORS,
    CallType,
    Error,
    ErrorCode,
    LocalProtocolError,
    Response,
    Status,
)

from ._client import ClientConnection, _Call, status_error
from ._context import ClientCall
from ._errors import RpcError
from ._interceptors import run_intercepted
from ._service import MethodInfo

if TYPE_CHECKING:
    from ._calls import Caller

__all__ = ["RequestSender", "ResponseReceiver", "StreamCall"]

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")

_encode: Final = msgspec.msgpack.Encoder().encode


def _ended(call: _Call) -> BaseException:
    """What sending on a call that has ended raises."""
    if call.error is not None:
        return call.error
    if type(call.frame) is Error:
        return status_error(call.frame)
    if call.cancelled:
        return trio.ClosedResourceError("the call was cancelled")
    return trio.BrokenResourceError("the server has already ended the call")


@final
class RequestSender(trio.abc.SendChannel[ReqT]):
    """The requests of a client- or bidi-stream call, as the caller sends them.

    :meth:`send` waits while the server's credit is used up (a checkpoint then; otherwise it
    only checks for cancellation, since credit bounds how far it runs ahead);
    :meth:`aclose` half-closes the call (END) and is idempotent.

    What ``send`` raises:


    Raises:
        TypeError: ``value`` is not of the method's request type (nothing is sent).
        trio.ClosedResourceError: After :meth:`aclose`, or after the call was cancelled.
        RpcError: The call ended with that status (the server's ERROR, ``UNAVAILABLE`` for
            a lost connection), or ``RESOURCE_EXHAUSTED``: the item is over the server's
            frame size.
        trio.BrokenResourceError: The server answered (RESPONSE or END) before you
            finished sending.
    """

    __slots__ = ("_call", "_closed", "_conn", "_info", "_sid")

    def __init__(self, conn: ClientConnection, sid: int, call: _Call, info: MethodInfo) -> None:
        self._conn = conn
        self._sid = sid
        self._call = call
        self._info = info
        self._closed = False

    async def send(self, value: ReqT) -> None:
        """Send one request; see the class docs."""
        if self._closed:
            raise trio.ClosedResourceError("can't send after aclose() (the half-close)")
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
        waited = False
        while proto.send_credit_available(sid) <= 0:
            if call.frame is not None or call.error is not None or call.cancelled:
                raise _ended(call)
            call.sender = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                call.sender = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            waited = True
        writer = conn.writer
        if writer.congested:
            await writer.wait_uncongested()
        elif not waited:
            # Credit is bounded, so a sender that never waits is at most a window ahead
            # of a full checkpoint; checking for cancellation is enough (as for the
            # server-stream's generator).
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = proto.send_item(sid, payload)
        except LocalProtocolError as exc:
            if exc.code is ErrorCode.FRAME_SIZE_ERROR:
                raise RpcError(Status.RESOURCE_EXHAUSTED, exc.message) from None
            raise _ended(call) from None
        if call.waited:  # an answer to an answer (ping-pong): the server may be waiting
            call.waited = False
            conn.write_lone(data)
        else:  # one of a run of sends: the writer sends the run together
            writer.write(data)

    async def aclose(self) -> None:
        """Half-close: tell the server no more requests come (END). Idempotent; does
        nothing once the call has ended. A checkpoint."""
        if not self._closed:
            self._closed = True
            call = self._call
            if call.frame is None and call.error is None and not call.cancelled:
                try:
                    data = self._conn.proto.send_end(self._sid)
                except LocalProtocolError:  # pragma: no cover - the stream just ended
                    data = b""
                self._conn.write_lone(data)  # the caller now waits for the answer
        await trio.lowlevel.checkpoint()


@final
class ResponseReceiver(trio.abc.ReceiveChannel[RespT]):
    """The answers of a client- or bidi-stream call.

    A client-stream's receiver yields its one RESPONSE, then ends; a bidi-stream's yields
    the server's items until its END. ``receive()`` is a checkpoint; a caller cancelled
    while waiting in it cancels the call (CANCEL), as for server-streams.

    What ``receive`` raises:


    Raises:
        RpcError: The server's ERROR, ``UNAVAILABLE`` if the connection failed,
            ``INTERNAL`` for an answer that does not decode.
        trio.EndOfChannel: The call ended cleanly and everything was received.
        trio.ClosedResourceError: After :meth:`aclose`.
    """

    __slots__ = ("_call", "_closed", "_conn", "_delivered", "_info", "_sid")

    def __init__(self, conn: ClientConnection, sid: int, call: _Call, info: MethodInfo) -> None:
        self._conn = conn
        self._sid = sid
        self._call = call
        self._info = info
        self._closed = False
        self._delivered = False  # a client-stream's RESPONSE was returned

    async def receive(self) -> RespT:
        """The next answer; see the class docs."""
        if self._closed:
            raise trio.ClosedResourceError("the response receiver was closed")
        call = self._call
        if call.items is not None:  # bidi: the server-stream machinery
            payload = await self._conn.next_item(self._sid, call)
            if payload is None:
                raise trio.EndOfChannel
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
        if call.frame is None and call.error is None and not call.cancelled:
            call.task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                call.task = None
                self._conn.cancel_stream(self._sid, call)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        frame = call.frame
        if type(frame) is Response and not self._delivered:
            self._delivered = True
            payload = frame.payload
            if isinstance(payload, bytes):
                return payload
            return self._conn.inflate(payload, self._sid, call)
        if type(frame) is Response:
            raise trio.EndOfChannel
        raise _ended(call)

    async def aclose(self) -> None:
        """Stop receiving; cancels the call (CANCEL) if it is still running. A checkpoint."""
        self._closed = True
        call = self._call
        if call.frame is None and call.error is None:
            self._conn.cancel_stream(self._sid, call)
        await trio.lowlevel.checkpoint()


@final
class StreamCall(Generic[ReqT, RespT]):
    """One client- or bidi-stream call: ``async with stub.method() as (send, receive)``.

    Entering sends the REQUEST (waiting for a stream slot, retried on another connection
    if a server's GOAWAY refused it) and returns a :class:`RequestSender` and a
    :class:`ResponseReceiver`. Leaving the block while the call is still running cancels it
    on the server (CANCEL); the block's own exception propagates unchanged. Usable once.

    What ``async with`` raises:


    Raises:
        RpcError: ``UNAVAILABLE`` (no connection), or what a client interceptor raised.
        RuntimeError: Entered twice.
    """

    __slots__ = ("_caller", "_entered", "_info", "_metadata", "_opened")

    def __init__(self, caller: Caller, info: MethodInfo, metadata: dict[str, str] | None) -> None:
        self._caller = caller
        self._info = info
        self._metadata = metadata
        self._entered = False
        self._opened: tuple[ClientConnection, int, _Call] | None = None

    def __repr__(self) -> str:
        return f"<rpc.StreamCall {self._info.wire_name}>"

    async def __aenter__(self) -> tuple[RequestSender[ReqT], ResponseReceiver[RespT]]:
        if self._entered:
            raise RuntimeError(f"{self!r} was already used; call the stub method again")
        self._entered = True
        caller = self._caller
        info = self._info
        call_type: CallType = info.call_type
        await trio.lowlevel.checkpoint_if_cancelled()
        if caller.interceptors:
            details = ClientCall(
                info.service, info.name, info.kind, dict(self._metadata or {}), None
            )

            async def innermost() -> None:
                self._opened = await caller.open_stream(
                    info.wire_name, b"", details.metadata or None, details, call_type
                )

            await run_intercepted(caller.interceptors, details, innermost)
        else:
            self._opened = await caller.open_stream(
                info.wire_name, b"", self._metadata, None, call_type
            )
        assert self._opened is not None
        conn, sid, call = self._opened
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


def streaming_method(caller: Caller, info: MethodInfo, metadata: dict[str, str] | None) -> Any:
    """The stub callable of a client- or bidi-stream method: ``() -> StreamCall``."""

    def call() -> StreamCall[Any, Any]:
        return StreamCall(caller, info, metadata)

    call.__name__ = call.__qualname__ = info.name
    return call
