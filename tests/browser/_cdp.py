"""A minimal Chrome DevTools protocol client over ``--remote-debugging-pipe``.

Why this and not Playwright: Playwright's own browser download is not reachable from CI
(only package registries are), its Python package brings a Node.js driver of ~40 MB, and
the few calls the tests need (navigate, evaluate, console errors, screenshot) are five
CDP methods. Over the pipe (fd 3: commands in, fd 4: replies out, each a JSON text ended
by NUL) no port, no websocket library and no dependency is needed: Debian's ``chromium``
is enough.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

_TIMEOUT: Final = 20.0  # s for one reply; chromium starts in 1-2 s
_MAX_MESSAGE: Final = 64 * 1024 * 1024  # a full-page screenshot is a few MB


class CDPError(RuntimeError):
    """Chromium answered with an error, exited, or did not answer in time."""


def find_chromium() -> str | None:
    """The path of the system's Chromium (Debian's ``chromium`` package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class Browser:
    """One headless Chromium driven over its DevTools pipe (blocking calls)."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int):
        self._process = process
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that come first are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data) :]
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """Return the first event ``method`` of ``session`` (one seen already, or the next)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + _TIMEOUT
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise CDPError(f"no reply from chromium in {_TIMEOUT:g} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise CDPError(f"chromium exited (code {self._process.poll()})")
            self._buffer += chunk
            if len(self._buffer) > _MAX_MESSAGE:
                raise CDPError("reply from chromium over 64 MiB")
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def open_page(self, url: str, width: int, height: int = 900) -> Tab:
        """Open ``url`` in a new tab ``width`` px wide and wait for its load event."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tab = Tab(self, target, session)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired", session)
        return tab


class Tab:
    """One page of a :class:`Browser`."""

    def __init__(self, browser: Browser, target: str, session: str):
        self.browser = browser
        self.target = target
        self.session = session

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        reply = self.browser.call(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise CDPError(f"evaluate: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads logged by the page so far."""
        out = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", ""))
        return out

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page at ``path``."""
        reply = self.browser.call(
            "Page.captureScreenshot", self.session, format="png", captureBeyondViewport=True
        )
        path.write_bytes(base64.b64decode(reply["data"]))
        return path

    def close(self) -> None:
        """Close the tab."""
        self.browser.call("Target.closeTarget", targetId=self.target)


@contextmanager
def launch(executable: str) -> Iterator[Browser]:
    """Run a headless Chromium for the ``with`` block; it is killed on the way out."""
    to_read, to_browser = os.pipe()  # chromium reads commands on its fd 3
    from_browser, to_write = os.pipe()  # and writes replies on its fd 4
    with tempfile.TemporaryDirectory(prefix="cdp-") as profile:
        args = [
            executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            "about:blank",
        ]

        def child_fds() -> None:
            # via fds above 4, so that neither pipe end is overwritten (or left close-on-exec)
            high_read = fcntl.fcntl(to_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(to_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        process = subprocess.Popen(
            args,
            # close_fds would close fds 3 and 4 after preexec_fn made them; the fds of
            # this process are not inheritable (PEP 446) so none but these two leak.
            close_fds=False,
            preexec_fn=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_read)
        os.close(to_write)
        try:
            yield Browser(process, to_browser, from_browser)
        finally:
            process.kill()
            process.wait(timeout=10)
            os.close(to_browser)
            os.close(from_browser)
