"""Wire constants, settings and status codes."""

from __future__ import annotations

import msgspec
import pytest

from trio_micro.protocol import ErrorCode, Settings, Status
from trio_micro.protocol._frames import DEFAULT_MAX_FRAME_SIZE, MAGIC, PREFACE, PROTOCOL_VERSION

GRPC_CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


def test_status_has_grpcs_17_codes_with_grpcs_numbers() -> None:
    assert [(s.name, s.value) for s in Status] == [(n, i) for i, n in enumerate(GRPC_CODES)]


def test_error_codes_are_unique_and_start_at_no_error() -> None:
    assert ErrorCode.NO_ERROR.value == 0
    assert len({code.value for code in ErrorCode}) == len(ErrorCode)


def test_the_preface_is_magic_then_a_big_endian_u16_version() -> None:
    assert PREFACE == b"\x89TMRPC\r\n\x00\x01"
    assert MAGIC + PROTOCOL_VERSION.to_bytes(2, "big") == PREFACE


def test_default_settings() -> None:
    settings = Settings()
    assert settings.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 4 * 1024 * 1024
    assert settings.max_concurrent_streams == 1000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_frame_size", 16 * 1024 - 1),
        ("max_frame_size", 2**32),
        ("max_concurrent_streams", -1),
        ("max_metadata_size", -1),
        ("initial_stream_credit", 2**31),
        ("min_ping_interval_ms", -1),
    ],
)
def test_settings_reject_out_of_range_values(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"{field} must be in .*got {value}"):
        Settings(**{field: value})


def test_settings_are_a_map_so_unknown_keys_are_ignored_and_missing_keys_default() -> None:
    data = msgspec.msgpack.encode({"max_concurrent_streams": 7, "from_the_future": True})
    assert msgspec.msgpack.decode(data, type=Settings) == Settings(max_concurrent_streams=7)
