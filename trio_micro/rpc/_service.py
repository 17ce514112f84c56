"""Service definitions: a class of ``async def`` methods, typed with ``msgspec.Struct``.

::

    class UserService(rpc.Service, name="users"):
        @rpc.unary
        async def get_user(self, req: GetUserRequest) -> User: ...

        @rpc.server_stream
        async def list_users(self, req: ListUsersRequest) -> AsyncIterator[User]:
            yield User(...)

The decorators only mark a function (and return it unchanged, so type checkers keep its
exact signature -- which is what makes :meth:`Channel.stub <trio_micro.rpc.Channel.stub>`
typed). :meth:`Service.__init_subclass__` does the real work when the class statement runs:
it reads the request and response types from the annotations, checks the shape of each
method and raises :exc:`TypeError` right there, so a malformed service never reaches a
server. Each method becomes a :class:`MethodInfo` with prebuilt msgpack decoders, shared by
servers and clients.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar, cast, final, overload

import msgspec

from trio_micro.protocol import CallType, Status

from ._errors import RpcError

if TYPE_CHECKING:
    from ._streaming import RequestStream, ResponseSender, StreamingMethod

__all__ = ["MethodInfo", "Service", "bidi_stream", "client_stream", "server_stream", "unary"]

F = TypeVar("F", bound=Callable[..., Any])
ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")

MethodKind = Literal["unary", "server_stream", "client_stream", "bidi_stream"]

_MARK: Final = "__trio_micro_rpc__"
_STREAM_ORIGINS: Final = frozenset(
    {
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
    }
)
# msgspec's messages end with " - at `$.path`"; the path goes into ERROR details too.
_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_CALL_TYPES: Final[dict[str, CallType]] = {
    "unary": CallType.UNARY,
    "server_stream": CallType.SERVER_STREAM,
    "client_stream": CallType.CLIENT_STREAM,
    "bidi_stream": CallType.BIDI_STREAM,
}


@final
class _Mark:
    __slots__ = ("idempotent", "kind")

    def __init__(self, kind: MethodKind, idempotent: bool) -> None:
        self.kind = kind
        self.idempotent = idempotent


@overload
def unary(fn: F, /) -> F: ...
@overload
def unary(*, idempotent: bool = False) -> Callable[[F], F]: ...
def unary(fn: F | None = None, /, *, idempotent: bool = False) -> F | Callable[[F], F]:
    """Mark ``async def method(self, req: Req) -> Resp`` as a unary RPC method.

    Use bare (``@rpc.unary``) or with options (``@rpc.unary(idempotent=True)``).

    Args:
        fn: The method; returned unchanged.
        idempotent: Calling it twice has the same effect as once, so clients may retry it
            (used by the retry policy of issue #4; shown by reflection).
    """
    if not isinstance(idempotent, bool):
        raise TypeError(f"idempotent must be a bool, got {idempotent!r}")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, _Mark("unary", idempotent))
        return fn

    return mark if fn is None else mark(fn)


def server_stream(fn: F, /) -> F:
    """Mark ``async def method(self, req: Req) -> AsyncIterator[Item]`` (an async generator)
    as a server-streaming RPC method; returned unchanged.

    The server pulls the generator only while the client has granted credit, so a slow
    consumer slows the generator down instead of filling a buffer.
    """
    setattr(fn, _MARK, _Mark("server_stream", False))
    return fn


def client_stream(
    fn: Callable[[Any, RequestStream[ReqT]], Awaitable[RespT]], /
) -> StreamingMethod[ReqT, RespT]:
    """Mark ``async def method(self, requests: rpc.RequestStream[Req]) -> Resp`` as a
    client-streaming RPC method: many requests in, one response out.

    ``requests`` is a :class:`RequestStream` (a ``trio.abc.ReceiveChannel``): ``async for``
    it, or ``await requests.receive()`` until ``trio.EndOfChannel`` (the client's
    half-close). The function is returned unchanged; only type checkers see the declared
    :class:`StreamingMethod`, whose client view (on a stub) is ``() -> rpc.StreamCall``.
    """
    setattr(fn, _MARK, _Mark("client_stream", False))
    return cast("StreamingMethod[ReqT, RespT]", fn)


def bidi_stream(
    fn: Callable[[Any, RequestStream[ReqT], ResponseSender[RespT]], Awaitable[None]], /
) -> StreamingMethod[ReqT, RespT]:
    """Mark ``async def method(self, requests: rpc.RequestStream[Req], responses:
    rpc.ResponseSender[Resp]) -> None`` as a bidirectional-streaming RPC method.

    The handler reads ``requests`` and sends on ``responses`` (a ``trio.abc.SendChannel``)
    in any order -- from a nursery of its own too; the call ends (END) when it returns.
    ``responses.send`` waits for the client's credit. Returned unchanged, typed as for
    :func:`client_stream`.
    """
    setattr(fn, _MARK, _Mark("bidi_stream", False))
    return cast("StreamingMethod[ReqT, RespT]", fn)


@final
class MethodInfo:
    """One method of a service, as the server and the client see it. Built by
    :class:`Service`; read-only.

    Attributes:
        service: The service's wire name.
        name: The method's name (the Python attribute name).
        wire_name: ``"<service>/<method>"``, the REQUEST frame's ``method``.
        kind: ``"unary"``, ``"server_stream"``, ``"client_stream"`` or ``"bidi_stream"``.
        call_type: The matching :class:`~trio_micro.protocol.CallType`.
        idempotent: As given to :func:`unary`.
        request_type: The request ``msgspec.Struct`` type (``object`` for the untyped
            calls of :meth:`Channel.call <trio_micro.rpc.Channel.call>`: :meth:`untyped`).
        response_type: The response type (the item type of a server-stream).
    """

    __slots__ = (
        "call_type",
        "decode_request",
        "decode_response",
        "idempotent",
        "kind",
        "name",
        "request_type",
        "response_type",
        "service",
        "wire_name",
    )

    def __init__(
        self,
        service: str,
        name: str,
        kind: MethodKind,
        idempotent: bool,
        request_type: type[Any],
        response_type: type[Any],
    ) -> None:
        self.service = service
        self.name = name
        self.wire_name = f"{service}/{name}"
        self.kind: MethodKind = kind
        self.call_type = _CALL_TYPES[kind]
        self.idempotent = idempotent
        self.request_type = request_type
        self.response_type = response_type
        self.decode_request: Callable[[bytes], Any] = msgspec.msgpack.Decoder(request_type).decode
        self.decode_response: Callable[[bytes], Any] = msgspec.msgpack.Decoder(response_type).decode

    @classmethod
    def untyped(cls, method: str, kind: MethodKind, idempotent: bool = False) -> MethodInfo:
        """The info of ``"<service>/<method>"`` called by name, with no service class: any
        request, any answer (both types ``object``, so answers decode to plain dicts,
        lists and scalars). What the untyped calls of :class:`Channel
        <trio_micro.rpc.Channel>` and :class:`trio_micro.aio.Channel` (``call``,
        ``call_stream``, ``stream_call``) are made with.

        Raises:
            TypeError: ``method`` is not a string, ``idempotent`` not a bool.
            ValueError: ``method`` is not ``"<service>/<method>"``, or an unknown ``kind``.
        """
        if not isinstance(method, str):
            raise TypeError(f"method must be a str like 'users/get_user', got {method!r}")
        service, sep, name = method.rpartition("/")
        if not sep or not service or not name:
            raise ValueError(f"method must look like '<service>/<method>', got {method!r}")
        if kind not in _CALL_TYPES:
            raise ValueError(f"kind must be one of {sorted(_CALL_TYPES)}, got {kind!r}")
        if not isinstance(idempotent, bool):
            raise TypeError(f"idempotent must be a bool, got {idempotent!r}")
        return cls(service, name, kind, idempotent, object, object)

    def __repr__(self) -> str:
        return (
            f"MethodInfo({self.wire_name!r}, {self.kind}, "
            f"{self.request_type.__name__} -> {self.response_type.__name__})"
        )


def invalid_argument(exc: Exception) -> RpcError:
    """The ``INVALID_ARGUMENT`` error for a payload that did not decode or validate.

    ``exc`` is one of :data:`protocol.DECODE_ERRORS <trio_micro.protocol.DECODE_ERRORS>`; a
    string that is not UTF-8 gets msgspec 0.23's message on every msgspec release, and a
    payload nested past the recursion limit says so.
    """
    if isinstance(exc, UnicodeDecodeError):
        return RpcError(Status.INVALID_ARGUMENT, "Invalid UTF-8 encoded string")
    if isinstance(exc, RecursionError):
        return RpcError(Status.INVALID_ARGUMENT, f"payload is nested too deeply ({exc})")
    message = str(exc)
    match = _PATH.search(message)
    details = {"field": match.group(1)} if match else {}
    return RpcError(Status.INVALID_ARGUMENT, message, details)


class Service:
    """Base class of RPC services.

    Subclass it with a wire name and decorate methods with :func:`unary` or
    :func:`server_stream`::

        class UserService(rpc.Service, name="users"): ...

    The name defaults to the class name. Subclasses of a service inherit its methods (and
    may override them). Instances are what servers serve, so ``__init__`` may take
    whatever the handlers need (a database, a channel to another service, ...).

    Raises:
        TypeError: At class definition: a marked method is not ``async def`` (unary) or
            not an async generator (server-stream); it does not take exactly one
            parameter besides ``self``; the request or response annotation is missing or
            not a ``msgspec.Struct`` type (a server-stream must return
            ``AsyncIterator[T]``); or the name is not a valid service name.
    """

    #: The service's wire name.
    __rpc_name__: ClassVar[str] = ""
    #: Method name -> :class:`MethodInfo`, in definition order.
    __rpc_methods__: ClassVar[Mapping[str, MethodInfo]] = {}

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            name = cls.__name__
        if not isinstance(name, str) or not _NAME.match(name):
            raise TypeError(
                f"{cls.__qualname__}: the service name must be a non-empty str of letters, "
                f"digits, '_', '.' and '-' (no '/'), got {name!r}"
            )
        cls.__rpc_name__ = name
        marked: dict[str, tuple[Callable[..., Any], _Mark]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                mark = getattr(value, _MARK, None)
                if isinstance(mark, _Mark):
                    marked[attr] = (value, mark)
                else:
                    marked.pop(attr, None)  # overridden by something unmarked
        cls.__rpc_methods__ = {
            attr: _method_info(cls, name, attr, fn, mark) for attr, (fn, mark) in marked.items()
        }


def _method_info(
    cls: type[Service], service: str, attr: str, fn: Callable[..., Any], mark: _Mark
) -> MethodInfo:
    where = f"{cls.__qualname__}.{attr}"
    if mark.kind in ("client_stream", "bidi_stream"):
        item_types = _streaming_types(where, fn, mark.kind)
        return MethodInfo(service, attr, mark.kind, False, *item_types)
    if mark.kind == "unary":
        if not inspect.iscoroutinefunction(fn):
            what = "an async generator" if inspect.isasyncgenfunction(fn) else "not async def"
            raise TypeError(
                f"{where}: @rpc.unary needs an 'async def' method that returns, got {what} "
                f"({fn!r}); use @rpc.server_stream for generators"
            )
    elif not inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{where}: @rpc.server_stream needs an async generator ('async def' with "
            f"'yield'), got {fn!r}"
        )
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) != 2 or any(p.kind not in positional for p in params):
        raise TypeError(
            f"{where}: an RPC method takes exactly (self, request), got {inspect.signature(fn)}"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"{where}: can't resolve the annotations ({exc!r})") from exc
    request_name = params[1].name
    request_type = hints.get(request_name)
    if not _is_struct(request_type):
        raise TypeError(
            f"{where}: parameter {request_name!r} must be annotated with a msgspec.Struct "
            f"type, got {request_type!r}"
        )
    returns = hints.get("return")
    if mark.kind == "unary":
        response_type = returns
        if not _is_struct(response_type):
            raise TypeError(
                f"{where}: the return annotation must be a msgspec.Struct type, got {returns!r}"
            )
    else:
        args = typing.get_args(returns)
        if typing.get_origin(returns) not in _STREAM_ORIGINS or not args:
            raise TypeError(
                f"{where}: a server-stream must be annotated '-> AsyncIterator[T]' with a "
                f"msgspec.Struct T, got {returns!r}"
            )
        response_type = args[0]
        if not _is_struct(response_type):
            raise TypeError(
                f"{where}: the item type T of AsyncIterator[T] must be a msgspec.Struct "
                f"type, got {response_type!r}"
            )
    assert isinstance(request_type, type)
    assert isinstance(response_type, type)
    return MethodInfo(service, attr, mark.kind, mark.idempotent, request_type, response_type)


def _streaming_types(
    where: str, fn: Callable[..., Any], kind: MethodKind
) -> tuple[type[Any], type[Any]]:
    """The (request, response) item types of a client- or bidi-stream method, checked."""
    # Imported here: _streaming imports trio, and a service of unary and server-stream
    # methods must be importable without it (the asyncio client, trio_micro.aio).
    from ._streaming import RequestStream, ResponseSender

    decorator = f"@rpc.{kind}"
    shape = (
        "(self, requests: rpc.RequestStream[Req]) -> Resp"
        if kind == "client_stream"
        else "(self, requests: rpc.RequestStream[Req], responses: rpc.ResponseSender[Resp])"
    )
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{where}: {decorator} needs an 'async def' method {shape}, got {fn!r}")
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wanted = 2 if kind == "client_stream" else 3
    if len(params) != wanted or any(p.kind not in positional for p in params):
        raise TypeError(f"{where}: {decorator} takes {shape}, got {inspect.signature(fn)}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"{where}: can't resolve the annotations ({exc!r})") from exc
    request_type = _item_type(where, hints.get(params[1].name), RequestStream, shape)
    if kind == "bidi_stream":
        return request_type, _item_type(where, hints.get(params[2].name), ResponseSender, shape)
    returns = hints.get("return")
    if not isinstance(returns, type) or not _is_struct(returns):
        raise TypeError(
            f"{where}: the return annotation must be a msgspec.Struct type, got {returns!r}"
        )
    return request_type, returns


def _item_type(where: str, hint: object, origin: type[Any], shape: str) -> type[Any]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not origin or len(args) != 1 or not _is_struct(args[0]):
        raise TypeError(
            f"{where}: expected {shape} with msgspec.Struct item types, got {hint!r} for "
            f"{origin.__name__}"
        )
    item: type[Any] = args[0]
    return item


def _is_struct(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, msgspec.Struct)
