"""The Connect protocol's pieces the gateway speaks: codes, error JSON, envelopes, timeouts.

From the Connect protocol reference (connectrpc.com/docs/protocol; docs/interop.md says
which sections): error codes are the gRPC codes in snake_case, each with one HTTP status;
a unary error is that status with ``{"code", "message", "details"}``; a streaming body is a
sequence of envelopes (1 flag byte, 4-byte big-endian length, message), the last one
flagged end-of-stream and holding ``{"error"?, "metadata"}``; ``Connect-Timeout-Ms`` is at
most 10 digits. Pure functions: no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from trio_micro.protocol import Status

__all__ = ["CONNECT_CODES"]

#: rpc.Status -> (Connect code, HTTP status), from the spec's "Error Codes" table.
CONNECT_CODES: Final[Mapping[Status, tuple[str, int]]] = {
    Status.CANCELLED: ("canceled", 499),
    Status.UNKNOWN: ("unknown", 500),
    Status.INVALID_ARGUMENT: ("invalid_argument", 400),
    Status.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    Status.NOT_FOUND: ("not_found", 404),
    Status.ALREADY_EXISTS: ("already_exists", 409),
    Status.PERMISSION_DENIED: ("permission_denied", 403),
    Status.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    Status.FAILED_PRECONDITION: ("failed_precondition", 400),
    Status.ABORTED: ("aborted", 409),
    Status.OUT_OF_RANGE: ("out_of_range", 400),
    Status.UNIMPLEMENTED: ("unimplemented", 501),
    Status.INTERNAL: ("internal", 500),
    Status.UNAVAILABLE: ("unavailable", 503),
    Status.DATA_LOSS: ("data_loss", 500),
    Status.UNAUTHENTICATED: ("unauthenticated", 401),
}

#: The type name of the one error detail carrying an RpcError's string pairs.
DETAILS_TYPE: Final = "trio_micro.rpc.ErrorDetails"
#: The envelope flag of the end-of-stream message.
END_STREAM: Final = 0x02
COMPRESSED: Final = 0x01
#: Connect-Timeout-Ms is "1*10 DIGIT".
MAX_TIMEOUT_DIGITS: Final = 10

_json_encode: Final = msgspec.json.Encoder().encode


def error_body(code: Status, message: str, details: Mapping[str, str] | None = None) -> bytes:
    """The Connect error JSON of ``code`` (never ``OK``).

    ``details`` (an RpcError's string pairs) become one detail of type
    :data:`DETAILS_TYPE`: ``value`` is the base64 of their JSON, as the spec wants bytes
    there, and ``debug`` shows them as an object.
    """
    body: dict[str, Any] = {"code": CONNECT_CODES[code][0]}
    if message:
        body["message"] = message
    if details:
        raw = _json_encode(dict(details))
        value = base64.b64encode(raw).decode().rstrip("=")  # the spec omits padding
        body["details"] = [{"type": DETAILS_TYPE, "value": value, "debug": dict(details)}]
    return _json_encode(body)


def http_status(code: Status) -> int:
    """The HTTP status of a unary error with ``code``."""
    return CONNECT_CODES[code][1]


def envelope(flags: int, message: bytes) -> bytes:
    """One envelope: the flag byte, the big-endian u32 length, the message."""
    return bytes((flags,)) + len(message).to_bytes(4, "big") + message


def end_stream(error: tuple[Status, str, Mapping[str, str]] | None) -> bytes:
    """The end-of-stream envelope: ``{}`` on success, ``{"error": ...}`` on failure."""
    if error is None:
        return envelope(END_STREAM, b"{}")
    code, message, details = error
    return envelope(END_STREAM, b'{"error":' + error_body(code, message, details) + b"}")


def single_envelope(body: bytes) -> bytes:
    """The message of a streaming request body that must hold exactly one envelope.

    Raises:
        ValueError: Not one uncompressed, complete envelope (the message says why).
    """
    if len(body) < 5:
        raise ValueError(f"the body is {len(body)} bytes, shorter than an envelope's 5")
    flags = body[0]
    if flags & COMPRESSED:
        raise ValueError("compressed envelopes are not supported (no Connect-Content-Encoding)")
    if flags:
        raise ValueError(f"unexpected envelope flags {flags:#04x} in a request")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise ValueError(
            f"the envelope says {length} bytes but {len(body) - 5} follow; a server-stream "
            "request is exactly one message"
        )
    return body[5:]


def parse_timeout_ms(value: str) -> int:
    """``Connect-Timeout-Ms``: at most 10 ASCII digits.

    Raises:
        ValueError: Anything else.
    """
    if not (0 < len(value) <= MAX_TIMEOUT_DIGITS and value.isascii() and value.isdigit()):
        raise ValueError(f"Connect-Timeout-Ms must be 1 to 10 digits, got {value!r}")
    return int(value)
