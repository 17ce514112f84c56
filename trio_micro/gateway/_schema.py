"""Schemas out: what reflection knows, as one JSON Schema document or an OpenAPI 3.1 one.

Reflection (``rpc.ListServicesResponse``) gives each method's request and response as the
JSON Schema ``msgspec.json.schema`` makes (a ``$ref`` into ``$defs``). Both documents merge
those ``$defs`` into one table, so a type used by several methods is defined once; the
OpenAPI document describes the gateway's HTTP API (``POST /<service>/<method>``, Connect's
content types and error JSON), so any OpenAPI generator makes a client for it. Pure
functions: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from trio_micro import rpc

from ._connect import CONNECT_CODES

__all__ = ["json_schema_document", "openapi_document"]

_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_SKIPPED: Final = frozenset({"trio_micro.reflection"})


def _rewrite(value: Any, prefix: str) -> Any:
    """``value`` with every ``#/$defs/`` reference pointing under ``prefix`` instead."""
    if isinstance(value, dict):
        return {
            key: (
                prefix + item.removeprefix("#/$defs/")
                if key == "$ref" and isinstance(item, str)
                else _rewrite(item, prefix)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, prefix) for item in value]
    return value


def _collect(
    listed: rpc.ListServicesResponse, prefix: str
) -> tuple[dict[str, Any], list[tuple[str, rpc.MethodDescription, Any, Any]]]:
    """The merged definitions, and each method with its request and response schemas.

    Raises:
        ValueError: Two different types share a name (the documents could not tell them
            apart); the message names it.
    """
    defs: dict[str, Any] = {}
    methods = []
    for service in listed.services:
        if service.name in _SKIPPED:
            continue
        for method in service.methods:
            schemas = []
            for schema in (method.request_schema, method.response_schema):
                for name, definition in schema.get("$defs", {}).items():
                    rewritten = _rewrite(definition, prefix)
                    if defs.setdefault(name, rewritten) != rewritten:
                        raise ValueError(
                            f"two different types are named {name!r} "
                            f"(one in {service.name}/{method.name}); rename one"
                        )
                schemas.append(_rewrite({k: v for k, v in schema.items() if k != "$defs"}, prefix))
            methods.append((service.name, method, schemas[0], schemas[1]))
    return defs, methods


def json_schema_document(listed: rpc.ListServicesResponse) -> dict[str, Any]:
    """One JSON Schema (2020-12) document: ``$defs`` of every type, and ``services``:
    service -> method -> ``{"kind", "idempotent", "request", "response"}`` (the reflection
    service itself is left out)."""
    defs, methods = _collect(listed, "#/$defs/")
    services: dict[str, dict[str, Any]] = {}
    for service, method, request, response in methods:
        services.setdefault(service, {})[method.name] = {
            "kind": method.kind,
            "idempotent": method.idempotent,
            "request": request,
            "response": response,
        }
    return {"$schema": _DIALECT, "$defs": defs, "services": services}


def openapi_document(listed: rpc.ListServicesResponse, *, title: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the gateway's HTTP API for these services.

    Unary methods answer ``application/json``; server-streams take and answer Connect's
    ``application/connect+json`` envelopes (described, since OpenAPI can't express the
    framing); every operation's ``default`` response is Connect's error JSON.
    """
    defs, methods = _collect(listed, "#/components/schemas/")
    defs["ConnectError"] = {
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {"enum": sorted(code for code, _ in CONNECT_CODES.values())},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }
    error = {
        "description": "a Connect error (HTTP status by code)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConnectError"}}},
    }
    paths: dict[str, Any] = {}
    for service, method, request, response in methods:
        if method.kind not in ("unary", "server_stream"):
            continue  # no gateway route for client- and bidi-streams
        unary = method.kind == "unary"
        media = "application/json" if unary else "application/connect+json"
        note = "" if unary else " (Connect envelopes: one request, then items and end-of-stream)"
        paths[f"/{service}/{method.name}"] = {
            "post": {
                "operationId": f"{service}.{method.name}",
                "summary": f"{method.kind} call of {service}/{method.name}{note}",
                "x-idempotent": method.idempotent,
                "parameters": [
                    {
                        "name": "Connect-Timeout-Ms",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    }
                ],
                "requestBody": {"required": True, "content": {media: {"schema": request}}},
                "responses": {
                    "200": {
                        "description": "the response",
                        "content": {media: {"schema": response}},
                    },
                    "default": error,
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": _DIALECT,
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": defs},
    }
