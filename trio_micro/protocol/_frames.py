"""Frame types, connection settings and wire constants.

Every frame is a ``msgspec.Struct`` with ``array_like=True`` and a small integer tag, so a frame
body is the msgpack array ``[kind, field1, field2, ...]`` -- compact, and decoded in one pass
by a single ``msgspec.msgpack.Decoder(Frame)``. Frames double as the events that
:meth:`Connection.receive_data <trio_micro.protocol.Connection.receive_data>` returns: the
decoder's output is handed straight to the caller, with no per-frame re-wrapping.

Field order is wire order; never reorder fields, only append new ones with defaults (receivers
ignore extra trailing elements). ``docs/protocol.md`` is the normative description.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, TypeAlias, final

import msgspec
from msgspec.msgpack import Ext

from ._status import ErrorCode, Status

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAGIC",
    "PREFACE",
    "PROTOCOL_VERSION",
    "CallType",
    "Cancel",
    "ConnectionClosed",
    "Credit",
    "End",
    "Error",
    "Event",
    "Frame",
    "FrameKind",
    "GoAway",
    "Hello",
    "Item",
    "Payload",
    "Ping",
    "Pong",
    "Request",
    "Response",
    "Settings",
]

#: The only protocol version this implementation speaks.
PROTOCOL_VERSION: Final = 1
#: First bytes each side sends. The high-bit first byte and the CRLF catch peers that speak
#: a text protocol or mangle line endings, as PNG's signature does.
MAGIC: Final = b"\x89TMRPC\r\n"
#: What :meth:`Connection.initiate` sends before HELLO: ``MAGIC`` + u16 big-endian version.
PREFACE: Final = MAGIC + PROTOCOL_VERSION.to_bytes(2, "big")

#: Default for :attr:`Settings.max_frame_size`: 4 MiB.
DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024
# Every peer must accept frames at least this large (so a HELLO always fits).
MIN_MAX_FRAME_SIZE: Final = 16 * 1024
MAX_FRAME_SIZE_LIMIT: Final = 2**32 - 1  # what a u32 length header can say
MAX_STREAM_ID: Final = 2**63 - 1  # fits a signed 64-bit integer in any language
MAX_CREDIT: Final = 2**31 - 1  # also the bound of every other u31 setting
MAX_OPAQUE: Final = 2**63 - 1  # msgspec bounds must fit an int64

_StreamId = Annotated[int, msgspec.Meta(ge=1, le=MAX_STREAM_ID)]
_LastId = Annotated[int, msgspec.Meta(ge=0, le=MAX_STREAM_ID)]
_Opaque = Annotated[int, msgspec.Meta(ge=0, le=MAX_OPAQUE)]
_Millis = Annotated[int, msgspec.Meta(ge=0, le=MAX_STREAM_ID)]
_CreditN = Annotated[int, msgspec.Meta(ge=1, le=MAX_CREDIT)]
# The names of the encodings a side accepts (HELLO); bounded like all a peer sends.
_EncodingName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
_EncodingNames = Annotated[tuple[_EncodingName, ...], msgspec.Meta(max_length=16)]
#: A payload: the msgpack encoding of a message (``bin``), or that compressed (an ``ext``
#: whose type code names the encoding; see :mod:`._compression`).
Payload: TypeAlias = bytes | Ext


class FrameKind(enum.IntEnum):
    """The tag that starts every frame body (``[kind, ...]``)."""

    HELLO = 1
    REQUEST = 2
    RESPONSE = 3
    ITEM = 4
    END = 5
    CREDIT = 6
    ERROR = 7
    CANCEL = 8
    PING = 9
    PONG = 10
    GOAWAY = 11


class CallType(enum.IntEnum):
    """The shape of a call: who sends ITEMs, and what ends the stream.

    ``UNARY`` and ``SERVER_STREAM`` REQUESTs carry the whole request; ``CLIENT_STREAM`` and
    ``BIDI_STREAM`` ones open a client half that carries ITEMs and ends with the client's
    END. ``UNARY`` and ``CLIENT_STREAM`` are answered by one RESPONSE, ``SERVER_STREAM`` and
    ``BIDI_STREAM`` by ITEMs closed by END; any of them may end with ERROR.
    """

    UNARY = 0
    SERVER_STREAM = 1
    CLIENT_STREAM = 2
    BIDI_STREAM = 3


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


@final
class Settings(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What one side of a connection accepts; sent once, in HELLO, and fixed after that.

    Encoded as a msgpack *map* (unlike frames) so that settings can be added without a new
    protocol version: receivers ignore keys they don't know and use the defaults below for
    keys that are missing.

    Args:
        max_frame_size: Largest frame body (bytes, excluding the 4-byte length) this side
            accepts. At least 16 KiB.
        max_concurrent_streams: Most streams the peer may have open towards this side at
            once (only meaningful in a server's HELLO: only clients open streams).
        max_metadata_size: Largest total of UTF-8 bytes of keys plus values in a REQUEST's
            metadata this side accepts.
        initial_stream_credit: ITEMs the peer may send on a new stream before this side
            grants more with CREDIT: the server's ITEMs on server- and bidi-streams (in a
            client's HELLO), the client's on client- and bidi-streams (in a server's).
        min_ping_interval_ms: This side may answer PINGs that arrive more often than this
            with ``GOAWAY(ENHANCE_YOUR_CALM)``.
        compression: Names of the payload encodings this side can decompress (at most 16,
            each at most 32 characters); the peer compresses only with one of these.
            Names it does not know are kept and ignored. Empty (the default, and what an
            older peer's HELLO implies): send nothing compressed to this side.

    Raises:
        ValueError: A value is out of range (also on decode, where it becomes a
            protocol error).
    """

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_concurrent_streams: int = 1000
    max_metadata_size: int = 8 * 1024
    initial_stream_credit: int = 64
    min_ping_interval_ms: int = 5_000
    compression: _EncodingNames = ()

    def __post_init__(self) -> None:
        _check_range(
            "max_frame_size", self.max_frame_size, MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT
        )
        _check_range("max_concurrent_streams", self.max_concurrent_streams, 0, MAX_CREDIT)
        _check_range("max_metadata_size", self.max_metadata_size, 0, MAX_CREDIT)
        _check_range("initial_stream_credit", self.initial_stream_credit, 0, MAX_CREDIT)
        _check_range("min_ping_interval_ms", self.min_ping_interval_ms, 0, MAX_CREDIT)
        names = self.compression
        if not isinstance(names, tuple) or len(names) > 16:
            raise ValueError(f"compression must be a tuple of at most 16 names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or not 0 < len(name) <= 32:
                raise ValueError(f"compression names must be 1 to 32 characters, got {name!r}")


class _Frame(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Base of all frames: a tagged msgpack array. Not part of the API."""


@final
class Hello(_Frame, frozen=True, tag=FrameKind.HELLO.value):
    """First frame each way, right after the preface."""

    version: int
    settings: Settings


@final
class Request(_Frame, frozen=True, tag=FrameKind.REQUEST.value):
    """Open stream ``id`` (client to server) by calling ``method``.

    ``payload`` is the msgpack encoding of the method's request type; the protocol layer does
    not look inside it. ``timeout_ms`` is the caller's remaining time, ``None`` for no
    deadline. ``call_type`` is the one field DESIGN §4 doesn't list: it lets both ends check
    RESPONSE-vs-ITEM and credit rules without knowing the service's method table.
    """

    id: _StreamId
    method: str
    payload: Payload
    timeout_ms: _Millis | None = None
    metadata: dict[str, str] = {}
    call_type: CallType = CallType.UNARY


@final
class Response(_Frame, frozen=True, tag=FrameKind.RESPONSE.value):
    """The result of a unary call; closes the stream."""

    id: _StreamId
    payload: Payload


@final
class Item(_Frame, frozen=True, tag=FrameKind.ITEM.value):
    """One item of a server-stream; spends one unit of the stream's credit."""

    id: _StreamId
    payload: Payload


@final
class End(_Frame, frozen=True, tag=FrameKind.END.value):
    """Clean end of a server-stream; closes the stream."""

    id: _StreamId


@final
class Credit(_Frame, frozen=True, tag=FrameKind.CREDIT.value):
    """The client lets the server send ``n`` more ITEMs on stream ``id``."""

    id: _StreamId
    n: _CreditN


@final
class Error(_Frame, frozen=True, tag=FrameKind.ERROR.value):
    """The call failed with ``code`` (never ``Status.OK``); closes the stream.

    A frame, not an exception: the RPC layer turns it into one.
    """

    id: _StreamId
    code: Status
    message: str = ""
    details: dict[str, str] = {}


@final
class Cancel(_Frame, frozen=True, tag=FrameKind.CANCEL.value):
    """The caller gave up on stream ``id``; the server cancels the handler and still ends
    the stream with a terminal frame (usually ``ERROR(CANCELLED)``)."""

    id: _StreamId


@final
class Ping(_Frame, frozen=True, tag=FrameKind.PING.value):
    """Keepalive probe; the receiver answers with a PONG carrying the same ``opaque``."""

    opaque: _Opaque


@final
class Pong(_Frame, frozen=True, tag=FrameKind.PONG.value):
    """Answer to a PING."""

    opaque: _Opaque


@final
class GoAway(_Frame, frozen=True, tag=FrameKind.GOAWAY.value):
    """The sender opens/accepts no new streams; streams with ``id <= last_id`` continue.

    Sent for graceful shutdown (``code=NO_ERROR``) or before closing on a protocol violation.
    """

    last_id: _LastId
    code: ErrorCode = ErrorCode.NO_ERROR
    message: str = ""


@final
class ConnectionClosed(msgspec.Struct, frozen=True, gc=False):
    """Event: the peer closed its side of the transport cleanly (between frames).

    Not a frame; :meth:`Connection.receive_data` returns it when fed ``b""``.
    """


#: Every frame type; what :class:`FrameDecoder` produces.
Frame: TypeAlias = (
    Hello | Request | Response | Item | End | Credit | Error | Cancel | Ping | Pong | GoAway
)
#: What :meth:`Connection.receive_data` returns: frames, plus ``ConnectionClosed``.
Event: TypeAlias = Frame | ConnectionClosed
