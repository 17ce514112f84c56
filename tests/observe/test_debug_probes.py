"""/healthz and /readyz on the debug endpoint: liveness, and readiness from a callable."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from trio_micro import observe


async def test_healthz_is_ok_while_the_loop_answers() -> None:
    async with (
        observe.open_debug_server(registry=CollectorRegistry(), ready=lambda: False) as debug,
        httpx.AsyncClient(base_url=debug.url) as http,
    ):
        response = await http.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


async def test_readyz_follows_the_ready_callable() -> None:
    state = {"ready": True}
    async with (
        observe.open_debug_server(
            registry=CollectorRegistry(), ready=lambda: state["ready"]
        ) as debug,
        httpx.AsyncClient(base_url=debug.url) as http,
    ):
        ready = await http.get("/readyz")
        state["ready"] = False
        not_ready = await http.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert (not_ready.status_code, not_ready.text) == (503, "not ready\n")


async def test_readyz_without_a_callable_is_ready() -> None:
    async with (
        observe.open_debug_server(registry=CollectorRegistry()) as debug,
        httpx.AsyncClient(base_url=debug.url) as http,
    ):
        response = await http.get("/readyz")
    assert response.status_code == 200


async def test_ready_must_be_callable() -> None:
    with pytest.raises(TypeError, match="ready"):
        async with observe.open_debug_server(ready=True):  # type: ignore[arg-type]
            pass  # pragma: no cover
