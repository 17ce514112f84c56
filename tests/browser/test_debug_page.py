"""The debug endpoint's HTML index page, served for real, looked at in headless Chromium."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry

from trio_micro import observe

from ._cdp import Browser


@pytest.mark.parametrize("width", [1280, 800])
async def test_debug_index_page(browser: Browser, width: int, tmp_path: Path) -> None:
    async with observe.open_debug_server(registry=CollectorRegistry()) as server:
        # The browser's calls block: they run in a thread while trio serves the page.
        tab = await trio.to_thread.run_sync(functools.partial(browser.open_page, server.url, width))
        try:
            errors = tab.console_errors()
            links = await trio.to_thread.run_sync(
                tab.evaluate, "[...document.querySelectorAll('a')].map(a => a.textContent)"
            )
            fits = await trio.to_thread.run_sync(
                tab.evaluate,
                "document.documentElement.scrollWidth <= document.documentElement.clientWidth",
            )
            shot = await trio.to_thread.run_sync(tab.screenshot, tmp_path / f"debug-{width}.png")
        finally:
            await trio.to_thread.run_sync(tab.close)
    assert errors == []
    assert "/metrics" in links
    assert fits
    assert shot.read_bytes()[:4] == b"\x89PNG"
