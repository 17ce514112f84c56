"""The two families of codes that cross the wire.

* :class:`Status` -- the outcome of one call, carried by ERROR frames. These are gRPC's 17
  canonical codes with gRPC's numbers, so the meaning (and retry advice) of each is already
  well documented.
* :class:`ErrorCode` -- why a whole connection is being shut down, carried by GOAWAY frames
  and by :class:`~trio_micro.protocol.ProtocolError`.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "Status"]


class Status(enum.IntEnum):
    """The status of a finished call: gRPC's canonical codes, same names, same numbers.

    ``OK`` never appears in an ERROR frame (success is a RESPONSE or END frame); it exists so
    that logs and metrics can use one code space for every call.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ErrorCode(enum.IntEnum):
    """Why a connection is going away; sent in GOAWAY frames.

    The numbering is this protocol's own (HTTP/2's codes were the model, not the source).
    """

    #: Graceful shutdown; nothing went wrong.
    NO_ERROR = 0
    #: The peer broke a rule of this protocol (catch-all).
    PROTOCOL_ERROR = 1
    #: The sender failed internally, not because of anything the peer did.
    INTERNAL_ERROR = 2
    #: The peer sent more ITEMs than it had credit for, or overflowed a credit counter.
    FLOW_CONTROL_ERROR = 3
    #: A frame's length header exceeded the receiver's ``max_frame_size``.
    FRAME_SIZE_ERROR = 4
    #: The peer opened more streams than the receiver's ``max_concurrent_streams``.
    TOO_MANY_STREAMS = 5
    #: A REQUEST's metadata exceeded the receiver's ``max_metadata_size``.
    METADATA_TOO_LARGE = 6
    #: The preface or HELLO named a protocol version the receiver does not speak.
    UNSUPPORTED_VERSION = 7
    #: The peer did not complete the preface + HELLO exchange in time (enforced by the
    #: I/O layer, which owns the clock).
    HANDSHAKE_TIMEOUT = 8
    #: The peer pinged more often than the receiver's ``min_ping_interval_ms`` allows
    #: (enforced by the I/O layer).
    ENHANCE_YOUR_CALM = 9
