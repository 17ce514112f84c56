"""Framing: ``u32 big-endian length | msgpack body``, bytes to frames and back.

Theory of operation
-------------------
:class:`FrameDecoder` keeps at most one partial frame in a ``bytearray``. Each call to
:meth:`~FrameDecoder.receive_data` decodes every complete frame through one ``memoryview``
(no per-frame slicing copies) and then drops the consumed prefix in a single ``del``, so a
chunk is copied at most once and the work stays linear however the stream is split. When the
buffer is empty -- the common case, a read that ends on a frame boundary -- frames are decoded
straight out of the caller's chunk and nothing is buffered at all.

The length header is checked against ``max_frame_size`` as soon as its 4 bytes are there,
before any of the body is buffered, so a hostile header cannot make us hold 4 GiB.

:class:`FrameEncoder` returns ``header + body`` as one ``bytes``. For frames of RPC size that
was measured faster than ``Encoder.encode_into`` a reusable ``bytearray`` with the header
written in place (the final ``bytes()`` copy costs as much as the concatenation), and it
doesn't pin a buffer as large as the largest frame ever sent on every connection.
"""

from __future__ import annotations

import struct
from typing import Final, final

import msgspec

from ._errors import LocalProtocolError, RemoteProtocolError
from ._frames import DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT, Frame, FrameKind
from ._status import ErrorCode

__all__ = ["DECODE_ERRORS", "HEADER_SIZE", "FrameDecoder", "FrameEncoder"]

#: What a msgspec decoder raises for bytes it cannot decode, on every msgspec we support:
#: a string that is not UTF-8 raised :class:`UnicodeDecodeError` before msgspec 0.23 and
#: raises :class:`msgspec.DecodeError` since, and input nested deeper than the interpreter's
#: recursion limit (5 KB of one-element arrays is enough) raises :class:`RecursionError`.
#: :class:`msgspec.ValidationError` is a :class:`msgspec.DecodeError`. The stdlib ``json``
#: module raises the same three (``JSONDecodeError`` is a :class:`ValueError`, so sites that
#: decode JSON catch ``(ValueError, *DECODE_ERRORS)``). Catch this, never
#: ``msgspec.DecodeError`` alone.
DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
#: Bytes in the length header that precedes every frame body.
HEADER_SIZE: Final = 4
_HEADER = struct.Struct(">I")
# Decoders are stateless, so one serves every connection.
_DECODER: Final = msgspec.msgpack.Decoder(Frame)
_KNOWN_KINDS: Final = frozenset(FrameKind)


@final
class FrameEncoder:
    """Encodes frames into length-prefixed bytes.

    Args:
        max_frame_size: Largest body to produce; usually the *peer's* ``max_frame_size``.
    """

    __slots__ = ("_encode", "max_frame_size")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError(
                f"max_frame_size must be in [1, {MAX_FRAME_SIZE_LIMIT}], got {max_frame_size!r}"
            )
        self.max_frame_size = max_frame_size
        self._encode = msgspec.msgpack.Encoder().encode

    def encode(self, frame: Frame) -> bytes:
        """Return ``frame`` as ``u32 length | msgpack body``.

        Raises:
            LocalProtocolError: The body exceeds ``max_frame_size`` (code
                ``FRAME_SIZE_ERROR``); nothing should be sent.
        """
        body = self._encode(frame)
        if len(body) > self.max_frame_size:
            raise LocalProtocolError(
                f"{type(frame).__name__.upper()} frame body is {len(body)!r} bytes, over the "
                f"peer's max_frame_size of {self.max_frame_size!r}",
                code=ErrorCode.FRAME_SIZE_ERROR,
            )
        return _HEADER.pack(len(body)) + body


@final
class FrameDecoder:
    """Turns a byte stream, split anywhere, into frames.

    Args:
        max_frame_size: Largest body to accept; *our* advertised ``max_frame_size``.
    """

    __slots__ = ("_buffer", "_failed", "max_frame_size")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add ``data`` and return every frame it completes, in order.

        Raises:
            RemoteProtocolError: A length header over ``max_frame_size`` (code
                ``FRAME_SIZE_ERROR``, raised before the body arrives), or a body that is not
                a valid frame: bad msgpack, unknown kind, wrong field types or values (code
                ``PROTOCOL_ERROR``). The decoder is unusable afterwards.
        """
        if self._failed:
            raise RemoteProtocolError("can't decode after an earlier protocol error")
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray | memoryview = buffer
        else:
            source = data
        frames: list[Frame] = []
        decode = _DECODER.decode
        unpack = _HEADER.unpack_from
        limit = self.max_frame_size
        pos = 0
        end = len(source)
        with memoryview(source) as view:
            while end - pos >= HEADER_SIZE:
                (size,) = unpack(view, pos)
                if size > limit:
                    self._failed = True
                    raise RemoteProtocolError(
                        f"frame length header says {size!r} bytes, over our max_frame_size "
                        f"of {limit!r}",
                        code=ErrorCode.FRAME_SIZE_ERROR,
                    )
                start = pos + HEADER_SIZE
                stop = start + size
                if stop > end:
                    break
                try:
                    frames.append(decode(view[start:stop]))
                except DECODE_ERRORS as exc:
                    self._failed = True
                    raise _malformed(bytes(view[start:stop]), exc) from exc
                pos = stop
            if source is not buffer and pos < end:
                buffer += view[pos:]
        if source is buffer and pos:
            # O(1) in CPython: bytearray drops a prefix by moving its start pointer.
            del buffer[:pos]
        return frames


def _malformed(body: bytes, exc: Exception) -> RemoteProtocolError:
    """Explain why ``body`` is not a frame (only runs on the error path).

    ``exc`` is one of :data:`DECODE_ERRORS`; all become the same
    :class:`RemoteProtocolError`, so no decoder exception leaves this layer.
    """
    preview = body[:32] + (b"..." if len(body) > 32 else b"")
    try:
        raw = msgspec.msgpack.decode(body)
    except DECODE_ERRORS as error:
        if isinstance(error, RecursionError):
            return RemoteProtocolError(f"frame body is nested too deeply: {preview!r}")
        if isinstance(error, UnicodeDecodeError) or "UTF-8" in str(error):
            return RemoteProtocolError(
                f"frame body has a string that is not valid UTF-8: {preview!r}"
            )
        return RemoteProtocolError(f"frame body is not valid msgpack ({exc}): {preview!r}")
    if isinstance(raw, list) and raw and type(raw[0]) is int and raw[0] not in _KNOWN_KINDS:
        return RemoteProtocolError(f"unknown frame kind {raw[0]!r} in {preview!r}")
    return RemoteProtocolError(f"invalid frame ({exc}): {preview!r}")
