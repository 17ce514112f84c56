"""Fixtures of the browser tests: one headless Chromium for the whole session.

The tests skip, saying why, where Chromium is missing; under ``CI`` they fail instead,
so that CI cannot pass by skipping them (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._cdp import Browser, CDPError, find_chromium, launch


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, but CI is set: .ci/run must install it")
        pytest.skip(reason)
    with launch(executable) as browser:
        try:
            browser.call("Browser.getVersion")
        except CDPError as exc:
            if os.environ.get("CI"):
                pytest.fail(f"chromium does not start: {exc}")
            pytest.skip(f"chromium does not start: {exc}")
        yield browser
