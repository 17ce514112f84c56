"""Observability: logging setup, task monitor, memory monitor."""

from __future__ import annotations

__all__: list[str] = []
