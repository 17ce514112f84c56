"""Opening a client connection: TCP, TLS, the HELLO exchange, and an error that says why not.

:func:`connect` does the handshake under one ``handshake_timeout`` and hands the stream and
the sans-io :class:`~trio_micro.protocol.Connection` to a new
:class:`~._client.ClientConnection`, which the caller (:mod:`._endpoints`' connection
slots) then runs. Every failure becomes one ``UNAVAILABLE`` :class:`RpcError` naming the
address and the reason, with a guess at a TLS mismatch when the TCP connection was made
(:func:`_tls_hint`: a plain client at a TLS server, a TLS client at a plain server, a
server that wants a client certificate).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import trio

from trio_micro.protocol import (
    Connection,
    ConnectionClosed,
    Event,
    GoAway,
    Hello,
    RemoteProtocolError,
    Role,
    Settings,
    Status,
)

from ._client import ClientConnection
from ._errors import RpcError
from ._transport import RECEIVE_SIZE, Endpoint, peer_name

__all__: list[str] = []


async def connect(
    endpoint: Endpoint,
    *,
    settings: Settings,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    handshake_timeout: float,
    keepalive_interval: float,
    keepalive_timeout: float,
    compression_threshold: int,
    on_unusable: Callable[[ClientConnection], None],
) -> ClientConnection:
    """Open a connection and complete the handshake (TLS, then HELLO both ways).

    Raises:
        RpcError: ``UNAVAILABLE`` naming the address: refused, unreachable, timed out, TLS
            failure, or the server broke the protocol or said GOAWAY at once.
    """
    where = str(endpoint)
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(handshake_timeout):
            stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            if ssl_context is not None:
                stream = trio.SSLStream(
                    stream, ssl_context, server_hostname=server_hostname or endpoint.host
                )
                await stream.do_handshake()
            proto = Connection(
                Role.CLIENT, settings=settings, compression_threshold=compression_threshold
            )
            await stream.send_all(proto.initiate())
            events: list[Event] = []
            while not proto.handshake_complete:
                data = await stream.receive_some(RECEIVE_SIZE)
                events = proto.receive_data(data)
                if not proto.handshake_complete and any(
                    isinstance(e, ConnectionClosed | GoAway) for e in events
                ):
                    raise trio.BrokenResourceError("closed during the handshake")
            rest = events[next(i for i, e in enumerate(events) if isinstance(e, Hello)) + 1 :]
    except BaseException as exc:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
        if isinstance(exc, trio.TooSlowError):
            raise RpcError(
                Status.UNAVAILABLE, f"can't connect to {where}: handshake timed out"
            ) from exc
        if isinstance(exc, OSError | trio.BrokenResourceError | RemoteProtocolError):
            # trio's BrokenResourceError carries no message: the reason is its cause, e.g.
            # the ssl.SSLCertVerificationError of a server the client doesn't trust.
            cause = exc.__cause__
            if isinstance(exc, RemoteProtocolError):
                reason = exc.message
            elif isinstance(cause, ssl.SSLError):
                reason = f"TLS failed: {cause}"
            else:
                reason = str(exc) or repr(cause or exc)
            reason += _tls_hint(cause, tls=ssl_context is not None, connected=stream is not None)
            raise RpcError(Status.UNAVAILABLE, f"can't connect to {where}: {reason}") from exc
        raise
    return ClientConnection(
        stream,
        proto,
        endpoint,
        keepalive_interval=keepalive_interval,
        keepalive_timeout=keepalive_timeout,
        on_unusable=on_unusable,
        peer=peer_name(stream) if ssl_context is None else where,
        pending_events=rest,
    )


def _tls_hint(cause: BaseException | None, *, tls: bool, connected: bool) -> str:
    """A guess at a TLS mismatch behind a failed handshake, for the error message."""
    if not connected:
        return ""
    if not tls:
        return " (does the server require TLS?)"
    if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
        return " (is the server serving TLS?)"
    if isinstance(cause, ssl.SSLEOFError) or (
        isinstance(cause, ssl.SSLError) and "CERTIFICATE_REQUIRED" in (cause.reason or "")
    ):
        return " (the server may require a client certificate, or refuse this one)"
    return ""
