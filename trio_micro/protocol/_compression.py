"""Payload compression: encodings, the sender's threshold, the receiver's bomb limit.

Theory of operation
-------------------
Each side announces in its HELLO the encodings it can *decompress*
(:attr:`Settings.compression <trio_micro.protocol.Settings.compression>`); a sender only
uses one the peer announced. A compressed payload travels as a msgpack **ext** value in
place of the payload's ``bin`` -- the ext type code names the encoding (:data:`ENCODINGS`)
-- so an uncompressed frame is byte for byte what it was before compression existed, and
the flag costs nothing on the common path. ``docs/protocol.md`` §6 and §14 are normative.

A :class:`Compressor` is one encoding bound to the peer's limits: payloads under its
threshold, or that would not get smaller, go out as they are. :func:`decompress` is the
receiver's half and never inflates past ``limit``: zlib inflates at most ``limit + 1``
bytes (``max_length``), and a zstd frame must declare its size, which is checked before
anything is inflated. A payload that would decompress past the receiver's
``max_frame_size`` (a "decompression bomb") is refused without being inflated in full.
Every failure is a :class:`CompressionError` carrying the call status to fail *that call*
with; compression never closes a connection.

Encodings: ``zlib`` (RFC 1950, the standard library) always; ``zstd`` when the optional
``zstandard`` package (``pip install trio-micro[zstd]``) is importable. Python 3.14's
``compression.zstd`` would serve as well, but the project runs on 3.11+, so the package
it is, and only as an extra.
"""

from __future__ import annotations

import functools
import importlib.util
import zlib
from collections.abc import Callable
from typing import Any, Final, final

from msgspec.msgpack import Ext

from ._errors import LocalProtocolError
from ._status import ErrorCode, Status

__all__ = [
    "COMPRESSION_HINT",
    "DEFAULT_COMPRESSION_THRESHOLD",
    "ENCODINGS",
    "SUPPORTED_COMPRESSION",
    "CompressionError",
    "Compressor",
    "check_compression",
    "with_compression_hint",
]

#: Wire code (the msgpack ext type) of each encoding this module knows.
ENCODINGS: Final[dict[str, int]] = {"zlib": 1, "zstd": 2}
#: REQUEST metadata key by which a client asks for one encoding (or ``"none"``) for the
#: server's answers to that call; see docs/protocol.md §14.
COMPRESSION_HINT: Final = "tm-compression"
#: Payloads shorter than this many bytes are sent uncompressed: below it zlib saves too
#: little to pay for its CPU time (benchmarks/compression_bench.py --threshold).
DEFAULT_COMPRESSION_THRESHOLD: Final = 1024
# zlib level 1: on msgpack records it keeps most of level 6's ratio at a fraction of the
# time (benchmarks/compression_bench.py --threshold prints both).
_ZLIB_LEVEL: Final = 1
# HELLO's list of names is bounded like every other thing a peer sends.
MAX_ENCODING_NAMES: Final = 16
MAX_ENCODING_NAME_LENGTH: Final = 32

_Inflate = Callable[[bytes, int], bytes]


class CompressionError(Exception):
    """A compressed payload could not be used; fails one call, never the connection.

    Attributes:
        status: The call status to fail the call with: ``UNIMPLEMENTED`` (an encoding we
            did not announce), ``RESOURCE_EXHAUSTED`` (it would inflate past our
            ``max_frame_size``) or ``INVALID_ARGUMENT`` (not valid data of its encoding).
        message: What went wrong, for the error's message.
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def client_status(self) -> Status:
        """The status for a client that received the payload: ``RESOURCE_EXHAUSTED`` for
        one too large, ``INTERNAL`` otherwise (the server broke the rules, not the caller)."""
        too_large = self.status is Status.RESOURCE_EXHAUSTED
        return Status.RESOURCE_EXHAUSTED if too_large else Status.INTERNAL


def _zlib_inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)  # bounded: never more than limit + 1 bytes
    except zlib.error as exc:
        raise _garbage(exc) from None
    if len(out) > limit:
        raise _too_large(limit)
    if not inflater.eof or inflater.unused_data:
        raise _garbage("truncated, or followed by trailing bytes")
    return out


def _too_large(limit: int) -> CompressionError:
    return CompressionError(
        Status.RESOURCE_EXHAUSTED,
        f"compressed payload inflates past the receiver's max_frame_size of {limit!r} bytes",
    )


def _garbage(why: object) -> CompressionError:
    return CompressionError(Status.INVALID_ARGUMENT, f"compressed payload does not inflate: {why}")


@functools.cache
def _zstd() -> tuple[Any, Any, Any]:
    """The zstandard module, a compressor and a decompressor, imported on first use: the
    import takes longer than the rest of the protocol package's."""
    import zstandard  # type: ignore[import-not-found,unused-ignore]

    return zstandard, zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()


def _zstd_compress(data: bytes) -> bytes:
    out: bytes = _zstd()[1].compress(data)  # declares its content size (see _zstd_inflate)
    return out


def _zstd_inflate(data: bytes, limit: int) -> bytes:
    # One frame that declares its size: checked before anything is inflated, and the output
    # buffer is exactly that size (a frame that inflates past what its header says fails),
    # so inflation is bounded as for zlib.
    zstandard, _, decompressor = _zstd()
    try:
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise _garbage("the zstd frame header does not declare its content size")
        if size > limit:
            raise _too_large(limit)
        out: bytes = decompressor.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise _garbage(exc) from None
    return out


_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": lambda data: zlib.compress(data, _ZLIB_LEVEL)
}
_INFLATE: dict[int, _Inflate] = {ENCODINGS["zlib"]: _zlib_inflate}
if importlib.util.find_spec("zstandard") is not None:  # the zstd extra
    _COMPRESS["zstd"] = _zstd_compress
    _INFLATE[ENCODINGS["zstd"]] = _zstd_inflate

#: The encodings this process can use, best first: what a trio_micro side announces.
SUPPORTED_COMPRESSION: Final[tuple[str, ...]] = tuple(sorted(_COMPRESS, reverse=True))


def check_compression(name: object) -> str | None:
    """Return ``name`` checked as an encoding choice: ``None`` for ``None`` or ``"none"``.

    Raises:
        TypeError: ``name`` is not a string or ``None``.
        ValueError: Not an encoding this process supports (the message lists them).
    """
    if name is None or name == "none":
        return None
    if not isinstance(name, str):
        raise TypeError(f"compression must be a string or None, got {name!r}")
    if name not in _COMPRESS:
        known = ", ".join(("none", *SUPPORTED_COMPRESSION))
        extra = " (pip install trio-micro[zstd])" if name == "zstd" else ""
        raise ValueError(f"unknown compression {name!r}{extra}; known: {known}")
    return name


def with_compression_hint(
    metadata: dict[str, str] | None, compression: str | None, default: str | None
) -> dict[str, str] | None:
    """A client call's metadata carrying its compression choice: ``compression``, else the
    channel's ``default``, as :data:`COMPRESSION_HINT` (``"none"`` is sent too: it turns
    the server's own default off); ``metadata`` as it is when neither chooses. The one
    rule of both channels' stubs and calls (``rpc`` and ``aio``).

    Raises:
        TypeError / ValueError: As :func:`check_compression`, for ``compression``.
    """
    check_compression(compression)
    choice = default if compression is None else compression
    if choice is None:
        return metadata
    return {**(metadata or {}), COMPRESSION_HINT: choice}


@final
class Compressor:
    """Compresses payloads with one encoding for a peer that accepts it.

    Args:
        name: An encoding of :data:`SUPPORTED_COMPRESSION`.
        threshold: Payloads shorter than this many bytes are left as they are.
        limit: The peer's ``max_frame_size``: no payload may inflate past it.
    """

    __slots__ = ("_compress", "code", "limit", "name", "threshold")

    def __init__(self, name: str, threshold: int, limit: int) -> None:
        self.name: Final = name
        self.code: Final = ENCODINGS[name]
        self.threshold: Final = threshold
        self.limit: Final = limit
        self._compress = _COMPRESS[name]

    def __repr__(self) -> str:
        return f"<Compressor {self.name} threshold={self.threshold}>"

    def __call__(self, payload: bytes) -> bytes | Ext:
        """Return ``payload`` compressed (an :class:`~msgspec.msgpack.Ext`), or as it is
        when it is under the threshold or would not get smaller.

        Raises:
            LocalProtocolError: ``payload`` is over the peer's ``max_frame_size``
                (``FRAME_SIZE_ERROR``), compressed or not: the peer would refuse it.
        """
        size = len(payload)
        if size < self.threshold:
            return payload
        if size > self.limit:
            raise LocalProtocolError(
                f"payload is {size!r} bytes, over the peer's max_frame_size of "
                f"{self.limit!r}: it may not inflate to that, so compression can't help",
                code=ErrorCode.FRAME_SIZE_ERROR,
            )
        data = self._compress(payload)
        if len(data) >= size:
            return payload
        return Ext(self.code, data)


def decompress(payload: Ext, accepted: frozenset[int], limit: int) -> bytes:
    """Return the bytes a compressed payload stands for, never inflating past ``limit``.

    Args:
        payload: The frame's payload, an ext value whose code names the encoding.
        accepted: The codes of the encodings we announced.
        limit: Our ``max_frame_size``, the most it may inflate to.

    Raises:
        CompressionError: An encoding we did not announce (``UNIMPLEMENTED``), more than
            ``limit`` bytes (``RESOURCE_EXHAUSTED``), or data that is not valid for its
            encoding (``INVALID_ARGUMENT``).
    """
    code = payload.code
    inflate = _INFLATE.get(code) if code in accepted else None
    if inflate is None:
        raise CompressionError(
            Status.UNIMPLEMENTED, f"payload compressed with encoding code {code!r}, not accepted"
        )
    data = payload.data
    return inflate(data if type(data) is bytes else bytes(data), limit)
