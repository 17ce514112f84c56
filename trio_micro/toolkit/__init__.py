"""The concurrency toolkit: the Go idioms of the article, the Trio way."""

from __future__ import annotations

__all__: list[str] = []
