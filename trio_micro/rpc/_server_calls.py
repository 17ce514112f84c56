"""Running one server call: decode the request, run the handler, encode the answer.

:class:`CallRunner` holds the calls of one connection in progress. Its :meth:`~CallRunner.run`
is the job a call worker (:mod:`._workers`) runs for one call, under the call's cancel scope
and in a context of its own: inside the interceptor chain
(:func:`~._interceptors.run_intercepted`) the *answer* step decodes the request, runs the
handler and queues the RESPONSE, or the items of a server-stream as the client's credit
allows; outside it the outcome becomes the call's terminal frame -- END after a stream that
succeeded, ERROR after a failure (``CANCELLED`` or ``DEADLINE_EXCEEDED`` when the call's
scope was cancelled, by the client's CANCEL or by the deadline). A cancelled call still
gets its terminal frame, as the protocol requires.

A server-stream without credit waits for the client's CREDIT, holding its handler: at most
``max_stalled_streams`` of a connection's streams wait at once and none longer than
``stall_timeout``; beyond either the stream fails with ``RESOURCE_EXHAUSTED`` (see
:mod:`._server_limits`). When a call ends, its request's bytes go back to the connection's
and the server's byte budgets.

For a unary call the RESPONSE is queued inside the interceptor chain (as a stream's items
are), so when ``proceed`` returns the answer is on its way and an access log's record does
not delay it. Answers are appended to the :class:`~._transport.Writer`'s queue without
awaiting, so the answers of a burst of calls leave in one ``send_all``.

Reading frames, dispatching REQUESTs to workers and closing the connection are
:mod:`._server_connection`'s.

Log events: ``rpc.handler.crashed``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine
from functools import partial
from typing import Any, Final, final

import msgspec
import structlog
import trio

from trio_micro._validate import ENCODE_ERRORS
from trio_micro.protocol import DECODE_ERRORS, Connection, ErrorCode, LocalProtocolError, Status

from ._admission import Admission
from ._context import ServerCall
from ._context import _current as _current_call
from ._errors import RpcError
from ._interceptors import ServerInterceptor, run_intercepted
from ._observability import enter_server_span
from ._server_limits import ByteBudget
from ._server_streams import answer_bidi_stream, answer_client_stream
from ._service import MethodInfo, invalid_argument
from ._streaming import release_inbox
from ._transport import Writer

__all__: list[str] = []

log = structlog.get_logger("rpc")

_encode: Final = msgspec.msgpack.Encoder().encode

Handler = Callable[[Any], Any]
# The innermost step of a call, run inside the interceptor chain: ANSWER_UNARY or
# ANSWER_STREAM (plain functions, taking the runner first; see CallRunner.run).
Answer = Callable[["CallRunner", ServerCall, MethodInfo, Handler, bytes], Coroutine[Any, Any, None]]


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 can't hold (lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@final
class CallRunner:
    """The calls of one connection in progress, and how each one runs; see the module docs.

    Args:
        proto: The connection's sans-io protocol state.
        writer: Its writer queue.
        interceptors: Wrapped around every call, the first outermost.
        on_last_call: Called (synchronously) when the last call in progress has ended.
        admission: The server's count of calls in flight, decremented as each call ends.
        budgets: The connection's and the server's :class:`~._server_limits.ByteBudget`,
            each charged a call's payload size by the dispatcher and given it back here
            when the call ends.
        max_stalled: Server-streams that may wait for CREDIT at once; one more fails
            with ``RESOURCE_EXHAUSTED``.
        stall_timeout: Seconds a server-stream may wait for CREDIT before it fails with
            ``RESOURCE_EXHAUSTED``.

    Attributes:
        calls: Stream id -> the call in progress; the dispatcher adds, :meth:`run` removes.
        refused_stalled: Server-streams failed at ``max_stalled`` (counted for /metrics).
        stall_timeouts: Server-streams failed after ``stall_timeout``.
    """

    __slots__ = (
        "_admission",
        "_budgets",
        "_credit_waiters",
        "_interceptors",
        "_max_stalled",
        "_on_last_call",
        "_stall_timeout",
        "calls",
        "proto",
        "refused_stalled",
        "stall_timeouts",
        "writer",
    )

    def __init__(
        self,
        proto: Connection,
        writer: Writer,
        interceptors: tuple[ServerInterceptor, ...],
        on_last_call: Callable[[], None],
        admission: Admission,
        budgets: tuple[ByteBudget, ByteBudget],
        *,
        max_stalled: int,
        stall_timeout: float,
    ) -> None:
        self._admission = admission
        self._budgets = budgets
        self._max_stalled = max_stalled
        self._stall_timeout = stall_timeout
        self.proto = proto
        self.writer = writer
        self.calls: dict[int, ServerCall] = {}
        self.refused_stalled = 0
        self.stall_timeouts = 0
        self._interceptors = interceptors
        self._on_last_call = on_last_call
        self._credit_waiters: dict[int, trio.lowlevel.Task] = {}

    def credit(self, sid: int) -> None:
        """The client granted stream ``sid`` credit: wake its producer if it waits."""
        task = self._credit_waiters.pop(sid, None)
        if task is not None:
            trio.lowlevel.reschedule(task)

    def cancel(self, sid: int) -> bool:
        """The client sent CANCEL for ``sid``: cancel that call; False if none is running."""
        call = self.calls.get(sid)
        if call is None:
            return False
        call._cancel_requested = True
        call._scope.cancel()
        return True

    def _send_error(self, call: ServerCall, error: RpcError) -> None:
        try:
            data = self.proto.send_error(call.stream_id, error.code, error.message, error.details)
        except LocalProtocolError as exc:
            if exc.code is not ErrorCode.FRAME_SIZE_ERROR:
                return  # the stream is already gone (refused by our GOAWAY)
            data = self.proto.send_error(
                call.stream_id, Status.RESOURCE_EXHAUSTED, f"error too large: {exc.message}"
            )
        except ENCODE_ERRORS:  # a lone surrogate (e.g. from os.fsdecode) in the handler's error
            details = {_utf8(k): _utf8(v) for k, v in error.details.items()}
            data = self.proto.send_error(call.stream_id, error.code, _utf8(error.message), details)
        self.writer.write(data)

    def _cancelled_status(self, call: ServerCall) -> RpcError:
        if call._cancel_requested:
            return RpcError(Status.CANCELLED, "cancelled by the client")
        return RpcError(Status.DEADLINE_EXCEEDED, "deadline exceeded")

    def _handler_failed(self, call: ServerCall, exc: BaseException, what: str) -> RpcError | None:
        """The error a handler's exception turns the call into (run on failure only).

        None means: let ``exc`` propagate unchanged -- an ``RpcError`` the handler raised
        (it is the call's status already), a cancellation that is not this call's (the
        connection is closing), or a ``BaseException`` that is not ours to catch. This
        call's cancellation becomes ``CANCELLED`` or ``DEADLINE_EXCEEDED``; any other
        ``Exception`` is logged and becomes ``INTERNAL``.
        """
        if isinstance(exc, RpcError):
            return None
        if isinstance(exc, trio.Cancelled):
            return self._cancelled_status(call) if call._scope.cancel_called else None
        if isinstance(exc, Exception):
            return self._crashed(call, exc, what)
        return None

    def _crashed(self, call: ServerCall, exc: BaseException, what: str) -> RpcError:
        log.error(
            "rpc.handler.crashed",
            service=call.service,
            method=call.method,
            peer=call.peer,
            stream_id=call.stream_id,
            what=what,
            exc_info=exc,
        )
        return RpcError(Status.INTERNAL, "internal server error")

    async def run(
        self,
        answer: Answer,
        call: ServerCall,
        info: MethodInfo,
        handler: Handler,
        payload: bytes,
    ) -> None:
        """Run one call, unary or server-stream, to its terminal frame.

        Runs in a call worker, under ``call._scope``, in a context of its own. ``answer``
        (inside the interceptors, if any) decodes the request, runs the handler and queues
        the RESPONSE or the items; here the outcome becomes the terminal frame: END after
        a stream that succeeded, ERROR after a failure (``CANCELLED`` or
        ``DEADLINE_EXCEEDED`` when the call's scope was cancelled; ``INTERNAL``, logged,
        when an interceptor raised something else than ``RpcError``: one call's bug never
        ends the connection).
        Checkpoints: those of ``answer`` and the interceptors. Cancellation of the whole
        connection propagates without a frame.

        One function for both kinds, not one a kind: the unary path pays a single
        identity test for it (and the dispatcher makes no bound method per call), no
        extra coroutine.
        """
        _current_call.set(call)
        enter_server_span(call)
        try:
            if self._interceptors:
                # A partial, not a lambda: no frame of its own per call, and no closure
                # cells in this function for the calls without interceptors.
                await run_intercepted(
                    self._interceptors, call, partial(answer, self, call, info, handler, payload)
                )
            else:
                await answer(self, call, info, handler, payload)
        except RpcError as exc:
            # After a unary answer was queued (an interceptor failing later), the stream is
            # closed and _send_error sends nothing.
            self._send_error(call, exc)
        except trio.Cancelled:
            if call._scope.cancel_called:  # else the whole connection is closing
                self._send_error(call, self._cancelled_status(call))
            raise
        except Exception as exc:  # an interceptor's bug (handlers' are RpcErrors by now)
            self._send_error(call, self._crashed(call, exc, "interceptor raised"))
        else:
            # A stream's END is queued after the interceptors, so one that fails after
            # proceed() still turns the call into an ERROR.
            if answer is not ANSWER_UNARY and answer is not ANSWER_CLIENT_STREAM:
                self.writer.write(self.proto.send_end(call.stream_id))
        finally:
            self._admission.inflight -= 1
            size = len(payload)
            for budget in self._budgets:
                budget.give(size)
            if call._requests is not None:  # a client- or bidi-stream's unread items
                release_inbox(call)
            calls = self.calls
            del calls[call.stream_id]
            if not calls:
                self._on_last_call()

    async def _answer_unary(
        self, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
    ) -> None:
        """Decode, run the handler, queue the RESPONSE; failures raise RpcError.

        The innermost step of the interceptor chain, so the access log's record is written
        after the answer has been queued (or, for a lone call, sent), not before.
        """
        try:
            request = info.decode_request(payload)
        except DECODE_ERRORS as exc:
            raise invalid_argument(exc) from None
        try:
            result = await handler(request)
        except BaseException as exc:
            error = self._handler_failed(call, exc, "handler raised")
            if error is None:
                raise
            raise error from None
        await self._respond(call, info, result)

    async def _respond(self, call: ServerCall, info: MethodInfo, result: object) -> None:
        """Check a handler's result and queue the RESPONSE (unary and client-stream calls).

        A checkpoint only when the writer is congested.
        """
        if not isinstance(result, info.response_type):
            raise self._crashed(
                call,
                TypeError(
                    f"{info.wire_name} must return a {info.response_type.__name__}, got {result!r}"
                ),
                "bad response",
            )
        writer = self.writer
        if writer.congested:  # bound the queue; see _transport
            await writer.wait_uncongested()
        try:
            data = self.proto.send_response(call.stream_id, _encode(result))
        except LocalProtocolError as exc:
            raise _too_large(exc) from None
        except ENCODE_ERRORS as exc:  # e.g. an int over 64 bits: this call fails alone
            raise self._crashed(call, exc, "bad response") from None
        self.write_lone(data)

    def write_lone(self, data: bytes) -> None:
        """Queue a call's frame, or send it at once when that call is the connection's only
        one in progress (synchronous, no checkpoint).

        A lone frame skips the writer task's scheduling round
        (:meth:`~._transport.Writer.write_eager`); with other calls in progress, their
        frames may leave in the same ``send_all``. For a unary or client-stream RESPONSE,
        a bidi-stream's item that answers a request the handler waited for, and the CREDIT
        a client-stream's sender may be waiting for.
        """
        if len(self.calls) == 1:  # alone: send now, skip the writer's round
            self.writer.write_eager(data)
        else:  # others may answer in this batch too: one send_all for all
            self.writer.write(data)

    async def _answer_stream(
        self, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
    ) -> None:
        """Decode, run the generator, queue its items as credit allows; failures raise
        RpcError. The END is queued by :meth:`run`.
        """
        try:
            request = info.decode_request(payload)
        except DECODE_ERRORS as exc:
            raise invalid_argument(exc) from None
        agen: AsyncGenerator[Any, None] = handler(request)
        proto = self.proto
        writer = self.writer
        sid = call.stream_id
        item_type = info.response_type
        try:
            while True:
                if proto.stream_credit(sid) <= 0:
                    try:
                        await self._wait_credit(sid)
                    except trio.Cancelled:
                        if call._scope.cancel_called:
                            raise self._cancelled_status(call) from None
                        raise  # pragma: no cover - the whole server is being cancelled
                    continue
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    error = self._handler_failed(call, exc, "stream handler raised")
                    if error is None:
                        raise
                    raise error from None
                if not isinstance(item, item_type):
                    raise self._crashed(
                        call,
                        TypeError(
                            f"{info.wire_name} must yield {item_type.__name__} items, got {item!r}"
                        ),
                        "bad item",
                    )
                if writer.congested:  # checked right before queuing: see _transport
                    await writer.wait_uncongested()
                try:
                    writer.write(proto.send_item(sid, _encode(item)))
                except LocalProtocolError as exc:
                    raise RpcError(
                        Status.RESOURCE_EXHAUSTED, f"stream item too large: {exc.message}"
                    ) from None
                except ENCODE_ERRORS as exc:  # this call fails alone
                    raise self._crashed(call, exc, "bad item") from None
        finally:
            self._credit_waiters.pop(sid, None)  # defensive: _wait_credit's abort removes it
            try:
                await agen.aclose()
            except Exception as exc:  # a finally block in the generator failed
                self._crashed(call, exc, "stream handler raised while closing")

    async def _wait_credit(self, sid: int) -> None:
        """Wait for the client's CREDIT on ``sid``.

        Raises:
            RpcError: ``RESOURCE_EXHAUSTED`` when ``max_stalled`` streams already wait
                (at once, without a checkpoint), or after ``stall_timeout`` seconds.
        """
        waiters = self._credit_waiters
        if len(waiters) >= self._max_stalled:
            self.refused_stalled += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"too many streams waiting for CREDIT on this connection "
                f"(max_stalled_streams={self._max_stalled}); read your streams",
                {"refused": "max_stalled_streams"},
            )

        def abort(_: object) -> trio.lowlevel.Abort:
            waiters.pop(sid, None)
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.move_on_after(self._stall_timeout) as stall:
            waiters[sid] = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(abort)
        if stall.cancelled_caught:
            self.stall_timeouts += 1
            raise RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"stream stalled: no CREDIT from the client for {self._stall_timeout:g} s "
                "(stall_timeout)",
                {"refused": "stall_timeout"},
            )


ANSWER_UNARY: Final[Answer] = CallRunner._answer_unary
ANSWER_STREAM: Final[Answer] = CallRunner._answer_stream
ANSWER_CLIENT_STREAM: Final[Answer] = answer_client_stream
ANSWER_BIDI_STREAM: Final[Answer] = answer_bidi_stream


def _too_large(exc: LocalProtocolError) -> RpcError:
    return RpcError(Status.RESOURCE_EXHAUSTED, f"response too large: {exc.message}")
