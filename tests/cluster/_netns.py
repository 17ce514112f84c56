"""A simulated network of hosts: Linux network namespaces on a bridge, all owned by one run.

:class:`Network` creates a *switch* namespace holding a bridge, and one namespace per host,
each joined to the bridge by a veth pair and given one address in a private subnet that
exists only inside these namespaces: nothing is added to the machine's own network
namespace, and the processes started here can reach no address outside them. Names carry
the test process's pid so parallel runs do not collide. :meth:`Network.close` kills every
process left in the namespaces and deletes them, and is safe to call after any failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

SUBNET = "10.213.13"  # a /24 that exists only inside the namespaces of one run
IP = shutil.which("ip") or "/usr/sbin/ip"
COMMAND_TIMEOUT = 20.0  # seconds any one `ip` command may take


def unavailable() -> str | None:
    """Why this machine cannot run the cluster test, or ``None`` when it can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add` as uid 0)"
    if not Path(IP).exists():
        return "the `ip` command (iproute2) is not installed"
    probe = f"tmprobe{os.getpid()}"
    added = subprocess.run(
        [IP, "netns", "add", probe], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if added.returncode != 0:
        return f"`ip netns add` fails here: {added.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True, timeout=COMMAND_TIMEOUT)
    return None


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its stderr when it fails."""
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def namespaces() -> set[str]:
    """The names ``ip netns list`` shows."""
    out = subprocess.run(
        [IP, "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class Host:
    """One namespace on the bridge: its name, its address, and its switch port."""

    def __init__(self, network: Network, name: str, index: int) -> None:
        self.name = name
        self.netns = f"{network.prefix}-{name}"
        self.address = f"{SUBNET}.{index}"
        self.port = f"p{index}"  # its veth's end in the switch namespace
        self._network = network

    def popen(
        self, argv: list[str], *, log: IO[bytes], stdout: int | IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host's namespace, in a session of its own."""
        return self._network.track(
            subprocess.Popen(
                [IP, "netns", "exec", self.netns, *argv],
                stdout=log if stdout is None else stdout,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self._network.cwd,
                env=self._network.env,
            )
        )

    def link(self, *, up: bool) -> None:
        """Plug (``up``) or unplug this host's cable at the switch: a silent partition."""
        ip("-n", self._network.switch, "link", "set", self.port, "up" if up else "down")

    def blackhole(self, address: str, *, on: bool) -> None:
        """Drop (``on``) this host's packets to ``address`` only, or stop dropping them."""
        ip("-n", self.netns, "route", "add" if on else "del", "blackhole", f"{address}/32")


class Network:
    """The switch namespace with its bridge, and the hosts added with :meth:`add`."""

    def __init__(self, *, cwd: Path, env: dict[str, str]) -> None:
        self.prefix = f"tm{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.cwd = cwd
        self.env = env
        self.hosts: list[Host] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []
        try:
            self._netns(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str) -> Host:
        """A new host namespace on the bridge, with the next address of the subnet."""
        host = Host(self, name, len(self.hosts) + 2)
        self._netns(host.netns)
        ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
           "netns", host.netns)  # fmt: skip
        ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        ip("-n", self.switch, "link", "set", host.port, "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        self.hosts.append(host)
        return host

    def track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self._processes.append(process)
        return process

    def close(self) -> None:
        """Kill what runs in the namespaces and delete them; never raises for a leftover."""
        for process in self._processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for name in self._created:
            # A process that left its session (none should) still dies with its namespace's
            # deletion only once it exits: kill every pid the namespace still holds.
            pids = subprocess.run(
                [IP, "netns", "pids", name], capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT,
            ).stdout.split()  # fmt: skip
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=COMMAND_TIMEOUT)
        for name in reversed(self._created):
            subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=COMMAND_TIMEOUT)
        self._created.clear()


def wait_for(what: str, condition: object, *, timeout: float, interval: float = 0.05) -> float:
    """Poll ``condition()`` until true; return the seconds it took. Raise after ``timeout``."""
    assert callable(condition)
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
