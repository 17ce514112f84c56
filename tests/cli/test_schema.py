"""``trio-micro schema``: OpenAPI and JSON Schema documents from reflection."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from trio_micro import gateway, rpc

from .test_call import cli

pytestmark = pytest.mark.usefixtures("quiet_logging")


async def schema(target: str, fmt: str, capsys: pytest.CaptureFixture[str]) -> Any:
    assert await cli("schema", target, "--format", fmt) == 0
    return json.loads(capsys.readouterr().out)


def resolve(document: Any, ref: str) -> Any:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_openapi_has_a_post_per_method_with_resolvable_schemas(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = await schema(target, "openapi", capsys)
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/grpc.testing.TestService/get_user"]["post"]
    request = post["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(document, request["$ref"])["properties"] == {"user_id": {"type": "integer"}}
    stream = document["paths"]["/grpc.testing.TestService/streaming_output_call"]["post"]
    assert "application/connect+json" in stream["responses"]["200"]["content"]
    assert "/trio_micro.reflection/list_services" not in document["paths"]
    refs = json.dumps(document).count('"$ref": "#/$defs/')
    assert refs == 0  # every reference points into components


async def test_jsonschema_lists_every_method_with_its_kind(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = await schema(target, "jsonschema", capsys)
    methods = document["services"]["grpc.testing.TestService"]
    assert methods["get_user"]["kind"] == "unary"
    assert methods["streaming_output_call"]["kind"] == "server_stream"
    ref = methods["get_user"]["request"]["$ref"]
    assert resolve(document, ref)["required"] == ["user_id"]


def test_two_different_types_with_one_name_are_refused() -> None:
    def method(name: str, fields: dict[str, Any]) -> rpc.MethodDescription:
        schema = {"$ref": "#/$defs/Req", "$defs": {"Req": {"type": "object", "properties": fields}}}
        return rpc.MethodDescription(name, "unary", False, schema, schema)

    listed = rpc.ListServicesResponse(
        [
            rpc.ServiceDescription("a", [method("m", {"x": {"type": "integer"}})]),
            rpc.ServiceDescription("b", [method("m", {"y": {"type": "string"}})]),
        ]
    )
    with pytest.raises(ValueError, match="'Req'"):
        gateway.json_schema_document(listed)


def test_a_struct_used_twice_is_defined_once() -> None:
    class Req(msgspec.Struct):
        x: int

    schema = msgspec.json.schema(Req)
    methods = [rpc.MethodDescription(n, "unary", False, schema, schema) for n in ("m", "n")]
    document = gateway.openapi_document(
        rpc.ListServicesResponse([rpc.ServiceDescription("s", methods)]), title="t"
    )
    assert set(document["components"]["schemas"]) == {"Req", "ConnectError"}


async def test_schema_of_an_unreachable_target_is_unavailable() -> None:
    assert await cli("schema", "127.0.0.1:1", "--timeout", "5") == 78
