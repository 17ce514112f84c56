"""The root of trio_micro's own exception tree.

::

    TrioMicroError
    (later: ProtocolError, TransportError, RpcError, RegistryError)

Resource-state errors reuse trio's exceptions (``trio.ClosedResourceError``,
``trio.BrokenResourceError``, ``trio.WouldBlock``, ...), and bad arguments
raise ``TypeError`` / ``ValueError`` with the offending value shown.
"""

from __future__ import annotations

__all__ = ["TrioMicroError"]


class TrioMicroError(Exception):
    """Base class of every exception that trio_micro defines."""
