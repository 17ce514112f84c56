"""The sans-io wire protocol of trio_micro's RPC layer: frames, codec, connection state.

Bytes in, events out; calls in, bytes out -- like h11, and never importing trio. The I/O
layer (:mod:`trio_micro.rpc`) owns sockets, tasks and timers. ``docs/protocol.md`` is the
wire specification; the wire constants it names are exported too: :data:`PREFACE` (what a
connection starts with: :data:`MAGIC` and :data:`PROTOCOL_VERSION`) and
:data:`DEFAULT_MAX_FRAME_SIZE` (the largest frame a side accepts unless it says otherwise).

::

    conn = Connection(Role.CLIENT)
    await stream.send_all(conn.initiate())          # preface + HELLO
    for event in conn.receive_data(await stream.receive_some()):
        ...                                         # Hello, Response, Item, End, Error, ...
"""

from __future__ import annotations

from .._lazy import fixup_module_metadata
from ._codec import DECODE_ERRORS, FrameDecoder, FrameEncoder
from ._compression import (
    COMPRESSION_HINT,
    DEFAULT_COMPRESSION_THRESHOLD,
    SUPPORTED_COMPRESSION,
    CompressionError,
    Compressor,
    check_compression,
    with_compression_hint,
)
from ._connection import Connection, Role, StreamState
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._frames import (
    DEFAULT_MAX_FRAME_SIZE,
    MAGIC,
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
    FrameKind,
    GoAway,
    Hello,
    Item,
    Payload,
    Ping,
    Pong,
    Request,
    Response,
    Settings,
)
from ._guards import WindowCounter
from ._status import ErrorCode, Status
from ._streams import client_sends_items, server_sends_items

__all__ = [
    "COMPRESSION_HINT",
    "DECODE_ERRORS",
    "DEFAULT_COMPRESSION_THRESHOLD",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAGIC",
    "PREFACE",
    "PROTOCOL_VERSION",
    "SUPPORTED_COMPRESSION",
    "CallType",
    "Cancel",
    "CompressionError",
    "Compressor",
    "Connection",
    "ConnectionClosed",
    "Credit",
    "End",
    "Error",
    "ErrorCode",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameKind",
    "GoAway",
    "Hello",
    "Item",
    "LocalProtocolError",
    "Payload",
    "Ping",
    "Pong",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Role",
    "Settings",
    "Status",
    "StreamState",
    "WindowCounter",
    "check_compression",
    "client_sends_items",
    "server_sends_items",
    "with_compression_hint",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
