"""``trio-micro serve --http-port`` and ``trio-micro gateway``: real processes, real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from examples.user_service.database import UserDatabase
from trio_micro.registry import open_registry_server

from .test_serve import running

JSON = {"content-type": "application/json"}


async def seeded(tmp_path: Path) -> Path:
    db = tmp_path / "users.db"
    async with UserDatabase(db) as database:
        await database.seed(5)
    return db


async def test_serve_http_port_answers_curl_style_json_posts(tmp_path: Path) -> None:
    db = await seeded(tmp_path)
    argv = ["serve", "examples.user_service:UserService", "--port", "0", "--http-port", "0"]
    async with running([*argv, "-o", f"db={db}"], tmp_path, prefix="serving ") as server:
        [url] = [r["url"] for r in server.records() if r["event"] == "serve.http_gateway"]
        async with httpx.AsyncClient(base_url=url) as http:
            ok = await http.post("/users/get_user", content=b'{"user_id": 1}', headers=JSON)
            missing = await http.post("/users/get_user", json={"user_id": 99})
        assert (ok.status_code, ok.json()["user_id"], ok.json()["source"]) == (200, 1, "database")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        # The same interceptors as RPC calls: the access log has the gateway's call.
        await server.wait_for_event("rpc.call.complete")
        assert await server.stop() == 143


async def test_gateway_command_serves_a_registry_target(tmp_path: Path) -> None:
    db = await seeded(tmp_path)
    async with open_registry_server(port=0) as registry:
        target = f"registry://{registry.target}"
        serve = ["serve", "examples.user_service:UserService", "--port", "0", "--registry", target]
        async with running([*serve, "-o", f"db={db}"], tmp_path, prefix="serving "):
            argv = ["gateway", f"{target}/users", "--port", "0"]
            async with running(argv, tmp_path, prefix="gateway for ") as gateway:
                url = gateway.line.rpartition(" on ")[2]
                async with httpx.AsyncClient(base_url=url) as http:
                    reply = await http.post("/users/get_user", json={"user_id": 2})
                assert (reply.status_code, reply.json()["user_id"]) == (200, 2)
                assert await gateway.stop() == 143


def test_gateway_command_rejects_a_bad_target() -> None:
    from trio_micro.cli import main

    assert main(["gateway", "nowhere"]) == 2
