"""``trio-micro registry`` in its own process."""

from __future__ import annotations

import signal
import subprocess
import sys

import trio

from trio_micro.registry import Endpoint, open_registry_client

from .test_discovery import ROOT

COMMAND = "from trio_micro.cli import main; raise SystemExit(main())"


async def test_registry_command_serves_until_interrupted() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", COMMAND, "registry", "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"registry listening on " not in output or not output.endswith(b"\n"):
                output += await process.stdout.receive_some()
        target = output.split(b"registry listening on ")[1].split()[0].decode()
        async with (
            open_registry_client(target) as registry,
            registry.register("users", "10.0.0.1:50051", ttl=5),
        ):
            assert await registry.resolve("users") == [Endpoint("10.0.0.1:50051")]
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await process.wait() == 128 + signal.SIGINT
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
