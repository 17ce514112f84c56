"""FaultInjector's rules and their bad input; the opt-in of the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.rpc.services import Empty, TestService
from trio_micro import rpc, testing


@pytest.mark.parametrize("nth", [0, -1, True, 1.5])
def test_nth_must_be_a_positive_int(nth: object) -> None:
    with pytest.raises(ValueError, match="nth must be a positive int"):
        testing.FaultInjector().fail(rpc.Status.INTERNAL, nth=nth)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [-1, float("inf"), float("nan")])
def test_delay_must_be_finite_and_not_negative(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        testing.FaultInjector().delay(seconds)


def test_delay_must_be_a_number() -> None:
    with pytest.raises(TypeError, match="must be a number"):
        testing.FaultInjector().delay("1")  # type: ignore[arg-type]


def test_a_fault_cannot_be_ok() -> None:
    with pytest.raises(ValueError, match="other than OK"):
        testing.FaultInjector().fail(rpc.Status.OK)


async def test_dropping_without_the_proxy_says_what_is_missing() -> None:
    faults = testing.FaultInjector()
    faults.drop_connection()
    async with testing.open_service([TestService()], interceptors=[faults]) as harness:
        with pytest.raises(rpc.RpcError) as info:
            await harness.stub(TestService).empty_call(Empty())
    assert info.value.code is rpc.Status.FAILED_PRECONDITION
    assert "testing.open_service(faults=...)" in info.value.message
    assert repr(faults) == "<testing.FaultInjector rules=1 calls=1>"


async def test_a_proxy_counts_the_bytes_each_way_and_cuts_connections() -> None:
    async with (
        testing.open_service([TestService()]) as harness,
        testing.open_proxy(harness.server.address) as proxy,
    ):
        host, port = proxy.address
        async with rpc.open_channel(f"{host}:{port}") as channel:
            await channel.stub(TestService).empty_call(Empty())
            # The preface and HELLO, then one REQUEST and one RESPONSE, each way; the
            # proxy counts what it forwards before forwarding it.
            up, down = proxy.bytes_up, proxy.bytes_down
            assert (up > 0, down > 0) == (True, True)
            await channel.stub(TestService).empty_call(Empty())
            assert (proxy.bytes_up > up, proxy.bytes_down > down) == (True, True)
            await proxy.drop()
            assert proxy.dropped == 1  # the channel's one connection


async def test_rules_match_by_service_and_method(autojump_clock: trio.testing.MockClock) -> None:
    faults = testing.FaultInjector()
    faults.delay(5, service="grpc.testing.TestService", method="empty_call")
    faults.fail(rpc.Status.NOT_FOUND, service="elsewhere")
    async with testing.open_service([TestService()], faults=faults) as harness:
        start = trio.current_time()
        await harness.stub(TestService).empty_call(Empty())
        assert trio.current_time() - start == pytest.approx(5)


def _run_pytest(tmp_path: Path, *args: str) -> str:
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\n@pytest.mark.trio\nasync def test_it(rpc_harness):\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def test_the_fixtures_are_opt_in(tmp_path: Path) -> None:
    assert "fixture 'rpc_harness' not found" in _run_pytest(tmp_path)


def test_the_plugin_asks_for_the_services(tmp_path: Path) -> None:
    out = _run_pytest(tmp_path, "-o", "trio_micro_fixtures=true")
    assert "define a fixture named rpc_services" in out
