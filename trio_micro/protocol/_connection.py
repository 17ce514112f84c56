"""The connection state machine: bytes in, events out; calls in, bytes out.

Theory of operation
-------------------
A :class:`Connection` is one end of one transport connection, in the style of h11: it never
does I/O, never reads a clock and never imports trio. The I/O layer feeds it whatever the
socket produced (:meth:`~Connection.receive_data`, which returns events) and writes whatever
the ``send_*`` methods return. Every ``send_*`` method either returns the bytes to write *and*
updates the state, or raises :class:`LocalProtocolError` and changes nothing -- so the caller
can react (e.g. turn a too-large RESPONSE into an ERROR) and carry on.

Three things are tracked:

1. **The handshake.** Each side sends ``PREFACE`` then HELLO(version, settings) at once,
   without waiting (:meth:`~Connection.initiate`). The receiver checks the preface byte by
   byte (garbage fails fast), then accepts only HELLO until it has one. Nothing but HELLO may
   be *sent* before the peer's HELLO has arrived either: the peer's settings (frame size,
   stream limit, credit) bind everything after it.

2. **Streams.** Only clients open streams, with REQUEST, so one id space suffices. Ids must
   increase (gaps allowed), so "has this id been used?" is ``id <= last_stream_id`` and only
   *live* streams are stored: memory is bounded by ``max_concurrent_streams``, not by the
   connection's age. A REQUEST carries the whole request, so a stream is born half-closed:
   all that remains is the server's answer, which ends in exactly one terminal frame
   (RESPONSE, END or ERROR). A stream counts against ``max_concurrent_streams`` until that
   terminal frame -- on the server until it is sent, on the client until it is received.
   Because sending happens before receiving, the server's count never exceeds the client's,
   so a client that waits for :meth:`~Connection.can_open_stream` can never trip the
   server's limit. CANCEL does *not* close a stream: the server must still send a terminal
   frame. That keeps the two counts in step and makes "RESPONSE after CANCEL" an ordinary
   frame rather than a race to tolerate. The races that remain are CREDIT or CANCEL reaching
   the server after it sent the terminal frame; the server ignores those (the id is at most
   ``last_stream_id`` but not live), and the client's ``send_credit`` / ``send_cancel`` on a
   stream that just closed return ``b""``.

3. **Shutdown.** GOAWAY(last_id) says "no new streams". When a server sends it, REQUESTs it
   later receives above ``last_id`` are dropped unanswered; when a client receives it, it
   forgets its streams above ``last_id`` (never processed, so safe to retry elsewhere) and
   opens no more. Streams at or below ``last_id`` run to completion.

Flow control is per server-stream and counts ITEMs, not bytes (frames are already bounded by
``max_frame_size``): the server starts with the client's ``initial_stream_credit``, spends
one per ITEM and gets more from CREDIT frames. Client- and bidi-streams add the client's
half (ITEMs, half-close with END, credit the other way): :mod:`._streams`.

Compression (:mod:`._compression`) rides on the same state: the peer's HELLO says which
encodings we may use, a stream remembers the :class:`Compressor` its payloads go through
(the connection's default, or the one a REQUEST's ``tm-compression`` metadata picks), and
:meth:`~Connection.decompress` inflates what arrives, bounded by our ``max_frame_size``.

Why one module of about 930 lines: every rule has a sending half (``send_*``) and a
receiving half (``_receive_*``) that must agree, and the stream table, credit and GOAWAY
bookkeeping are shared by both. The client's half of a stream, which only client- and
bidi-streams have, is already apart (:mod:`._streams`); what stays here is shared by
every call type. Split by direction, each rule would be read in two files;
split by frame kind, the shared state would need an API of its own. The tests drive two
connections against each other, as this module is meant to be read. Compression is apart
too (:mod:`._compression`: the codecs, the inflation bound, the per-peer
:class:`Compressor`); what stays here is its glue, a few lines in each of HELLO, REQUEST
(sent and received), RESPONSE and ITEM that pick a stream's compressor: taken out as an
object of its own it would put a call on every REQUEST's path and save few lines.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, final

from msgspec.msgpack import Ext

from ._codec import FrameDecoder, FrameEncoder
from ._compression import (
    COMPRESSION_HINT,
    DEFAULT_COMPRESSION_THRESHOLD,
    ENCODINGS,
    SUPPORTED_COMPRESSION,
    Compressor,
    check_compression,
    decompress,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._frames import (
    MAGIC,
    MAX_CREDIT,
    MAX_OPAQUE,
    MAX_STREAM_ID,
    MIN_MAX_FRAME_SIZE,
    PREFACE,
    PROTOCOL_VERSION,
    CallType,
    Cancel,
    ConnectionClosed,
    Credit,
    End,
    Error,
    Event,
    Frame,
    GoAway,
    Hello,
    Item,
    Ping,
    Pong,
    Request,
    Response,
    Settings,
)
from ._status import ErrorCode, Status
from ._streams import _Stream, _StreamsMixin, server_sends_items

__all__ = ["Connection", "Role", "StreamState"]

_SUPPORTED: Final = frozenset(SUPPORTED_COMPRESSION)
# GOAWAY may be sent before we know the peer's max_frame_size; this many characters always
# fits in the 16 KiB every peer accepts.
_MAX_GOAWAY_MESSAGE: Final = 2048


class Role(enum.Enum):
    """Which end of the connection a :class:`Connection` is."""

    CLIENT = "client"
    SERVER = "server"


class StreamState(enum.Enum):
    """A stream's state, as :meth:`Connection.stream_state` reports it."""

    #: Not opened yet: the id is above every id used so far.
    IDLE = "idle"
    #: REQUEST sent/received; waiting for the server's terminal frame.
    OPEN = "open"
    #: Like OPEN, but CANCEL was sent/received; a terminal frame is still due.
    CANCELLING = "cancelling"
    #: A terminal frame was sent/received, or GOAWAY refused the stream.
    CLOSED = "closed"


def _kind(frame: Frame) -> str:
    return type(frame).__name__.upper()


def _metadata_size(metadata: dict[str, str]) -> int:
    # UTF-8 length without encoding in the common all-ASCII case.
    total = 0
    for key, value in metadata.items():
        total += len(key) if key.isascii() else len(key.encode())
        total += len(value) if value.isascii() else len(value.encode())
    return total


@final
class Connection(_StreamsMixin):
    """Sans-io state machine for one end of a trio_micro RPC connection.

    Args:
        role: :attr:`Role.CLIENT` (opens streams) or :attr:`Role.SERVER` (answers them).
        settings: What this side accepts; sent to the peer in HELLO. Defaults to
            ``Settings()``. Its ``compression`` names what we can decompress
            (:meth:`decompress`).
        compression: The encoding this side compresses its payloads with when a call does
            not say (``None``: none); used only if the peer's HELLO accepts it. Per call, a
            REQUEST's metadata ``tm-compression`` overrides it on both ends
            (docs/protocol.md §14).
        compression_threshold: Payloads shorter than this are sent uncompressed.

    Raises:
        ValueError: ``compression`` is not a supported encoding, or a negative threshold.

    Attributes:
        role: As passed.
        local_settings: Our settings.

    A client's life, with ``sock`` standing for the I/O layer::

        conn = Connection(Role.CLIENT)
        sock.send(conn.initiate())
        ...                                   # until receive_data() returned a Hello
        if conn.can_open_stream():            # else wait for a terminal frame to arrive
            sid = conn.next_stream_id
            sock.send(conn.send_request(sid, "users/get", payload, timeout_ms=250))
        for event in conn.receive_data(sock.recv()):
            ...                               # Response / Item / End / Error / Ping / GoAway

    A server answers :class:`Request` events with :meth:`send_response` (unary) or
    :meth:`send_item` ... :meth:`send_end` (server-stream), or :meth:`send_error`; a
    :class:`Cancel` event means "stop the handler, then still send a terminal frame".

    Not thread-safe; from trio tasks it is fine to share, since no method awaits.
    """

    def __init__(
        self,
        role: Role,
        *,
        settings: Settings | None = None,
        compression: str | None = None,
        compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
    ) -> None:
        if not isinstance(role, Role):
            raise TypeError(f"role must be Role.CLIENT or Role.SERVER, got {role!r}")
        if compression_threshold < 0:
            raise ValueError(f"compression_threshold must be >= 0, got {compression_threshold!r}")
        self.role: Final = role
        self._is_client = role is Role.CLIENT
        self.local_settings: Final = settings if settings is not None else Settings()
        self._local_initial_credit = self.local_settings.initial_stream_credit
        self._remote_settings: Settings | None = None
        # Until the peer's HELLO says otherwise, assume the smallest limit any peer may set.
        self._encoder = FrameEncoder(max_frame_size=MIN_MAX_FRAME_SIZE)
        self._decoder = FrameDecoder(max_frame_size=self.local_settings.max_frame_size)
        self._preface_buffer = bytearray()
        self._preface_done = False
        self._hello_sent = False
        self._ready = False  # both HELLOs exchanged
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._peer_max_streams = 0
        self._peer_initial_credit = 0
        self._goaway_sent: GoAway | None = None
        self._goaway_received: GoAway | None = None
        self._remote_error: RemoteProtocolError | None = None
        self._eof = False
        self._handlers: dict[type[Any], Callable[[Any], Event | None]] = {
            Hello: self._receive_hello
        }
        # Compression: what we inflate, and (from the peer's HELLO) how we may deflate.
        self._compression = check_compression(compression)
        self._compression_threshold = compression_threshold
        self._accepted_codes = frozenset(
            ENCODINGS[name] for name in self.local_settings.compression if name in _SUPPORTED
        )
        self._compressors: dict[str, Compressor | None] = {"none": None}
        self._default_compressor: Compressor | None = None

    # ------------------------------------------------------------------ queries

    @property
    def remote_settings(self) -> Settings | None:
        """The peer's settings from its HELLO; ``None`` until it arrives."""
        return self._remote_settings

    @property
    def handshake_complete(self) -> bool:
        """True once we have sent our HELLO and received the peer's."""
        return self._ready

    @property
    def goaway_sent(self) -> GoAway | None:
        """The last GOAWAY we sent, if any."""
        return self._goaway_sent

    @property
    def goaway_received(self) -> GoAway | None:
        """The last GOAWAY the peer sent, if any."""
        return self._goaway_received

    @property
    def open_streams(self) -> int:
        """Streams opened and not yet closed (including CANCELLING ones)."""
        return len(self._streams)

    @property
    def available_streams(self) -> int:
        """How many more streams a client may open now (always 0 for a server).

        0 before the handshake completes and after GOAWAY either way. When it is 0 while
        neither side has sent GOAWAY, a stream will free up when a terminal frame arrives:
        wait, don't fail.
        """
        if (
            self.role is not Role.CLIENT
            or not self._ready
            or self._goaway_sent is not None
            or self._goaway_received is not None
        ):
            return 0
        return max(0, self._peer_max_streams - len(self._streams))

    def can_open_stream(self) -> bool:
        """Whether :meth:`send_request` would be allowed now (``available_streams > 0``)."""
        return self.available_streams > 0

    @property
    def next_stream_id(self) -> int:
        """The smallest id a new REQUEST may use. Not reserved: ids are taken by sending."""
        return self._last_stream_id + 1

    def stream_state(self, stream_id: int) -> StreamState:
        """Return the state of stream ``stream_id``."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return StreamState.CANCELLING if stream.cancelled else StreamState.OPEN
        if 0 < stream_id <= self._last_stream_id:
            return StreamState.CLOSED
        return StreamState.IDLE

    @property
    def peer_compression(self) -> tuple[str, ...]:
        """The encodings we may compress with: the peer accepts them and we support them
        (empty until its HELLO, and for a peer that announced none)."""
        return tuple(name for name in self._compressors if name != "none")

    def decompress(self, payload: Ext) -> bytes:
        """Return the bytes a compressed payload (a frame's ``payload`` that is not
        ``bytes``) stands for, inflating no more than our ``max_frame_size``.

        Raises:
            CompressionError: An encoding we did not announce, too large once inflated, or
                garbage; its ``status`` is what to fail that one call with.
        """
        return decompress(payload, self._accepted_codes, self.local_settings.max_frame_size)

    def stream_credit(self, stream_id: int) -> int:
        """ITEMs the server may still send on ``stream_id`` (0 if not an open server-stream).

        On a server, 0 means: wait for a CREDIT event before :meth:`send_item`.
        """
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.credit

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes received from the peer; return the events they complete, in order.

        Events are the frames themselves (:class:`Hello`, :class:`Request`, ...), except
        that frames which change nothing -- a CREDIT or CANCEL racing with the stream's end,
        a duplicate CANCEL, a REQUEST refused by our GOAWAY -- produce no event.

        Args:
            data: Any number of bytes, split anywhere. ``b""`` means the peer closed the
                transport: returns ``[ConnectionClosed()]`` if that happened between frames.

        Raises:
            RemoteProtocolError: The peer broke the protocol. Send
                ``send_goaway(exc.code, exc.message)`` and close. Events completed by the
                same ``data`` are lost, and every later call raises again.
            LocalProtocolError: Called again after ``b""``.
        """
        if self._remote_error is not None:
            raise RemoteProtocolError(
                f"can't receive after a protocol error: {self._remote_error.message}",
                code=self._remote_error.code,
            )
        if self._eof:
            raise LocalProtocolError(f"receive_data({bytes(data)!r}) after end of stream (b'')")
        try:
            if not data:
                return self._receive_eof()
            if not self._preface_done:
                data = self._receive_preface(data)
                if not data:
                    return []
            events: list[Event] = []
            for frame in self._decoder.receive_data(data):
                # Looked up per frame: a HELLO swaps the table mid-batch.
                handler = self._handlers.get(type(frame))
                if handler is None:
                    raise self._unexpected(frame)
                event = handler(frame)
                if event is not None:
                    events.append(event)
        except RemoteProtocolError as exc:
            self._remote_error = exc
            raise
        return events

    def _receive_eof(self) -> list[Event]:
        self._eof = True
        if not self._preface_done and self._preface_buffer:
            raise RemoteProtocolError(
                f"connection closed during the preface, after {bytes(self._preface_buffer)!r}"
            )
        if self._decoder.buffered:
            raise RemoteProtocolError(
                f"connection closed in the middle of a frame, {self._decoder.buffered!r} "
                "bytes into it"
            )
        return [ConnectionClosed()]

    def _receive_preface(self, data: bytes | bytearray | memoryview) -> bytes:
        buffer = self._preface_buffer
        buffer += data
        magic = bytes(buffer[: len(MAGIC)])
        if not MAGIC.startswith(magic):
            raise RemoteProtocolError(f"expected the preface {MAGIC!r}, got {magic!r}")
        if len(buffer) < len(PREFACE):
            return b""
        version = int.from_bytes(buffer[len(MAGIC) : len(PREFACE)], "big")
        if version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"peer speaks protocol version {version!r}; we speak {PROTOCOL_VERSION!r}",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        self._preface_done = True
        rest = bytes(buffer[len(PREFACE) :])
        self._preface_buffer = bytearray()
        return rest

    def _unexpected(self, frame: Frame) -> RemoteProtocolError:
        kind = _kind(frame)
        if self._remote_settings is None:
            return RemoteProtocolError(f"expected HELLO as the first frame, got {kind}")
        if isinstance(frame, Hello):
            return RemoteProtocolError(f"HELLO sent twice: {frame!r}")
        if not self._hello_sent:
            return RemoteProtocolError(f"{kind} arrived before we sent our HELLO: {frame!r}")
        peer = "server" if self.role is Role.CLIENT else "client"
        return RemoteProtocolError(f"a {peer} may not send {kind} frames: {frame!r}")

    def _receive_hello(self, frame: Hello) -> Hello:
        if frame.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"HELLO says protocol version {frame.version!r}; we speak {PROTOCOL_VERSION!r}",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        settings = frame.settings
        self._remote_settings = settings
        self._encoder.max_frame_size = settings.max_frame_size
        self._peer_max_streams = settings.max_concurrent_streams
        self._peer_initial_credit = settings.initial_stream_credit
        compressors = self._compressors
        for name in settings.compression:
            if name in _SUPPORTED and name not in compressors:  # unknown names: ignored
                compressors[name] = Compressor(
                    name, self._compression_threshold, settings.max_frame_size
                )
        if self._compression is not None:
            self._default_compressor = compressors.get(self._compression)
        self._update_handshake()
        return frame

    def _update_handshake(self) -> None:
        if self._remote_settings is None:
            return
        if not self._hello_sent:
            # The peer can't have seen our settings, so only GOAWAY (reporting an error) is legal.
            self._handlers = {GoAway: self._receive_goaway}
            return
        self._ready = True
        common: dict[type[Any], Callable[[Any], Event | None]] = {
            Ping: _identity,
            Pong: _identity,
            GoAway: self._receive_goaway,
        }
        if self.role is Role.CLIENT:
            common[Response] = self._receive_response
            common[Item] = self._receive_item
            common[End] = self._receive_end
            common[Error] = self._receive_error
            common[Credit] = self._receive_server_credit
        else:
            common[Item] = self._receive_client_item
            common[End] = self._receive_half_close
            common[Request] = self._receive_request
            common[Credit] = self._receive_credit
            common[Cancel] = self._receive_cancel
        self._handlers = common

    def _not_open(self, frame: Response | Item | End | Error) -> RemoteProtocolError:
        if frame.id > self._last_stream_id:
            return RemoteProtocolError(f"{_kind(frame)} for stream {frame.id!r}, never opened")
        return RemoteProtocolError(f"{_kind(frame)} for stream {frame.id!r}, already closed")

    # Client side: the server's answers.

    def _receive_response(self, frame: Response) -> Response:
        stream = self._streams.get(frame.id)
        if stream is None:
            raise self._not_open(frame)
        if server_sends_items(stream.call_type):
            raise RemoteProtocolError(
                f"RESPONSE on server-stream {frame.id!r}; expected ITEM, END or ERROR"
            )
        del self._streams[frame.id]
        return frame

    def _receive_item(self, frame: Item) -> Item:
        stream = self._streams.get(frame.id)
        if stream is None:
            raise self._not_open(frame)
        if not server_sends_items(stream.call_type):
            raise RemoteProtocolError(
                f"ITEM on unary stream {frame.id!r}; expected RESPONSE or ERROR"
            )
        if stream.credit <= 0:
            raise RemoteProtocolError(
                f"ITEM on stream {frame.id!r} without credit", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        stream.credit -= 1
        return frame

    def _receive_end(self, frame: End) -> End:
        stream = self._streams.get(frame.id)
        if stream is None:
            raise self._not_open(frame)
        if not server_sends_items(stream.call_type):
            raise RemoteProtocolError(f"END on unary stream {frame.id!r}; expected RESPONSE")
        del self._streams[frame.id]
        return frame

    def _receive_error(self, frame: Error) -> Error:
        if frame.id not in self._streams:
            raise self._not_open(frame)
        if frame.code is Status.OK:
            raise RemoteProtocolError(f"ERROR frame with status OK: {frame!r}")
        del self._streams[frame.id]
        return frame

    # Server side: the client's requests and stream control.

    def _receive_request(self, frame: Request) -> Request | None:
        stream_id = frame.id
        if stream_id <= self._last_stream_id:
            if stream_id in self._streams:
                raise RemoteProtocolError(f"REQUEST reuses stream id {stream_id!r}, still open")
            raise RemoteProtocolError(
                f"stream ids must increase: REQUEST {stream_id!r} after {self._last_stream_id!r}"
            )
        self._last_stream_id = stream_id
        if self._goaway_received is not None:
            raise RemoteProtocolError(f"REQUEST {stream_id!r} after the client's GOAWAY")
        if self._goaway_sent is not None and stream_id > self._goaway_sent.last_id:
            return None  # refused: our GOAWAY tells the client it was never processed
        limit = self.local_settings.max_concurrent_streams
        if len(self._streams) >= limit:
            raise RemoteProtocolError(
                f"REQUEST {stream_id!r} opens stream number {len(self._streams) + 1!r}; our "
                f"max_concurrent_streams is {limit!r}",
                code=ErrorCode.TOO_MANY_STREAMS,
            )
        compress = self._default_compressor
        if frame.metadata:
            size = _metadata_size(frame.metadata)
            if size > self.local_settings.max_metadata_size:
                raise RemoteProtocolError(
                    f"REQUEST {stream_id!r} has {size!r} bytes of metadata; our "
                    f"max_metadata_size is {self.local_settings.max_metadata_size!r}",
                    code=ErrorCode.METADATA_TOO_LARGE,
                )
            hint = frame.metadata.get(COMPRESSION_HINT)
            if hint is not None:  # an encoding the client does not accept: ignored
                compress = self._compressors.get(hint, compress)
        stream = self._streams[stream_id] = self._new_stream(frame.call_type, client=False)
        if compress is not None:
            stream.compress = compress
        return frame

    def _live_or_raced(self, frame: Credit | Cancel) -> _Stream | None:
        stream = self._streams.get(frame.id)
        if stream is None and frame.id > self._last_stream_id:
            raise RemoteProtocolError(f"{_kind(frame)} for stream {frame.id!r}, never opened")
        return stream  # None: raced with the terminal frame we sent; ignore

    def _receive_credit(self, frame: Credit) -> Credit | None:
        stream = self._live_or_raced(frame)
        if stream is None:
            return None
        if not server_sends_items(stream.call_type):
            raise RemoteProtocolError(f"CREDIT on unary stream {frame.id!r}")
        if stream.credit + frame.n > MAX_CREDIT:
            raise RemoteProtocolError(
                f"CREDIT {frame.n!r} on stream {frame.id!r} takes its credit over {MAX_CREDIT!r}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        stream.credit += frame.n
        return frame

    def _receive_cancel(self, frame: Cancel) -> Cancel | None:
        stream = self._live_or_raced(frame)
        if stream is None or stream.cancelled:
            return None
        stream.cancelled = True
        return frame

    def _receive_goaway(self, frame: GoAway) -> GoAway:
        previous = self._goaway_received
        if previous is not None and frame.last_id > previous.last_id:
            raise RemoteProtocolError(
                f"GOAWAY last_id may only decrease: {previous.last_id!r}, then {frame.last_id!r}"
            )
        self._goaway_received = frame
        if self.role is Role.CLIENT:
            self._forget_streams_above(frame.last_id)
        return frame

    def _forget_streams_above(self, last_id: int) -> None:
        for stream_id in [s for s in self._streams if s > last_id]:
            del self._streams[stream_id]

    # ------------------------------------------------------------------ sending

    def initiate(self) -> bytes:
        """Return the preface and our HELLO; send them first, before anything else.

        Raises:
            LocalProtocolError: Called twice.
        """
        if self._hello_sent:
            raise LocalProtocolError("initiate() was already called")
        data = PREFACE + self._encoder.encode(Hello(PROTOCOL_VERSION, self.local_settings))
        self._hello_sent = True
        self._update_handshake()
        return data

    def _check_ready(self, kind: str) -> None:
        if not self._ready:
            raise LocalProtocolError(
                f"can't send {kind} before the HELLO exchange completes "
                f"(our HELLO sent: {self._hello_sent!r}, "
                f"theirs received: {self._remote_settings is not None!r})"
            )

    def _check_role(self, role: Role, kind: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(
                f"only a {role.value} sends {kind}; this is a {self.role.value}"
            )

    def send_request(
        self,
        stream_id: int,
        method: str,
        payload: bytes,
        *,
        call_type: CallType = CallType.UNARY,
        timeout_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bytes:
        """Open stream ``stream_id`` with a REQUEST (client only).

        Args:
            stream_id: Above every id used so far; :attr:`next_stream_id` is the usual choice.
            method: ``"service/method"``.
            payload: The msgpack-encoded request.
            call_type: ``UNARY`` (expect RESPONSE) or ``SERVER_STREAM`` (expect ITEMs + END).
            timeout_ms: The caller's remaining time; ``None`` for no deadline.
            metadata: String pairs such as ``traceparent``. A ``tm-compression`` entry
                picks this call's encoding, both ways (unknown or not accepted by the
                server: the connection's default).

        Raises:
            LocalProtocolError: Not a client; handshake incomplete; GOAWAY sent or received;
                ``stream_id`` not above every id used; no stream slot free (code
                ``TOO_MANY_STREAMS``: wait for :meth:`can_open_stream`); metadata over the
                peer's limit (``METADATA_TOO_LARGE``); frame over the peer's limit
                (``FRAME_SIZE_ERROR``).
            ValueError: ``stream_id`` or ``timeout_ms`` out of range.
        """
        self._check_role(Role.CLIENT, "REQUEST")
        self._check_ready("REQUEST")
        if self._goaway_sent is not None:
            raise LocalProtocolError("can't open a stream after sending GOAWAY")
        if self._goaway_received is not None:
            raise LocalProtocolError(
                f"can't open a stream after the server's GOAWAY: {self._goaway_received!r}"
            )
        if stream_id <= self._last_stream_id:
            if stream_id in self._streams:
                raise LocalProtocolError(f"stream {stream_id!r} is still open")
            raise LocalProtocolError(
                f"stream ids must increase: got {stream_id!r}, but {self._last_stream_id!r} "
                "was already used (see next_stream_id)"
            )
        if stream_id > MAX_STREAM_ID:
            raise ValueError(f"stream_id must be at most {MAX_STREAM_ID}, got {stream_id!r}")
        if len(self._streams) >= self._peer_max_streams:
            raise LocalProtocolError(
                f"{len(self._streams)!r} streams open, the server's max_concurrent_streams; "
                "wait until can_open_stream()",
                code=ErrorCode.TOO_MANY_STREAMS,
            )
        if timeout_ms is not None and not 0 <= timeout_ms <= MAX_STREAM_ID:
            raise ValueError(f"timeout_ms must be >= 0 or None, got {timeout_ms!r}")
        if metadata:
            size = _metadata_size(metadata)
            assert self._remote_settings is not None  # implied by _ready
            if size > self._remote_settings.max_metadata_size:
                raise LocalProtocolError(
                    f"metadata is {size!r} bytes; the server's max_metadata_size is "
                    f"{self._remote_settings.max_metadata_size!r}",
                    code=ErrorCode.METADATA_TOO_LARGE,
                )
            hint = metadata.get(COMPRESSION_HINT)
            compress = (
                self._default_compressor
                if hint is None
                else self._compressors.get(hint, self._default_compressor)
            )
        else:
            metadata = {}
            compress = self._default_compressor
        data = self._encoder.encode(
            Request(
                stream_id,
                method,
                payload if compress is None else compress(payload),
                timeout_ms,
                metadata,
                call_type,
            )
        )
        stream = self._streams[stream_id] = self._new_stream(call_type, client=True)
        if compress is not None:
            stream.compress = compress
        self._last_stream_id = stream_id
        return data

    def _server_stream(self, stream_id: int, kind: str) -> _Stream:
        self._check_role(Role.SERVER, kind)
        self._check_ready(kind)
        stream = self._streams.get(stream_id)
        if stream is None:
            state = self.stream_state(stream_id).value
            raise LocalProtocolError(f"can't send {kind} on stream {stream_id!r}: it is {state}")
        return stream

    def send_response(self, stream_id: int, payload: bytes) -> bytes:
        """Answer unary stream ``stream_id`` and close it (server only).

        Raises:
            LocalProtocolError: Not a server; stream not open or not unary; frame over the
                peer's ``max_frame_size`` (``FRAME_SIZE_ERROR``: send an ERROR instead).
        """
        stream = self._server_stream(stream_id, "RESPONSE")
        if server_sends_items(stream.call_type):
            raise LocalProtocolError(
                f"stream {stream_id!r} is a server-stream: send ITEMs and END, not RESPONSE"
            )
        compress = stream.compress
        data = self._encoder.encode(
            Response(stream_id, payload if compress is None else compress(payload))
        )
        del self._streams[stream_id]
        return data

    def send_item(self, stream_id: int, payload: bytes) -> bytes:
        """Send one ITEM on ``stream_id``, spending one credit.

        A server sends ITEMs on server- and bidi-streams; a client on client- and
        bidi-streams, until it half-closes (:meth:`send_end`) or cancels.

        Raises:
            LocalProtocolError: Stream not open (for a client: "the call has ended" once the
                server's terminal frame arrived), or of a shape where this side sends no
                ITEMs; the client half already closed or cancelled; no credit left
                (``FLOW_CONTROL_ERROR``: wait for a :class:`Credit` event); frame too large.
        """
        if self.role is Role.CLIENT:
            return self._send_client_item(stream_id, payload)
        stream = self._server_stream(stream_id, "ITEM")
        if not server_sends_items(stream.call_type):
            raise LocalProtocolError(f"stream {stream_id!r} is unary: send RESPONSE, not ITEM")
        if stream.credit <= 0:
            raise LocalProtocolError(
                f"no credit left on stream {stream_id!r}; wait for CREDIT",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        compress = stream.compress
        data = self._encoder.encode(
            Item(stream_id, payload if compress is None else compress(payload))
        )
        stream.credit -= 1
        return data

    def send_end(self, stream_id: int) -> bytes:
        """End ``stream_id`` cleanly.

        From a server: close a server- or bidi-stream. From a client: half-close a client-
        or bidi-stream -- no more ITEMs from it; the server's answer is still to come.

        Raises:
            LocalProtocolError: Stream not open or of the wrong shape; the client half
                already closed or cancelled.
        """
        if self.role is Role.CLIENT:
            return self._send_half_close(stream_id)
        stream = self._server_stream(stream_id, "END")
        if not server_sends_items(stream.call_type):
            raise LocalProtocolError(f"stream {stream_id!r} is unary: send RESPONSE, not END")
        data = self._encoder.encode(End(stream_id))
        del self._streams[stream_id]
        return data

    def send_error(
        self,
        stream_id: int,
        code: Status,
        message: str = "",
        details: dict[str, str] | None = None,
    ) -> bytes:
        """Fail stream ``stream_id`` with ``code`` and close it (server only).

        Raises:
            LocalProtocolError: Not a server; stream not open; frame too large.
            ValueError: ``code`` is ``Status.OK`` or not a :class:`Status`.
        """
        if not isinstance(code, Status) or code is Status.OK:
            raise ValueError(f"code must be a Status other than OK, got {code!r}")
        self._server_stream(stream_id, "ERROR")
        data = self._encoder.encode(Error(stream_id, code, message, details or {}))
        del self._streams[stream_id]
        return data

    def _client_stream(self, stream_id: int, kind: str) -> _Stream | None:
        self._check_role(Role.CLIENT, kind)
        self._check_ready(kind)
        stream = self._streams.get(stream_id)
        if stream is None and not 0 < stream_id <= self._last_stream_id:
            raise LocalProtocolError(f"can't send {kind} on stream {stream_id!r}: never opened")
        return stream

    def send_credit(self, stream_id: int, n: int) -> bytes:
        """Let the peer send ``n`` more ITEMs on ``stream_id``.

        A client grants credit on server- and bidi-streams, a server on client- and
        bidi-streams. Returns ``b""`` if the stream has already closed, been cancelled or
        (for a server) half-closed by the client: the grant would be pointless, and the race
        with the end of the stream is normal.

        Raises:
            LocalProtocolError: Stream never opened, or of a shape where the peer sends no
                ITEMs; credit would
                exceed 2**31 - 1 (``FLOW_CONTROL_ERROR``).
            ValueError: ``n`` not in [1, 2**31 - 1].
        """
        if not 1 <= n <= MAX_CREDIT:
            raise ValueError(f"n must be in [1, {MAX_CREDIT}], got {n!r}")
        if self.role is Role.SERVER:
            return self._send_server_credit(stream_id, n)
        stream = self._client_stream(stream_id, "CREDIT")
        if stream is None or stream.cancelled:
            return b""
        if not server_sends_items(stream.call_type):
            raise LocalProtocolError(f"stream {stream_id!r} is unary: CREDIT is for server-streams")
        if stream.credit + n > MAX_CREDIT:
            raise LocalProtocolError(
                f"CREDIT {n!r} would take stream {stream_id!r} over {MAX_CREDIT!r}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        data = self._encoder.encode(Credit(stream_id, n))
        stream.credit += n
        return data

    def send_cancel(self, stream_id: int) -> bytes:
        """Ask the server to cancel stream ``stream_id`` (client only).

        The stream stays open (state CANCELLING) until the server's terminal frame arrives.
        Returns ``b""`` if the stream has already closed or was already cancelled.

        Raises:
            LocalProtocolError: Not a client; stream never opened.
        """
        stream = self._client_stream(stream_id, "CANCEL")
        if stream is None or stream.cancelled:
            return b""
        data = self._encoder.encode(Cancel(stream_id))
        stream.cancelled = True
        return data

    def send_ping(self, opaque: int = 0) -> bytes:
        """Return a PING; the peer answers with a PONG carrying the same ``opaque``.

        Raises:
            LocalProtocolError: Handshake incomplete.
            ValueError: ``opaque`` not in [0, 2**63 - 1].
        """
        return self._send_ping_or_pong(Ping, opaque)

    def send_pong(self, opaque: int) -> bytes:
        """Return the PONG that answers a :class:`Ping` event with this ``opaque``.

        Raises:
            LocalProtocolError: Handshake incomplete.
            ValueError: ``opaque`` not in [0, 2**63 - 1].
        """
        return self._send_ping_or_pong(Pong, opaque)

    def _send_ping_or_pong(self, frame_type: type[Ping | Pong], opaque: int) -> bytes:
        if not 0 <= opaque <= MAX_OPAQUE:
            raise ValueError(f"opaque must be in [0, {MAX_OPAQUE}], got {opaque!r}")
        self._check_ready(frame_type.__name__.upper())
        return self._encoder.encode(frame_type(opaque))

    def send_goaway(
        self,
        code: ErrorCode = ErrorCode.NO_ERROR,
        message: str = "",
        *,
        last_id: int | None = None,
    ) -> bytes:
        """Announce that no new streams will be accepted (or opened) on this connection.

        Legal any time after :meth:`initiate`, including after a
        :class:`RemoteProtocolError`. May be sent more than once with a non-increasing
        ``last_id``.

        Args:
            code: Why; ``NO_ERROR`` for a graceful shutdown, ``exc.code`` after a protocol
                error.
            message: For the peer's logs; cut to 2048 characters.
            last_id: Server: the highest stream id it will process; streams above it are
                dropped now, and REQUESTs above it that arrive later are ignored. Defaults
                to the highest id received (nothing in flight is lost). Client: ignored by
                the server; defaults to 0.

        Raises:
            LocalProtocolError: :meth:`initiate` not called yet; ``last_id`` above that of an
                earlier GOAWAY.
            ValueError: ``last_id`` out of range.
        """
        if not self._hello_sent:
            raise LocalProtocolError("can't send GOAWAY before initiate()")
        previous = self._goaway_sent
        if last_id is None:
            last_id = self._last_stream_id if self.role is Role.SERVER else 0
            if previous is not None:
                last_id = min(last_id, previous.last_id)
        elif not 0 <= last_id <= MAX_STREAM_ID:
            raise ValueError(f"last_id must be in [0, {MAX_STREAM_ID}], got {last_id!r}")
        if previous is not None and last_id > previous.last_id:
            raise LocalProtocolError(
                f"GOAWAY last_id may only decrease: {previous.last_id!r}, then {last_id!r}"
            )
        frame = GoAway(last_id, code, message[:_MAX_GOAWAY_MESSAGE])
        data = self._encoder.encode(frame)
        self._goaway_sent = frame
        if self.role is Role.SERVER:
            self._forget_streams_above(last_id)
        return data


def _identity(frame: Frame) -> Frame:
    return frame
