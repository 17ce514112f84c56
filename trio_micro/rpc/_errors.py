"""The exception a failed call raises.

::

    TrioMicroError
    └── RpcError               .code: Status, .message: str, .details: dict[str, str]

A call that the server answered with an ERROR frame raises :class:`RpcError` with the
server's code, message and details. Failures on the client side are mapped onto the same
codes, so callers handle one exception type: no connection to the address
(``UNAVAILABLE``), the channel was closed under a pending call (``CANCELLED``), a response
that does not decode (``INTERNAL``), a request too large for the server
(``RESOURCE_EXHAUSTED``). Cancellation by the caller's own cancel scope is *not* an
``RpcError``: it stays a :exc:`trio.Cancelled` (and ``fail_after`` turns it into
:exc:`trio.TooSlowError`), as everywhere else in trio.
"""

from __future__ import annotations

from collections.abc import Mapping

from trio_micro._errors import TrioMicroError
from trio_micro._validate import check_str_mapping
from trio_micro.protocol import Status

__all__ = ["RpcError"]


class RpcError(TrioMicroError):
    """A call failed with a status code.

    Handlers raise it to fail a call with a chosen code; clients catch it.

    Args:
        code: The :class:`~trio_micro.rpc.Status` (anything but ``OK``).
        message: For people; any Unicode text.
        details: Structured information as string pairs, e.g. ``{"field": "$.user_id"}``.

    Raises:
        TypeError: ``code`` is not a ``Status``, ``message`` not a ``str``, or ``details``
            not a mapping of strings.
        ValueError: ``code`` is ``Status.OK``.
    """

    def __init__(
        self, code: Status, message: str = "", details: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(code, Status):
            raise TypeError(f"code must be an rpc.Status, got {code!r}")
        if code is Status.OK:
            raise ValueError(f"an RpcError can't have code {code!r}")
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, got {message!r}")
        checked = check_str_mapping("details", details)
        super().__init__(code, message, checked)
        self.code = code
        self.message = message
        self.details = checked

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name

    def __repr__(self) -> str:
        details = f", details={self.details!r}" if self.details else ""
        return f"RpcError({self.code.name}, {self.message!r}{details})"
