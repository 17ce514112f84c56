"""EtcdRegistry against a real etcd: what it stores, leases, outages, compaction.

etcd's TTLs run on real time in the etcd process, so these tests use real time (no
MockClock), etcd's minimum TTL (2 s), and bounded waits for conditions.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from structlog.testing import capture_logs

from trio_micro import rpc
from trio_micro.registry import (
    Endpoint,
    EtcdRegistry,
    RegistryBackendError,
    RegistryUnavailableError,
    open_etcd_registry,
)

from ._etcd_server import ETCDCTL, EtcdServer, EtcdTls, free_port

A = "10.0.0.1:50051"
B = "10.0.0.2:50051"
C = "10.0.0.3:50051"
TTL = 2.0
WAIT = 15.0


def addresses(endpoints: list[Endpoint]) -> list[str]:
    return [endpoint.address for endpoint in endpoints]


async def etcdctl(server: EtcdServer, *args: str) -> str:
    if ETCDCTL is None:
        pytest.fail("etcdctl is not installed (apt-get install etcd-client)")
    result = await trio.run_process(
        [ETCDCTL, f"--endpoints={server.url}", *args],
        capture_stdout=True,
        capture_stderr=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    return result.stdout.decode()


async def etcdctl_json(server: EtcdServer, *args: str) -> dict[str, object]:
    answer: dict[str, object] = json.loads(await etcdctl(server, *args, "-w", "json"))
    return answer


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float = WAIT) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not await condition():  # noqa: ASYNC110 - etcd cannot set a trio.Event
            await trio.sleep(0.05)


async def resolves_to(registry: EtcdRegistry, service: str, expected: list[str]) -> bool:
    try:
        return addresses(await registry.resolve(service)) == expected
    except RegistryUnavailableError:
        return False


async def next_set(updates: AsyncGenerator[list[Endpoint], None]) -> list[str]:
    with trio.fail_after(WAIT):
        return addresses(await anext(updates))


async def test_etcdctl_sees_the_keys_values_and_leases_we_wrote(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    async with (
        open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry,
        registry.register("users", A, ttl=5, metadata={"zone": "a"}) as first,
        registry.register("users", "[::1]:8080", ttl=5),
    ):
        listing = await etcdctl_json(etcd_server, "get", "--prefix", f"{key_prefix}/")
        kvs = listing["kvs"]
        assert isinstance(kvs, list)
        stored = {
            base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
            for kv in kvs
        }
        assert stored == {
            f"{key_prefix}/users/{A}": {"address": A, "metadata": {"zone": "a"}},
            f"{key_prefix}/users/[::1]:8080": {"address": "[::1]:8080", "metadata": {}},
        }
        leases = {kv["lease"] for kv in kvs}
        assert len(leases) == 2, "one lease per registration"
        for lease in leases:
            ttl = await etcdctl_json(etcd_server, "lease", "timetolive", format(lease, "x"))
            assert ttl["granted-ttl"] == first.ttl == 5
            assert isinstance(ttl["ttl"], int)
            assert 0 < ttl["ttl"] <= 5
        # What etcdctl put by hand is read back the same way.
        await etcdctl(
            etcd_server,
            "put",
            f"{key_prefix}/users/10.0.0.9:1",
            json.dumps({"address": "10.0.0.9:1", "metadata": {"by": "etcdctl"}}),
        )
        assert Endpoint("10.0.0.9:1", {"by": "etcdctl"}) in await registry.resolve("users")
        await etcdctl(etcd_server, "del", f"{key_prefix}/users/10.0.0.9:1")
    assert await etcdctl(etcd_server, "get", "--prefix", f"{key_prefix}/") == ""


async def test_killed_registrant_process_disappears_within_its_ttl(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    script = Path(__file__).with_name("_registrant.py")
    command = [sys.executable, str(script), etcd_server.url, key_prefix, "users", A, str(TTL)]
    async with (
        open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry,
        aclosing(registry.watch("users")) as updates,
    ):
        assert await next_set(updates) == []
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            with trio.fail_after(WAIT):
                output = b""
                while b"registered\n" not in output:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "the registrant exited before registering"
                    output += chunk
            assert await next_set(updates) == [A]
            # Let it renew at least once, so what we measure is the TTL after a renewal.
            await trio.sleep(TTL / 2)
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
            killed_at = trio.current_time()
            assert await next_set(updates) == []
            # etcd checks for expired leases every 500 ms and revokes through raft.
            assert trio.current_time() - killed_at <= TTL + 2.0
        finally:
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
    assert await etcdctl(etcd_server, "get", "--prefix", f"{key_prefix}/") == ""


async def test_lease_revoked_behind_our_back_is_granted_again(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    key = f"{key_prefix}/users/{A}"
    async with open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry:
        with capture_logs() as logs:
            async with registry.register("users", A, ttl=TTL):
                [kv] = (await etcdctl_json(etcd_server, "get", key))["kvs"]  # type: ignore[misc]
                old_lease = kv["lease"]
                await etcdctl(etcd_server, "lease", "revoke", format(old_lease, "x"))
                assert await registry.resolve("users") == []
                # The next keepalive (within TTL/3) reports the lease gone.
                await wait_until(lambda: resolves_to(registry, "users", [A]))
                [kv] = (await etcdctl_json(etcd_server, "get", key))["kvs"]  # type: ignore[misc]
                assert kv["lease"] != old_lease
        lost = [entry for entry in logs if entry["event"] == "registry.lease.lost"]
        assert len(lost) == 1
        assert lost[0]["lease_id"] == old_lease
        assert lost[0]["service"] == "users"
        assert await registry.resolve("users") == []


async def test_an_address_taken_over_then_revoked_is_put_back_by_its_owner(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    # Another process registers the same address, then exits (revoking its lease, which
    # deletes the key): the owner's lease lives on, owning nothing, until its next
    # keepalive notices and puts the key back with its own lease.
    async with (
        open_etcd_registry(etcd_server.url, prefix=key_prefix) as owner,
        open_etcd_registry(etcd_server.url, prefix=key_prefix) as intruder,
    ):
        with capture_logs() as logs:
            async with owner.register("users", A, ttl=TTL):
                async with intruder.register("users", A, ttl=TTL):
                    pass
                assert await owner.resolve("users") == []
                await wait_until(lambda: resolves_to(owner, "users", [A]))
    lost = [entry for entry in logs if entry["event"] == "registry.lease.lost"]
    assert [entry.get("reason") for entry in lost] == ["key taken over"]


async def test_watch_lists_again_after_its_revision_was_compacted(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    async with (
        open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry,
        aclosing(registry.watch("users")) as updates,
    ):
        # The generator listed at revision R and waits at its first yield, before watching.
        assert await next_set(updates) == []
        async with registry.register("users", A, ttl=TTL):
            pass
        async with registry.register("users", B, ttl=TTL):
            status = await etcdctl_json(etcd_server, "get", "--prefix", f"{key_prefix}/")
            revision = status["header"]["revision"]  # type: ignore[index]
            await etcdctl(etcd_server, "compact", str(revision))
            with capture_logs() as logs:
                # Watching from R + 1 now fails (compacted): it must list again and see B.
                assert await next_set(updates) == [B]
    events = [(entry["event"], entry.get("reason")) for entry in logs]
    assert ("registry.watch.canceled", None) in events
    assert ("registry.watch.relist", "compacted") in events


async def test_unreachable_etcd_is_a_clear_error(key_prefix: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with open_etcd_registry(url, prefix=key_prefix) as registry:
        with pytest.raises(RegistryUnavailableError, match=f"can't reach etcd at '{url}'") as info:
            await registry.resolve("users")
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        with pytest.raises(RegistryUnavailableError, match="can't reach etcd"):
            async with registry.register("users", A, ttl=TTL):
                pytest.fail("registered without etcd")  # pragma: no cover
        # The failed attempt left nothing behind: the same registration may be tried again.
        with pytest.raises(RegistryUnavailableError):
            async with registry.register("users", A, ttl=TTL):
                pass  # pragma: no cover


async def test_something_that_is_not_etcd_is_a_clear_error(key_prefix: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404 page not found")

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        async with open_etcd_registry(
            "http://not-etcd:80", prefix=key_prefix, client=client
        ) as registry:
            with pytest.raises(RegistryBackendError, match="HTTP 404: '404 page not found'"):
                await registry.resolve("users")
        assert not client.is_closed, "the registry closed a client it did not create"


async def test_watch_retries_with_backoff_until_etcd_starts(
    own_etcd_server: EtcdServer, key_prefix: str
) -> None:
    first: list[list[Endpoint]] = []
    with capture_logs() as logs:
        async with (
            open_etcd_registry(own_etcd_server.url, prefix=key_prefix) as registry,
            aclosing(registry.watch("users")) as updates,
        ):

            async def take_first() -> None:
                first.append(await anext(updates))

            def retries() -> list[float]:
                return [e["retry_in"] for e in logs if e["event"] == "registry.watch.retry"]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(take_first)

                async def four_retries() -> bool:
                    await trio.lowlevel.checkpoint()
                    return len(retries()) >= 4

                await wait_until(four_retries)
                await trio.to_thread.run_sync(own_etcd_server.start)
            assert first == [[]]
    # Exponential backoff with full jitter: the n-th delay is within [0, bound].
    for n, delay in enumerate(retries()[:4]):
        assert 0 <= delay <= 0.1 * 2**n
    retry = next(e for e in logs if e["event"] == "registry.watch.retry")
    assert own_etcd_server.url in retry["url"]
    assert "ConnectError" in retry["error"]


async def test_registration_and_watch_are_restored_after_etcd_restarts_empty(
    own_etcd_server: EtcdServer, key_prefix: str
) -> None:
    own_etcd_server.start()
    with capture_logs() as logs:
        async with (
            open_etcd_registry(own_etcd_server.url, prefix=key_prefix) as registry,
            registry.register("users", A, ttl=TTL),
            aclosing(registry.watch("users")) as updates,
        ):
            assert await next_set(updates) == [A]
            async with registry.register("users", B, ttl=TTL):
                assert await next_set(updates) == [A, B]
            assert await next_set(updates) == [A]  # the watcher now reads the stream
            own_etcd_server.stop()
            await trio.to_thread.run_sync(lambda: own_etcd_server.start(fresh_data=True))
            # The keepalive finds its lease unknown to the new etcd and registers again.
            await wait_until(lambda: resolves_to(registry, "users", [A]))
            # The watcher's stream broke; it lists the new etcd and follows it.
            async with registry.register("users", C, ttl=TTL):
                with trio.fail_after(WAIT):
                    while await next_set(updates) != [A, C]:
                        pass
    events = [(entry["event"], entry.get("reason")) for entry in logs]
    assert ("registry.lease.lost", None) in events
    assert any(event == "registry.watch.relist" for event, _ in events)


async def test_watch_lists_again_when_etcd_came_back_without_its_data(
    own_etcd_server: EtcdServer, key_prefix: str
) -> None:
    def record(address: str) -> str:
        return json.dumps({"address": address, "metadata": {}})

    own_etcd_server.start()
    for address in (A, B, C):
        await etcdctl(own_etcd_server, "put", f"{key_prefix}/users/{address}", record(address))
    async with (
        open_etcd_registry(own_etcd_server.url, prefix=key_prefix) as registry,
        aclosing(registry.watch("users")) as updates,
    ):
        assert await next_set(updates) == [A, B, C]  # listed at revision 4
        own_etcd_server.stop()
        await trio.to_thread.run_sync(lambda: own_etcd_server.start(fresh_data=True))
        await etcdctl(own_etcd_server, "put", f"{key_prefix}/users/{B}", record(B))  # rev 2
        with capture_logs() as logs:
            # Watching from revision 5 of the new store would wait for events that are not
            # coming; the watch sees the store behind its list and lists again.
            assert await next_set(updates) == [B]
    reasons = [e.get("reason") for e in logs if e["event"] == "registry.watch.relist"]
    assert reasons == ["store_behind"]


async def test_keepalive_retries_with_backoff_while_etcd_is_down(
    own_etcd_server: EtcdServer, key_prefix: str
) -> None:
    own_etcd_server.start()
    with capture_logs() as logs:
        async with (
            open_etcd_registry(own_etcd_server.url, prefix=key_prefix) as registry,
            registry.register("users", A, ttl=TTL) as registration,
        ):
            own_etcd_server.stop()

            def failures() -> list[float]:
                return [e["retry_in"] for e in logs if e["event"] == "registry.lease.renew_failed"]

            async def three_failures() -> bool:
                await trio.lowlevel.checkpoint()
                return len(failures()) >= 3

            await wait_until(three_failures)
            # Same data dir: etcd keeps the lease and refreshes its TTL on restart.
            await trio.to_thread.run_sync(own_etcd_server.start)
            await wait_until(lambda: resolves_to(registry, "users", [A]))
    interval = registration.ttl / 3
    delays = failures()[:3]
    # Exponential from 0.1 s with full jitter, never longer than the renewal interval.
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(0.1 * 2**n, interval)
    assert "can't reach etcd" in next(
        e["error"] for e in logs if e["event"] == "registry.lease.renew_failed"
    )


async def test_exit_while_etcd_is_down_logs_and_returns(
    own_etcd_server: EtcdServer, key_prefix: str
) -> None:
    own_etcd_server.start()
    with capture_logs() as logs:
        async with open_etcd_registry(own_etcd_server.url, prefix=key_prefix) as registry:
            with trio.fail_after(WAIT):
                async with registry.register("users", A, ttl=TTL):
                    own_etcd_server.stop()
    failed = [entry for entry in logs if entry["event"] == "registry.deregister.failed"]
    assert len(failed) == 1
    assert "registry.endpoint.deregistered" not in [entry["event"] for entry in logs]
    assert "can't reach etcd" in failed[0]["error"]


async def test_granted_ttl_is_whole_seconds_and_at_least_etcds_minimum(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    async with open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry:
        async with registry.register("users", A, ttl=0.2) as short:
            assert short.ttl == 2
        async with registry.register("users", A, ttl=3.5) as odd:
            assert odd.ttl == math.ceil(3.5)


async def test_malformed_entries_in_etcd_are_skipped_and_logged(
    etcd_server: EtcdServer, key_prefix: str
) -> None:
    await etcdctl(etcd_server, "put", f"{key_prefix}/users/not-an-address", "{}")
    await etcdctl(etcd_server, "put", f"{key_prefix}/users/10.0.0.3:1", "not json")
    try:
        async with (
            open_etcd_registry(etcd_server.url, prefix=key_prefix) as registry,
            registry.register("users", A, ttl=TTL),
        ):
            with capture_logs() as logs:
                assert addresses(await registry.resolve("users")) == [A]
            malformed = [e["key"] for e in logs if e["event"] == "registry.endpoint.malformed"]
            assert sorted(malformed) == [
                f"{key_prefix}/users/10.0.0.3:1",
                f"{key_prefix}/users/not-an-address",
            ]
    finally:
        await etcdctl(etcd_server, "del", "--prefix", f"{key_prefix}/")


async def test_closed_registry_refuses_calls(etcd_server: EtcdServer, key_prefix: str) -> None:
    registry = EtcdRegistry(etcd_server.url, prefix=key_prefix)
    await registry.aclose()
    await registry.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError, match="is closed"):
        await registry.resolve("users")
    with pytest.raises(trio.ClosedResourceError):
        async with registry.register("users", A):
            pass  # pragma: no cover
    with pytest.raises(trio.ClosedResourceError):
        async with aclosing(registry.watch("users")) as updates:
            await anext(updates)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"url": "127.0.0.1:2379"}, ValueError, "url must look like"),
        ({"url": "ftp://127.0.0.1"}, ValueError, "url must look like"),
        ({"url": 2379}, TypeError, "url must be a str"),
        ({"prefix": ""}, ValueError, "prefix must be non-empty"),
        ({"prefix": "/a/"}, ValueError, "not end in '/'"),
        ({"prefix": None}, TypeError, "prefix must be a str"),
        ({"client": object()}, TypeError, "client must be an httpx.AsyncClient"),
    ],
)
def test_bad_constructor_arguments_are_refused(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        EtcdRegistry(**kwargs)  # type: ignore[arg-type]


async def test_etcd_over_https_with_client_certificates(tmp_path: Path, key_prefix: str) -> None:
    ca = trustme.CA()
    files = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key", "ccert", "ckey")}
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("registrant.internal")
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    client.cert_chain_pems[0].write_to_path(files["ccert"])
    client.private_key_pem.write_to_path(files["ckey"])
    tls = EtcdTls(files["ca"], files["cert"], files["key"], files["ccert"], files["ckey"])
    etcd = EtcdServer(tmp_path, tls=tls)
    try:
        await trio.to_thread.run_sync(etcd.start)
        context = rpc.client_ssl_context(
            ca=files["ca"], certfile=files["ccert"], keyfile=files["ckey"]
        )
        with trio.fail_after(20):
            async with (
                open_etcd_registry(etcd.url, prefix=key_prefix, ssl_context=context) as registry,
                registry.register("users", "127.0.0.1:1"),
            ):
                assert [e.address for e in await registry.resolve("users")] == ["127.0.0.1:1"]
    finally:
        etcd.stop()


def test_ssl_context_needs_an_https_url() -> None:
    with pytest.raises(ValueError, match="needs an https:// url"):
        EtcdRegistry("http://127.0.0.1:2379", ssl_context=rpc.client_ssl_context())
