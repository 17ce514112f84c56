"""Fixtures shared by the observe tests."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest


@pytest.fixture
def tracing() -> Iterator[None]:
    """Run the test with tracemalloc tracing, and stop it afterwards."""
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()
