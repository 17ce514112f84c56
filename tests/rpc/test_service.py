"""Service definitions are checked when the class statement runs."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import msgspec
import pytest

from trio_micro import rpc

from .services import Empty, GetUserRequest, TestService, User


def test_methods_are_read_from_the_annotations() -> None:
    info = TestService.__rpc_methods__["get_user"]
    assert info.wire_name == "grpc.testing.TestService/get_user"
    assert info.kind == "unary"
    assert info.idempotent
    assert info.request_type is GetUserRequest
    assert info.response_type is User
    stream = TestService.__rpc_methods__["streaming_output_call"]
    assert stream.kind == "server_stream"
    assert not stream.idempotent
    assert "streaming_output_call" in repr(stream)


def test_decorators_return_the_function_unchanged() -> None:
    async def method(self: object, req: Empty) -> Empty:
        return req  # pragma: no cover

    assert rpc.unary(method) is method
    assert rpc.unary(idempotent=True)(method) is method


def test_service_name_defaults_to_the_class_name() -> None:
    class Plain(rpc.Service):
        pass

    assert Plain.__rpc_name__ == "Plain"
    assert Plain.__rpc_methods__ == {}


def test_subclass_inherits_and_overrides_methods() -> None:
    class Base(rpc.Service, name="base"):
        @rpc.unary
        async def a(self, req: Empty) -> Empty:
            return req  # pragma: no cover

        @rpc.unary
        async def b(self, req: Empty) -> Empty:
            return req  # pragma: no cover

    class Child(Base, name="child"):
        async def b(self, req: Empty) -> Empty:  # no longer an RPC method
            return req  # pragma: no cover

    assert list(Child.__rpc_methods__) == ["a"]
    assert Child.__rpc_methods__["a"].wire_name == "child/a"


def test_non_async_unary_method_is_rejected() -> None:
    with pytest.raises(TypeError, match="async def"):

        class Bad(rpc.Service):
            @rpc.unary
            def get(self, req: Empty) -> Empty:
                return req  # pragma: no cover


def test_generator_marked_unary_is_rejected() -> None:
    with pytest.raises(TypeError, match="server_stream"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req: Empty) -> AsyncIterator[Empty]:
                yield req  # pragma: no cover


def test_stream_method_that_is_not_an_async_generator_is_rejected() -> None:
    with pytest.raises(TypeError, match="async generator"):

        class Bad(rpc.Service):
            @rpc.server_stream
            async def items(self, req: Empty) -> AsyncIterator[Empty]:  # type: ignore[misc]
                return iter([])  # type: ignore[return-value]  # pragma: no cover


def test_missing_request_annotation_is_rejected() -> None:
    with pytest.raises(TypeError, match="parameter 'req'"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req) -> Empty:  # type: ignore[no-untyped-def]
                return Empty()  # pragma: no cover


def test_request_that_is_not_a_struct_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"msgspec\.Struct"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req: int) -> Empty:
                return Empty()  # pragma: no cover


def test_missing_return_annotation_is_rejected() -> None:
    with pytest.raises(TypeError, match="return annotation"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req: Empty):  # type: ignore[no-untyped-def]
                return Empty()  # pragma: no cover


def test_stream_return_must_be_an_async_iterator_of_structs() -> None:
    with pytest.raises(TypeError, match=r"AsyncIterator\[T\]"):

        class Bad(rpc.Service):
            @rpc.server_stream
            async def items(self, req: Empty) -> Empty:  # type: ignore[misc]
                yield req  # pragma: no cover

    with pytest.raises(TypeError, match="item type"):

        class Bad2(rpc.Service):
            @rpc.server_stream
            async def items(self, req: Empty) -> AsyncGenerator[int, None]:
                yield 1  # pragma: no cover


def test_wrong_arity_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"exactly \(self, request\)"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req: Empty, extra: Empty) -> Empty:
                return req  # pragma: no cover


def test_unresolvable_annotation_is_rejected() -> None:
    with pytest.raises(TypeError, match="can't resolve"):

        class Bad(rpc.Service):
            @rpc.unary
            async def get(self, req: NoSuchType) -> Empty:  # type: ignore[name-defined]  # noqa: F821
                return req  # pragma: no cover


@pytest.mark.parametrize("name", ["", "a/b", "has space", 3])
def test_bad_service_names_are_rejected(name: object) -> None:
    with pytest.raises(TypeError, match="service name"):

        class Bad(rpc.Service, name=name):  # type: ignore[arg-type]
            pass


def test_idempotent_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="idempotent"):
        rpc.unary(idempotent="yes")  # type: ignore[call-overload]


class Extra(msgspec.Struct):
    value: int


def test_rpc_error_str_repr_and_checks() -> None:
    error = rpc.RpcError(rpc.Status.NOT_FOUND, "no user 7", {"user_id": "7"})
    assert str(error) == "NOT_FOUND: no user 7"
    assert repr(error) == "RpcError(NOT_FOUND, 'no user 7', details={'user_id': '7'})"
    assert str(rpc.RpcError(rpc.Status.ABORTED)) == "ABORTED"
    assert isinstance(error, __import__("trio_micro").TrioMicroError)
    with pytest.raises(ValueError, match="OK"):
        rpc.RpcError(rpc.Status.OK)
    with pytest.raises(TypeError, match="Status"):
        rpc.RpcError(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        rpc.RpcError(rpc.Status.INTERNAL, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="details"):
        rpc.RpcError(rpc.Status.INTERNAL, "", {"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="details"):
        rpc.RpcError(rpc.Status.INTERNAL, "", [("a", "b")])  # type: ignore[arg-type]


def test_status_is_the_protocol_status() -> None:
    from trio_micro.protocol import Status

    assert rpc.Status is Status
    assert len(rpc.Status) == 17


async def test_serve_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="Service instances"):
        await rpc.serve([TestService], port=0)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="iterable"):
        await rpc.serve(TestService(), port=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two services"):
        await rpc.serve([TestService(), TestService()], port=0)
    with pytest.raises(ValueError, match="max_concurrent_streams"):
        await rpc.serve([TestService()], max_concurrent_streams=0)
    with pytest.raises(TypeError, match="interceptors"):
        await rpc.serve([TestService()], interceptors=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="grace_period"):
        await rpc.serve([TestService()], grace_period=-1)
    with pytest.raises(TypeError, match="ssl_context"):
        await rpc.serve([TestService()], ssl_context=object())  # type: ignore[arg-type]
