"""The handler's side of client- and bidi-streams: the request stream and the response sender.

A client-stream or bidi-stream handler reads its requests from a :class:`RequestStream` (a
``trio.abc.ReceiveChannel``) and a bidi handler sends on a :class:`ResponseSender` (a
``trio.abc.SendChannel``), so both compose with trio's channel tools and
:mod:`trio_micro.toolkit`.

Flow control: the connection's reader appends each ITEM's payload to the call's inbox
(:func:`deliver`) without awaiting; the protocol refuses (``FLOW_CONTROL_ERROR``) an ITEM
beyond the credit the server granted, so the inbox never holds more than the server's
``initial_stream_credit`` payloads. :meth:`RequestStream.receive` grants credit back once
half of that window has been consumed. The inbox lives on the :class:`~._context.ServerCall`,
so it goes when the call goes.

Memory: credit bounds the *number* of waiting items, not their bytes (64 items of up to
``max_frame_size`` each). So each waiting item is also charged against the connection's and
the server's byte budgets (``max_buffered_bytes``, ``max_server_buffered_bytes``; see
:mod:`._server_limits`), like a REQUEST's payload, and given back when the handler takes it
(or the call ends). An item that does not fit fails its call: the handler's next
``receive()`` raises ``RESOURCE_EXHAUSTED`` (details ``refused``), the items waiting are
dropped, and later ones are dropped as they arrive. The connection and its other calls go on.

:class:`StreamingMethod` is only a type: what ``@rpc.client_stream`` and ``@rpc.bidi_stream``
declare, so that on a stub (``channel.stub(Service)``) the method reads as
``() -> rpc.StreamCall[Req, Resp]`` to a type checker.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, final, overload

import msgspec
import trio

from trio_micro._validate import ENCODE_ERRORS, cannot_encode
from trio_micro.protocol import (
    DECODE_ERRORS,
    CompressionError,
    Connection,
    End,
    Item,
    LocalProtocolError,
    Status,
)

from ._errors import RpcError
from ._server_limits import ByteBudget, admit_request
from ._service import invalid_argument

if TYPE_CHECKING:
    from ._client_streams import StreamCall
    from ._context import ServerCall
    from ._server_calls import CallRunner

__all__ = ["RequestStream", "ResponseSender", "StreamingMethod"]

T = TypeVar("T")
ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")

_encode: Final = msgspec.msgpack.Encoder().encode


class StreamingMethod(Protocol[ReqT, RespT]):
    """What ``@rpc.client_stream`` / ``@rpc.bidi_stream`` methods are, for type checkers.

    On a stub the method is ``() -> StreamCall[Req, Resp]``; on the class it is the
    descriptor itself. At run time the decorated function is left unchanged.
    """

    @overload
    def __get__(self, obj: None, owner: type[Any], /) -> StreamingMethod[ReqT, RespT]: ...
    @overload
    def __get__(
        self, obj: object, owner: type[Any] | None = None, /
    ) -> Callable[[], StreamCall[ReqT, RespT]]: ...
    def __get__(self, obj: object, owner: type[Any] | None = None, /) -> Any: ...


@final
class _Inbox:
    """The client's items of one call, as they arrived; see the module docs."""

    __slots__ = ("budgets", "ended", "error", "held", "items", "task", "waited")

    def __init__(self) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self.ended = False  # the client's END arrived
        self.task: trio.lowlevel.Task | None = None  # the handler waiting in receive()
        # Bytes of `items` charged against `budgets` (the connection's, the server's).
        self.held = 0
        self.budgets: tuple[ByteBudget, ByteBudget] | None = None
        # An item did not fit the budgets: receive() raises this; later items are dropped.
        self.error: RpcError | None = None
        # The handler waited in receive() since it last sent: the client may be waiting
        # for the answer, which then leaves at once (ResponseSender.send).
        self.waited = False

    def take(self) -> bytes:
        """The oldest item, its bytes given back to the budgets."""
        payload = self.items.popleft()
        self.give_back(len(payload))
        return payload

    def give_back(self, size: int) -> None:
        if size and self.budgets is not None:
            self.held -= size
            for budget in self.budgets:
                budget.give(size)

    def drop(self) -> None:
        """Forget every waiting item and give their bytes back."""
        self.items.clear()
        self.give_back(self.held)

    def wake(self) -> bool:
        """Wake the handler waiting in ``receive()``; whether there was one."""
        task = self.task
        if task is None:
            return False
        self.task = None
        trio.lowlevel.reschedule(task)
        return True


def inbox(call: ServerCall) -> _Inbox:
    """The call's inbox, made on first use (by the reader or by the handler)."""
    box = call._requests
    if box is None:
        box = call._requests = _Inbox()
    assert isinstance(box, _Inbox)
    return box


def deliver(
    calls: dict[int, ServerCall],
    event: Item | End,
    budgets: tuple[ByteBudget, ByteBudget],
    queued: int,
    proto: Connection,
) -> bool:
    """Hand a client's ITEM or END to its call (synchronous; the reader calls it); return
    whether that woke the call's handler.

    An ITEM is charged against ``budgets`` (the connection's and the server's; ``queued``:
    what the connection's writer holds) or, when it does not fit, fails its call; see the
    module docs. A compressed ITEM is inflated first (by ``proto``, bounded by its
    ``max_frame_size``); one that can't be fails its call the same way.
    """
    call = calls.get(event.id)
    if call is None:
        return False  # the call is ending: its terminal frame is queued
    box = inbox(call)
    if type(event) is Item:
        if box.error is not None:
            return False  # the call failed for want of room: drop what follows
        payload = event.payload
        if not isinstance(payload, bytes):
            try:
                payload = proto.decompress(payload)
            except CompressionError as exc:
                box.error = RpcError(exc.status, f"bad request item: {exc}")
                box.drop()
                return box.wake()
        over = admit_request(len(payload), budgets[0], budgets[1], queued)
        if over is None:
            box.budgets = budgets
            box.held += len(payload)
            box.items.append(payload)
        else:
            box.error = RpcError(
                Status.RESOURCE_EXHAUSTED,
                f"server busy: {over} ({budgets[0 if over == 'max_buffered_bytes' else 1].limit}"
                " bytes) reached by request items waiting to be read; retry later",
                {"refused": over},
            )
            box.drop()
    else:
        box.ended = True
    return box.wake()


def release_inbox(call: ServerCall) -> None:
    """At the end of a call: give back the bytes of the items its handler never took."""
    box = call._requests
    if box is not None:
        assert isinstance(box, _Inbox)
        box.drop()


@final
class RequestStream(trio.abc.ReceiveChannel[T]):
    """The requests of a client- or bidi-stream call, as the handler reads them.

    ``async for request in requests`` (or ``await requests.receive()``) yields each
    request, decoded and validated, in order; the iteration ends (``trio.EndOfChannel``)
    when the client half-closes. Made by the server; handlers only read it.

    ``receive()`` is a checkpoint when it has to wait, otherwise it only checks for
    cancellation. Cancellation (the client's CANCEL, the deadline) reaches a waiting
    ``receive()`` as ``trio.Cancelled``.

    What ``receive`` raises:


    Raises:
        RpcError: ``INVALID_ARGUMENT`` for an item that does not decode or validate; left
            uncaught it ends the call with that status.
        trio.EndOfChannel: The client half-closed and every item has been read.
        trio.ClosedResourceError: After :meth:`aclose`.
    """

    __slots__ = ("_box", "_closed", "_decode", "_runner", "_sid", "_unacked", "_window")

    def __init__(self, call: ServerCall, runner: CallRunner, decode: Callable[[bytes], T]) -> None:
        self._box = inbox(call)
        self._sid = call.stream_id
        self._runner = runner
        proto = runner.proto
        self._decode = decode
        self._window = proto.local_settings.initial_stream_credit
        self._unacked = 0
        self._closed = False
        if self._window == 0:  # the client may send nothing until granted: grant a window
            self._window = 64
            runner.writer.write(proto.send_credit(self._sid, self._window))

    async def receive(self) -> T:
        """The next request; see the class docs."""
        if self._closed:
            raise trio.ClosedResourceError("the request stream was closed")
        box = self._box
        if not box.items and not box.ended and box.error is None:
            box.task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                box.task = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            box.waited = True
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if box.error is not None:
            raise box.error
        if not box.items:
            raise trio.EndOfChannel
        return self._take()

    async def __anext__(self) -> T:
        """``async for``: :meth:`receive` without trio's wrapper coroutine for an item that
        is already waiting (the common case of an upload)."""
        box = self._box
        if box.items and box.error is None and not self._closed:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._take()
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _take(self) -> T:
        """The oldest waiting item, decoded; grants credit back every half window."""
        box = self._box
        payload = box.take()
        self._unacked += 1
        if self._unacked * 2 >= self._window and not box.ended:
            # The client may be waiting for this CREDIT: a lone stream's leaves at once.
            runner = self._runner
            runner.write_lone(runner.proto.send_credit(self._sid, self._unacked))
            self._unacked = 0
        try:
            return self._decode(payload)
        except DECODE_ERRORS as exc:
            raise invalid_argument(exc) from None

    async def aclose(self) -> None:
        """Stop reading; later ``receive()`` calls raise ``ClosedResourceError``. The
        client's further items are dropped as they arrive. A checkpoint."""
        self._closed = True
        self._box.drop()
        await trio.lowlevel.checkpoint()


@final
class ResponseSender(trio.abc.SendChannel[T]):
    """Where a bidi-stream handler sends its responses; the call ends when it returns.

    ``await responses.send(item)`` queues one ITEM once the client has granted credit, so
    a client that stops reading makes ``send`` wait rather than anything buffer. A
    checkpoint when it waits; otherwise it only checks for cancellation. Cancellation
    (the client's CANCEL, the deadline) reaches a waiting ``send`` as ``trio.Cancelled``.

    What ``send`` raises:


    Raises:
        TypeError: ``item`` is not of the method's response type (the call fails with
            ``INTERNAL``, logged, if it propagates).
        RpcError: ``RESOURCE_EXHAUSTED``: the item is over the client's frame size.
        trio.ClosedResourceError: After :meth:`aclose`.
    """

    __slots__ = ("_box", "_closed", "_item_type", "_runner", "_sid")

    def __init__(self, call: ServerCall, runner: CallRunner, item_type: type[T]) -> None:
        self._sid = call.stream_id
        self._box = inbox(call)
        self._runner = runner
        self._item_type = item_type
        self._closed = False

    async def send(self, value: T) -> None:
        """Send one response; see the class docs."""
        if self._closed:
            raise trio.ClosedResourceError("the response sender was closed")
        if not isinstance(value, self._item_type):
            raise TypeError(f"responses must be {self._item_type.__name__}, got {value!r}")
        runner = self._runner
        proto = runner.proto
        sid = self._sid
        waited = False
        while proto.send_credit_available(sid) <= 0:
            await runner._wait_credit(sid)
            waited = True
        writer = runner.writer
        if writer.congested:
            await writer.wait_uncongested()
        elif not waited:
            # Credit is bounded, so a sender that never waits is at most a window ahead
            # of a full checkpoint; checking for cancellation is enough (as for the
            # server-stream's generator).
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            data = proto.send_item(sid, _encode(value))
        except LocalProtocolError as exc:
            raise RpcError(
                Status.RESOURCE_EXHAUSTED, f"stream item too large: {exc.message}"
            ) from None
        except ENCODE_ERRORS as exc:
            raise cannot_encode("response", value, exc) from None
        box = self._box
        if box.waited:  # answers a request we waited for (ping-pong): the client may wait
            box.waited = False
            runner.write_lone(data)
        else:  # one of a run of sends: the writer sends the run together
            writer.write(data)

    async def aclose(self) -> None:
        """Send nothing more (the END still waits for the handler to return). A checkpoint."""
        self._closed = True
        await trio.lowlevel.checkpoint()
