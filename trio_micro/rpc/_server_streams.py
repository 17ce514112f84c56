"""Answering client-stream and bidi-stream calls: the innermost step of their interceptor chain.

Like :meth:`~._server_calls.CallRunner._answer_unary` and ``_answer_stream``, each function
runs the handler inside the interceptors and raises :class:`~._errors.RpcError` for a
failure; :meth:`~._server_calls.CallRunner.run` turns the outcome into the terminal frame (a
client-stream's RESPONSE is queued here, a bidi-stream's END by ``run``). The handler gets a
:class:`~._streaming.RequestStream` (and, for bidi, a :class:`~._streaming.ResponseSender`);
the REQUEST's own payload is empty and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._context import ServerCall
from ._service import MethodInfo
from ._streaming import RequestStream, ResponseSender

if TYPE_CHECKING:
    from ._server_calls import CallRunner, Handler

__all__: list[str] = []


def _requests(runner: CallRunner, call: ServerCall, info: MethodInfo) -> RequestStream[Any]:
    return RequestStream(call, runner, info.decode_request)


async def _run_handler(
    runner: CallRunner, call: ServerCall, handler: Callable[..., Any], *args: object
) -> Any:
    try:
        return await handler(*args)
    except BaseException as exc:
        error = runner._handler_failed(call, exc, "handler raised")
        if error is None:
            raise
        raise error from None


async def answer_client_stream(
    runner: CallRunner, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
) -> None:
    """Run a client-stream handler on the call's requests; queue its RESPONSE."""
    result = await _run_handler(runner, call, handler, _requests(runner, call, info))
    await runner._respond(call, info, result)


async def answer_bidi_stream(
    runner: CallRunner, call: ServerCall, info: MethodInfo, handler: Handler, payload: bytes
) -> None:
    """Run a bidi-stream handler; its responses are queued as it sends them."""
    responses = ResponseSender(call, runner, info.response_type)
    await _run_handler(runner, call, handler, _requests(runner, call, info), responses)
