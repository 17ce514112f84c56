"""Exceptions raised by the sans-io protocol.

::

    TrioMicroError
    └── ProtocolError              .code: ErrorCode, .message: str
        ├── LocalProtocolError     we asked for something the protocol forbids
        └── RemoteProtocolError    the peer broke the protocol

The split follows h11. A :class:`LocalProtocolError` is a bug or a race in *our* code (e.g.
sending a RESPONSE on a stream that is already closed, or an ITEM without credit); the call
that raised it had no effect, so the connection stays usable. A :class:`RemoteProtocolError`
means the peer misbehaved: the connection can no longer be trusted, and the right reaction is
to send ``GOAWAY(code=exc.code)`` and close it.
"""

from __future__ import annotations

from trio_micro._errors import TrioMicroError

from ._status import ErrorCode

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(TrioMicroError):
    """A rule of the wire protocol was broken.

    Args:
        message: What was expected and the offending value (shown with ``!r``).
        code: The GOAWAY code that describes the violation.

    Attributes:
        message: As passed.
        code: As passed; for a :class:`RemoteProtocolError`, the code to send in GOAWAY.
    """

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids; nothing was sent, no state changed."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; send ``GOAWAY(code=exc.code)`` and close the connection."""
