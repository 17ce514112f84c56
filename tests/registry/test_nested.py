"""Registry answers and requests nested deeper than the recursion limit (issue #15, defect 3).

No etcd is needed: the etcd decode sites are called directly.
"""

from __future__ import annotations

import base64

import msgspec
import pytest
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    RegistryBackendError,
    open_registry_client,
    open_registry_server,
)
from trio_micro.registry._etcd import EtcdRegistry, _endpoint_from, _error_from_response, _KeyValue

from ..nested import NESTED, NESTED_JSON

_DEEP = ('{"metadata": {}, "x": ' + NESTED_JSON + "}").encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_nested_endpoint_value_is_skipped_and_logged() -> None:
    kv = _KeyValue(key=_b64(b"/p/users/10.0.0.3:1"), value=_b64(_DEEP))
    with capture_logs() as logs:
        assert _endpoint_from("users", b"/p/users/", kv) is None
    assert [e["event"] for e in logs] == ["registry.endpoint.malformed"]


def test_a_nested_error_body_is_shown_raw() -> None:
    error = _error_from_response("http://etcd/v3/kv/range", 500, _DEEP)
    assert "HTTP 500" in str(error)


async def test_a_nested_answer_is_a_backend_error() -> None:
    registry = EtcdRegistry("http://127.0.0.1:1")
    try:
        with pytest.raises(RegistryBackendError, match="invalid JSON"):
            registry._decode("/v3/kv/range", _DEEP, dict)
    finally:
        await registry.aclose()


class _DeepServiceRequest(msgspec.Struct):
    service: str
    x: msgspec.Raw


class _RawRegistry(rpc.Service, name="trio_micro.registry"):
    """The registry service as a hostile client sees it: a request with a nested field."""

    @rpc.unary
    async def resolve(self, req: _DeepServiceRequest) -> _DeepServiceRequest:
        raise NotImplementedError


async def test_the_registry_server_answers_a_nested_request_with_invalid_argument() -> None:
    async with (
        open_registry_server(host="127.0.0.1", port=0) as server,
        rpc.open_channel(server.target) as channel,
        open_registry_client(server.target) as client,
    ):
        with pytest.raises(rpc.RpcError, match="nested too deeply") as info:
            await channel.stub(_RawRegistry).resolve(
                _DeepServiceRequest("users", msgspec.Raw(NESTED))
            )
        assert info.value.code is rpc.Status.INVALID_ARGUMENT
        assert list(await client.resolve("users")) == []
