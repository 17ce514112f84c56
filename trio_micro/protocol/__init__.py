"""The sans-io wire protocol of trio_micro's RPC layer: frames, codec, connection state.

Bytes in, events out; calls in, bytes out -- like h11, and never importing trio. The I/O
layer (:mod:`trio_micro.rpc`) owns sockets, tasks and timers. ``docs/protocol.md`` is the
wire specification; the wire constants it names (``PREFACE``, ``MAGIC``,
``PROTOCOL_VERSION``, ``DEFAULT_MAX_FRAME_SIZE``) are defined in ``_frames`` and kept out of
``__all__``, which re-exports classes only.

::

    conn = Connection(Role.CLIENT)
    await stream.send_all(conn.initiate())          # preface + HELLO
    for event in conn.receive_data(await stream.receive_some()):
        ...                                         # Hello, Response, Item, End, Error, ...
"""

from __future__ import annotations

from ._codec import FrameDecoder, FrameEncoder
from ._connection import Connection, Role, StreamState
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._frames import (
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
    Ping,
    Pong,
    Request,
    Response,
    Settings,
)
from ._status import ErrorCode, Status

__all__ = [
    "CallType",
    "Cancel",
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
]
