"""Which call records a summary keeps: :class:`RecordFilter`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, final

from ..observe import CallRecord

__all__ = ["RecordFilter"]


class CallRow(Protocol):
    """What a summary counts of a call: a decoded row or a :class:`CallRecord`."""

    @property
    def service(self) -> str | None: ...
    @property
    def method(self) -> str | None: ...
    @property
    def server(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def duration_ms(self) -> float | None: ...


@final
@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which call records to keep; every condition given must hold.

    Attributes:
        since: Keep records with ``timestamp >= since`` (timezone-aware).
        until: Keep records with ``timestamp < until`` (timezone-aware).
        services: Keep these services (empty: all).
        methods: Keep these methods, each given as ``"Method"`` or ``"service/Method"``
            (empty: all).
        codes: Keep these status codes, e.g. ``{"NOT_FOUND"}`` (empty: all).

    Raises:
        ValueError: ``since`` or ``until`` is a naive datetime.
    """

    since: datetime | None = None
    until: datetime | None = None
    services: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value!r}")

    @property
    def active(self) -> bool:
        """Whether any condition is set."""
        return bool(
            self.since is not None
            or self.until is not None
            or self.services
            or self.methods
            or self.codes
        )

    def bounds(self) -> tuple[float, float]:
        """``since`` and ``until`` as seconds since the epoch (``-inf``/``inf`` if unset)."""
        return (
            -math.inf if self.since is None else self.since.timestamp(),
            math.inf if self.until is None else self.until.timestamp(),
        )

    def mask(self, records: Sequence[CallRow], times: Sequence[float]) -> list[bool]:
        """Return, for each record, whether it passes; ``times`` are its epoch seconds."""
        since, until = self.bounds()
        services, methods, codes = self.services, self.methods, self.codes
        return [
            since <= t < until
            and (not services or r.service in services)
            and (not codes or r.code in codes)
            and (not methods or r.method in methods or f"{r.service}/{r.method}" in methods)
            for r, t in zip(records, times, strict=True)
        ]

    def matches(self, record: CallRecord) -> bool:
        """Return whether ``record`` passes every condition (as :meth:`mask` decides)."""
        return self.mask((record,), (record.timestamp.timestamp(),))[0]
