"""A real single-member etcd for the tests: free ports on 127.0.0.1, a temporary data dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")


def require_etcd() -> str:
    """The ``etcd`` binary; skip without it, except under ``CI`` where that is a failure."""
    if ETCD is not None:
        return ETCD
    if os.environ.get("CI"):
        pytest.fail("etcd is not installed, but CI is set: .ci/run must install etcd-server")
    pytest.skip("etcd is not installed (apt-get install etcd-server etcd-client)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class EtcdTls:
    """PEM files for an etcd that serves https and requires client certificates."""

    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str

    def flags(self) -> list[str]:
        return [
            f"--cert-file={self.cert}",
            f"--key-file={self.key}",
            f"--trusted-ca-file={self.ca}",
            "--client-cert-auth",
        ]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


class EtcdServer:
    """One etcd process that can be stopped and started again on the same ports."""

    def __init__(self, workdir: Path, *, tls: EtcdTls | None = None) -> None:
        self.binary = require_etcd()
        self.workdir = workdir
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.client_port}"
        self.generation = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"data-{self.generation}"

    def start(self, *, fresh_data: bool = False) -> None:
        """Start etcd and wait until it is healthy; ``fresh_data`` starts with no data."""
        assert self._process is None, "already running"
        if fresh_data:
            self.generation += 1
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [
                self.binary,
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--logger=zap",
                "--log-level=warn",
                *([] if self.tls is None else self.tls.flags()),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self.healthy():
            if self._process.poll() is not None:
                log = (self.workdir / "etcd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"etcd exited while starting; its log ends:\n{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd at {self.url} did not become healthy in 20 s")
            time.sleep(0.05)

    def healthy(self) -> bool:
        try:
            context = None if self.tls is None else self.tls.client_context()
            with urllib.request.urlopen(
                self.url + "/health", timeout=1, context=context
            ) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, *, sig: int = signal.SIGTERM) -> None:
        """Stop etcd (``SIGKILL`` if it does not exit in 10 s); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def etcdctl(self, *args: str) -> str:
        """Run ``etcdctl`` against this server and return its stdout."""
        if ETCDCTL is None:
            pytest.fail("etcdctl is not installed (apt-get install etcd-client)")
        result = subprocess.run(
            [ETCDCTL, f"--endpoints={self.url}", *args],
            capture_output=True,
            check=True,
            timeout=20,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        return result.stdout.decode()
