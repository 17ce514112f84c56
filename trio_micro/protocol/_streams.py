"""The client's half of a stream: client-stream and bidi-stream calls, in both ends' states.

Theory of operation
-------------------
A unary or server-stream REQUEST carries the whole request, so its stream is born
half-closed. A **client-stream** (``CallType.CLIENT_STREAM``) or **bidi-stream**
(``CallType.BIDI_STREAM``) REQUEST only opens the call: the client then sends ITEMs of its
own and **half-closes** with END; the server answers as before -- one RESPONSE for a
client-stream, ITEMs then END for a bidi-stream, or ERROR for either. ITEM, END and CREDIT
thus travel both ways; which are legal on a stream follows from its call type alone
(:func:`server_sends_items`, :func:`client_sends_items`).

Flow control is the same rule mirrored: the client may send the server's
``initial_stream_credit`` ITEMs ahead, spends one per ITEM, and gets more from the server's
CREDIT frames. Credit is counted on both ends (``_Stream.up_credit``), so a client that
ignores it is caught on the first ITEM too many (``FLOW_CONTROL_ERROR``) and the server
never buffers more than it granted.

The server's terminal frame closes **both** halves: the client's ITEMs or END that crossed
it in flight are ignored by the server (like a late CREDIT or CANCEL), and the client's
``send_item`` on a closed stream raises :class:`LocalProtocolError`, whose message says the
call already ended. CANCEL ends the client's half as well: after it the
client sends neither ITEM nor END (a server that receives one treats it as a protocol
error), and the server still owes its terminal frame. Deadlines are the server's to enforce,
as for every call type: it cancels the handler and sends ``ERROR(DEADLINE_EXCEEDED)``, which
closes both halves.

This module holds the rules that exist only for the client's half, as a mixin of
:class:`~trio_micro.protocol.Connection`; the connection's ``send_item`` / ``send_end`` /
``send_credit`` hand over to it when called by the role that did not send those frames
before (a client sending ITEM or END, a server sending CREDIT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._codec import FrameEncoder
from ._compression import Compressor
from ._errors import LocalProtocolError, RemoteProtocolError
from ._frames import MAX_CREDIT, CallType, Credit, End, Item
from ._status import ErrorCode

__all__ = ["client_sends_items", "server_sends_items"]

_CLIENT_SENDS = frozenset({CallType.CLIENT_STREAM, CallType.BIDI_STREAM})
_SERVER_SENDS = frozenset({CallType.SERVER_STREAM, CallType.BIDI_STREAM})


def client_sends_items(call_type: CallType) -> bool:
    """Whether the client sends ITEMs (and half-closes with END) on this kind of call."""
    return call_type in _CLIENT_SENDS


def server_sends_items(call_type: CallType) -> bool:
    """Whether the server answers with ITEMs and END (else with one RESPONSE)."""
    return call_type in _SERVER_SENDS


class _Stream:
    __slots__ = ("call_type", "cancelled", "compress", "credit", "half_closed", "up_credit")

    def __init__(self, call_type: CallType, credit: int, up_credit: int = 0) -> None:
        self.call_type = call_type
        # What this side's payloads on the stream go through (None: sent as they are).
        self.compress: Compressor | None = None
        self.credit = credit  # ITEMs the server may still send
        self.up_credit = up_credit  # ITEMs the client may still send
        self.cancelled = False
        self.half_closed = False  # the client sent END: no more client ITEMs


class _StreamsMixin:
    """Sending and receiving the client's half of a stream (see the module docs).

    Part of :class:`~trio_micro.protocol.Connection`; not useful on its own.
    """

    # Provided by Connection.
    _streams: dict[int, _Stream]
    _last_stream_id: int
    _encoder: FrameEncoder
    _peer_initial_credit: int
    _local_initial_credit: int
    _is_client: bool

    if TYPE_CHECKING:

        def _check_ready(self, kind: str) -> None: ...

    def _new_stream(self, call_type: CallType, *, client: bool) -> _Stream:
        """The record of a stream just opened, with both directions' initial credit."""
        down = 0
        up = 0
        if server_sends_items(call_type):
            down = self._local_initial_credit if client else self._peer_initial_credit
        if client_sends_items(call_type):
            up = self._peer_initial_credit if client else self._local_initial_credit
        return _Stream(call_type, down, up)

    def send_credit_available(self, stream_id: int) -> int:
        """ITEMs this side may send on ``stream_id`` now (0 if none, or not open).

        On a client, the credit of its half of a client- or bidi-stream; on a server, that
        of a server- or bidi-stream. 0 means: wait for a :class:`Credit` event.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        if self._is_client:
            return 0 if stream.half_closed or stream.cancelled else stream.up_credit
        return stream.credit

    def half_closed(self, stream_id: int) -> bool:
        """Whether the client has ended its half of ``stream_id`` (END or CANCEL sent or
        received). False for a stream that is not open."""
        stream = self._streams.get(stream_id)
        return stream is not None and (stream.half_closed or stream.cancelled)

    # ------------------------------------------------------------------ client sends

    def _client_half(self, stream_id: int, kind: str) -> _Stream:
        self._check_ready(kind)
        stream = self._streams.get(stream_id)
        if stream is None:
            if 0 < stream_id <= self._last_stream_id:
                raise LocalProtocolError(
                    f"can't send {kind} on stream {stream_id!r}: the call has ended"
                )
            raise LocalProtocolError(f"can't send {kind} on stream {stream_id!r}: never opened")
        if not client_sends_items(stream.call_type):
            raise LocalProtocolError(
                f"stream {stream_id!r} is {stream.call_type.name}: the client sends no {kind}"
            )
        if stream.cancelled:
            raise LocalProtocolError(f"can't send {kind} on stream {stream_id!r}: cancelled")
        if stream.half_closed:
            raise LocalProtocolError(
                f"can't send {kind} on stream {stream_id!r}: already half-closed (END sent)"
            )
        return stream

    def _send_client_item(self, stream_id: int, payload: bytes) -> bytes:
        stream = self._streams.get(stream_id)
        # The common case in one test (a stream on record implies the HELLO exchange is
        # done); _client_half raises the right error for the rest.
        if (
            stream is None
            or stream.half_closed
            or stream.cancelled
            or stream.call_type not in _CLIENT_SENDS
        ):
            stream = self._client_half(stream_id, "ITEM")
        if stream.up_credit <= 0:
            raise LocalProtocolError(
                f"no credit left on stream {stream_id!r}; wait for CREDIT",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        compress = stream.compress
        data = self._encoder.encode(
            Item(stream_id, payload if compress is None else compress(payload))
        )
        stream.up_credit -= 1
        return data

    def _send_half_close(self, stream_id: int) -> bytes:
        stream = self._client_half(stream_id, "END")
        data = self._encoder.encode(End(stream_id))
        stream.half_closed = True
        return data

    # ------------------------------------------------------------------ server sends

    def _send_server_credit(self, stream_id: int, n: int) -> bytes:
        self._check_ready("CREDIT")
        stream = self._streams.get(stream_id)
        if stream is None:
            if 0 < stream_id <= self._last_stream_id:
                return b""  # we already sent the terminal frame
            raise LocalProtocolError(f"can't send CREDIT on stream {stream_id!r}: never opened")
        if not client_sends_items(stream.call_type):
            raise LocalProtocolError(
                f"stream {stream_id!r} is {stream.call_type.name}: the client sends no ITEMs"
            )
        if stream.half_closed or stream.cancelled:
            return b""  # the client sends nothing more: the grant would be pointless
        if stream.up_credit + n > MAX_CREDIT:
            raise LocalProtocolError(
                f"CREDIT {n!r} would take stream {stream_id!r} over {MAX_CREDIT!r}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        data = self._encoder.encode(Credit(stream_id, n))
        stream.up_credit += n
        return data

    # ------------------------------------------------------------------ server receives

    def _client_half_received(self, frame: Item | End) -> _Stream | None:
        stream = self._streams.get(frame.id)
        if (
            stream is not None
            and stream.call_type in _CLIENT_SENDS
            and not stream.cancelled
            and not stream.half_closed
        ):
            return stream  # the common case in one test; the errors below
        kind = type(frame).__name__.upper()
        if stream is None:
            if frame.id > self._last_stream_id:
                raise RemoteProtocolError(f"{kind} for stream {frame.id!r}, never opened")
            return None  # crossed our terminal frame in flight: ignore
        if not client_sends_items(stream.call_type):
            raise RemoteProtocolError(
                f"{kind} from the client on {stream.call_type.name} stream {frame.id!r}"
            )
        if stream.cancelled:
            raise RemoteProtocolError(f"{kind} on stream {frame.id!r} after CANCEL")
        raise RemoteProtocolError(f"{kind} on stream {frame.id!r} after the client's END")

    def _receive_client_item(self, frame: Item) -> Item | None:
        stream = self._client_half_received(frame)
        if stream is None:
            return None
        if stream.up_credit <= 0:
            raise RemoteProtocolError(
                f"ITEM on stream {frame.id!r} without credit", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        stream.up_credit -= 1
        return frame

    def _receive_half_close(self, frame: End) -> End | None:
        stream = self._client_half_received(frame)
        if stream is None:
            return None
        stream.half_closed = True
        return frame

    # ------------------------------------------------------------------ client receives

    def _receive_server_credit(self, frame: Credit) -> Credit | None:
        stream = self._streams.get(frame.id)
        if stream is None:
            state = "never opened" if frame.id > self._last_stream_id else "already closed"
            raise RemoteProtocolError(f"CREDIT for stream {frame.id!r}, {state}")
        if not client_sends_items(stream.call_type):
            raise RemoteProtocolError(
                f"CREDIT from the server on {stream.call_type.name} stream {frame.id!r}"
            )
        if stream.up_credit + frame.n > MAX_CREDIT:
            raise RemoteProtocolError(
                f"CREDIT {frame.n!r} on stream {frame.id!r} takes its credit over {MAX_CREDIT!r}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        stream.up_credit += frame.n
        if stream.half_closed or stream.cancelled:
            return None  # crossed our END or CANCEL: nothing left to send
        return frame
