"""Payload compression in the sans-io core: negotiation, the threshold, the per-call hint,
the bomb limit and bad compressed bytes -- no I/O."""

from __future__ import annotations

import random
import zlib

import msgspec
import pytest
import zstandard  # the zstd extra, in the test group
from msgspec.msgpack import Ext

from trio_micro.protocol import (
    COMPRESSION_HINT,
    DEFAULT_COMPRESSION_THRESHOLD,
    PREFACE,
    PROTOCOL_VERSION,
    SUPPORTED_COMPRESSION,
    CallType,
    CompressionError,
    Compressor,
    Connection,
    ErrorCode,
    Hello,
    Item,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Settings,
    Status,
    _compression,
    check_compression,
    with_compression_hint,
)

from .test_connection import forge

ZLIB = Settings(compression=("zlib",))
BIG = b"x" * 4096  # compresses well, over the default threshold
SMALL = b"x" * (DEFAULT_COMPRESSION_THRESHOLD - 1)


def handshake(
    client: Settings = ZLIB, server: Settings = ZLIB, *, compression: str | None = None
) -> tuple[Connection, Connection]:
    c = Connection(Role.CLIENT, settings=client)
    s = Connection(Role.SERVER, settings=server, compression=compression)
    s.receive_data(c.initiate())
    c.receive_data(s.initiate())
    return c, s


def request(c: Connection, s: Connection, payload: bytes = b"\xc0", **kw: object) -> Request:
    sid = c.next_stream_id
    (event,) = s.receive_data(c.send_request(sid, "svc/m", payload, **kw))  # type: ignore[arg-type]
    assert isinstance(event, Request)
    return event


def test_hello_carries_the_encodings_a_side_accepts() -> None:
    c, s = handshake()
    assert s.remote_settings is not None
    assert s.remote_settings.compression == ("zlib",)
    assert c.peer_compression == ("zlib",)


def test_a_peer_that_announces_nothing_gets_nothing_compressed() -> None:
    c, s = handshake(client=Settings(), compression="zlib")
    assert s.peer_compression == ()
    event = request(c, s)
    (response,) = c.receive_data(s.send_response(event.id, BIG))
    assert response == Response(event.id, BIG)


def test_an_old_peers_hello_without_the_setting_means_none() -> None:
    # A HELLO from before compression: its settings map has no "compression" key.
    old = msgspec.msgpack.encode([1, PROTOCOL_VERSION, {"max_frame_size": 16384}])
    s = Connection(Role.SERVER, settings=ZLIB, compression="zlib")
    s.initiate()
    s.receive_data(PREFACE + len(old).to_bytes(4, "big") + old)
    assert s.peer_compression == ()


def test_unknown_encoding_names_in_a_hello_are_ignored() -> None:
    _, s = handshake(client=Settings(compression=("brotli", "zlib")))
    assert s.peer_compression == ("zlib",)


def test_too_many_encoding_names_in_a_hello_is_a_protocol_error() -> None:
    s = Connection(Role.SERVER)
    s.initiate()
    names = [f"e{i}" for i in range(17)]
    body = msgspec.msgpack.encode([1, PROTOCOL_VERSION, {"compression": names}])
    with pytest.raises(RemoteProtocolError) as info:
        s.receive_data(PREFACE + len(body).to_bytes(4, "big") + body)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_the_server_default_compresses_answers_over_the_threshold() -> None:
    c, s = handshake(compression="zlib")
    event = request(c, s)
    data = s.send_response(event.id, BIG)
    assert len(data) < 100
    (response,) = c.receive_data(data)
    assert isinstance(response, Response)
    assert isinstance(response.payload, Ext)
    assert c.decompress(response.payload) == BIG


def test_payloads_under_the_threshold_go_as_they_are() -> None:
    c, s = handshake(compression="zlib")
    event = request(c, s)
    (response,) = c.receive_data(s.send_response(event.id, SMALL))
    assert response == Response(event.id, SMALL)


def test_a_payload_that_would_grow_goes_as_it_is() -> None:
    compressor = Compressor("zlib", 0, 1 << 20)
    noise = bytes(range(256)) * 2  # zlib can't shrink it
    assert compressor(zlib.compress(noise, 9)) == zlib.compress(noise, 9)


def test_the_hint_picks_the_encoding_of_both_directions_of_one_call() -> None:
    c, s = handshake()
    sid = c.next_stream_id
    data = c.send_request(
        sid, "svc/m", b"", call_type=CallType.BIDI_STREAM, metadata={COMPRESSION_HINT: "zlib"}
    )
    s.receive_data(data)
    (up,) = s.receive_data(c.send_item(sid, BIG))
    assert isinstance(up, Item)
    assert isinstance(up.payload, Ext)
    (down,) = c.receive_data(s.send_item(sid, BIG))
    assert isinstance(down, Item)
    assert isinstance(down.payload, Ext)


def test_the_hint_none_overrides_the_servers_default() -> None:
    c, s = handshake(compression="zlib")
    event = request(c, s, metadata={COMPRESSION_HINT: "none"})
    (response,) = c.receive_data(s.send_response(event.id, BIG))
    assert response == Response(event.id, BIG)


def test_an_unknown_hint_on_the_wire_is_ignored() -> None:
    c, s = handshake(compression="zlib")
    event = request(c, s, metadata={COMPRESSION_HINT: "brotli"})
    (response,) = c.receive_data(s.send_response(event.id, BIG))
    assert isinstance(response, Response)
    assert isinstance(response.payload, Ext)


def test_a_compressed_request_payload_round_trips() -> None:
    c, s = handshake()
    event = request(c, s, BIG, metadata={COMPRESSION_HINT: "zlib"})
    assert isinstance(event.payload, Ext)
    assert s.decompress(event.payload) == BIG


def test_an_unknown_compression_name_at_the_api_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown compression 'brotli'"):
        Connection(Role.SERVER, compression="brotli")
    with pytest.raises(ValueError, match="known: none, zstd, zlib"):
        check_compression("gzip")
    with pytest.raises(TypeError):
        check_compression(1)
    assert check_compression("none") is None


@pytest.mark.parametrize(
    ("compression", "default", "expected"),
    [
        (None, None, {"k": "v"}),  # no choice: the metadata as it is
        (None, "zlib", {"k": "v", COMPRESSION_HINT: "zlib"}),  # the channel's
        ("none", "zlib", {"k": "v", COMPRESSION_HINT: "none"}),  # the call's, "none" too
    ],
)
def test_a_calls_compression_choice_rides_in_its_metadata(
    compression: str | None, default: str | None, expected: dict[str, str]
) -> None:
    assert with_compression_hint({"k": "v"}, compression, default) == expected


def test_a_payload_over_the_peers_frame_size_is_refused_even_if_it_would_compress() -> None:
    c, s = handshake(compression="zlib")
    event = request(c, s)
    with pytest.raises(LocalProtocolError) as info:
        s.send_response(event.id, b"x" * (Settings().max_frame_size + 1))
    assert info.value.code is ErrorCode.FRAME_SIZE_ERROR


# -- the receiver's checks -----------------------------------------------------------------


def receiver(max_frame_size: int = 16384) -> Connection:
    _, s = handshake(server=Settings(compression=("zlib",), max_frame_size=max_frame_size))
    return s


def test_a_bomb_is_refused_after_inflating_at_most_the_limit() -> None:
    s = receiver(16384)
    bomb = Ext(1, zlib.compress(b"\0" * (1 << 24)))  # 16 MiB of zeros in ~16 KiB
    with pytest.raises(CompressionError) as info:
        s.decompress(bomb)
    assert info.value.status is Status.RESOURCE_EXHAUSTED
    assert info.value.client_status is Status.RESOURCE_EXHAUSTED


def test_exactly_the_limit_inflates() -> None:
    s = receiver(16384)
    assert s.decompress(Ext(1, zlib.compress(b"a" * 16384))) == b"a" * 16384


def test_garbage_compressed_bytes_are_invalid_argument() -> None:
    with pytest.raises(CompressionError) as info:
        receiver().decompress(Ext(1, b"not zlib at all"))
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.client_status is Status.INTERNAL


def test_a_truncated_stream_is_invalid_argument() -> None:
    with pytest.raises(CompressionError) as info:
        receiver().decompress(Ext(1, zlib.compress(BIG)[:-3]))
    assert info.value.status is Status.INVALID_ARGUMENT


def test_trailing_bytes_after_the_stream_are_invalid_argument() -> None:
    with pytest.raises(CompressionError) as info:
        receiver().decompress(Ext(1, zlib.compress(BIG) + b"junk"))
    assert info.value.status is Status.INVALID_ARGUMENT


def test_an_encoding_we_did_not_announce_is_unimplemented() -> None:
    _, s = handshake(server=Settings())  # announces none
    with pytest.raises(CompressionError) as info:
        s.decompress(Ext(1, zlib.compress(BIG)))
    assert info.value.status is Status.UNIMPLEMENTED
    with pytest.raises(CompressionError):
        receiver().decompress(Ext(99, b""))


def test_a_compressed_frame_decodes_on_a_connection_that_never_negotiated() -> None:
    # The frame is well-formed: the call, not the connection, is what fails (decompress).
    _, s = handshake(server=Settings())
    (event,) = s.receive_data(forge(Request(1, "svc/m", Ext(1, zlib.compress(BIG)))))
    assert isinstance(event, Request)
    assert isinstance(event.payload, Ext)


def test_uncompressed_frames_are_unchanged_on_the_wire() -> None:
    c, _ = handshake()
    sid = c.next_stream_id
    data = c.send_request(sid, "svc/m", b"\x01", timeout_ms=250)
    assert data == forge(Request(sid, "svc/m", b"\x01", 250))
    assert forge(Hello(PROTOCOL_VERSION, Settings())) != forge(Hello(PROTOCOL_VERSION, ZLIB))


# -- zstd (the optional extra; installed in the test environment) ---------------------------


def zstd_receiver(max_frame_size: int = 16384) -> Connection:
    both = Settings(compression=("zstd", "zlib"), max_frame_size=max_frame_size)
    _, s = handshake(server=both)
    return s


def test_zstd_is_supported_with_the_extra() -> None:
    assert "zstd" in SUPPORTED_COMPRESSION
    c, s = handshake(client=Settings(compression=("zstd",)), compression="zstd")
    event = request(c, s)
    (response,) = c.receive_data(s.send_response(event.id, BIG))
    assert isinstance(response, Response)
    assert isinstance(response.payload, Ext)
    assert response.payload.code == 2
    assert c.decompress(response.payload) == BIG


def test_a_zstd_bomb_is_refused_before_inflating() -> None:
    bomb = Ext(2, zstandard.ZstdCompressor().compress(b"\0" * (1 << 24)))
    with pytest.raises(CompressionError) as info:
        zstd_receiver().decompress(bomb)
    assert info.value.status is Status.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        zstandard.ZstdCompressor().compress(BIG)[:-3],  # truncated
        zstandard.ZstdCompressor().compress(BIG) + b"junk",  # trailing bytes
        zstandard.ZstdCompressor(write_content_size=False).compress(BIG),  # size unknown
    ],
    ids=["garbage", "truncated", "trailing", "no-content-size"],
)
def test_bad_zstd_data_is_invalid_argument(data: bytes) -> None:
    with pytest.raises(CompressionError) as info:
        zstd_receiver().decompress(Ext(2, data))
    assert info.value.status is Status.INVALID_ARGUMENT


# -- exact bounds and messages (the survivors of `make mutate`: docs/testing.md) -------------

GARBAGE = "compressed payload does not inflate: "


def test_a_compression_errors_message_is_its_text_and_its_str() -> None:
    error = CompressionError(Status.INTERNAL, "what went wrong")
    assert (error.message, str(error)) == ("what went wrong", "what went wrong")


def test_a_zlib_bomb_is_too_large_with_the_limit_in_the_message() -> None:
    with pytest.raises(CompressionError) as info:
        receiver(16384).decompress(Ext(1, zlib.compress(b"\0" * 20000)))
    assert info.value.message == (
        "compressed payload inflates past the receiver's max_frame_size of 16384 bytes"
    )


def test_a_zstd_bomb_is_too_large_with_the_limit_in_the_message() -> None:
    with pytest.raises(CompressionError) as info:
        zstd_receiver(16384).decompress(Ext(2, zstandard.ZstdCompressor().compress(b"\0" * 16385)))
    assert info.value.message == (
        "compressed payload inflates past the receiver's max_frame_size of 16384 bytes"
    )


def test_zlib_stops_inflating_one_byte_past_the_limit() -> None:
    # limit + 2 bytes whose checksum is corrupt: inflating at most limit + 1 bytes never
    # reaches the checksum, so it is "too large", not "does not inflate".
    data = bytearray(zlib.compress(b"a" * 16386))
    data[-1] ^= 1
    with pytest.raises(CompressionError) as info:
        receiver(16384).decompress(Ext(1, bytes(data)))
    assert info.value.status is Status.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("code", "error"), [(1, zlib.error), (2, zstandard.ZstdError)], ids=["zlib", "zstd"]
)
def test_the_codecs_error_is_named_in_the_message(code: int, error: type[Exception]) -> None:
    with pytest.raises(CompressionError) as info:
        zstd_receiver().decompress(Ext(code, b"garbage"))
    assert isinstance(info.value.__context__, error)
    assert info.value.message == f"{GARBAGE}{info.value.__context__}"


def test_a_truncated_zlib_stream_says_so() -> None:
    with pytest.raises(CompressionError) as info:
        receiver().decompress(Ext(1, zlib.compress(BIG)[:-3]))
    assert info.value.message == f"{GARBAGE}truncated, or followed by trailing bytes"


def test_a_zstd_frame_without_its_size_says_so() -> None:
    data = zstandard.ZstdCompressor(write_content_size=False).compress(BIG)
    with pytest.raises(CompressionError) as info:
        zstd_receiver().decompress(Ext(2, data))
    assert info.value.message == (
        f"{GARBAGE}the zstd frame header does not declare its content size"
    )


def test_an_empty_zstd_frame_inflates_to_nothing() -> None:
    assert zstd_receiver().decompress(Ext(2, zstandard.ZstdCompressor().compress(b""))) == b""


def test_exactly_the_limit_inflates_with_zstd() -> None:
    data = zstandard.ZstdCompressor().compress(b"a" * 16384)
    assert zstd_receiver(16384).decompress(Ext(2, data)) == b"a" * 16384


@pytest.mark.parametrize("buffer", [bytearray, memoryview])
def test_compressed_data_in_any_buffer_inflates(buffer: type[bytearray | memoryview]) -> None:
    assert receiver().decompress(Ext(1, buffer(zlib.compress(BIG)))) == BIG


def test_an_encoding_we_did_not_announce_is_named_in_the_message() -> None:
    with pytest.raises(CompressionError) as info:
        receiver().decompress(Ext(99, b""))
    assert info.value.message == "payload compressed with encoding code 99, not accepted"


def test_a_compression_name_of_the_wrong_type_is_named_in_the_message() -> None:
    with pytest.raises(TypeError) as info:
        check_compression(1)
    assert str(info.value) == "compression must be a string or None, got 1"


def test_an_unknown_compression_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        check_compression("gzip")
    assert str(info.value) == "unknown compression 'gzip'; known: none, zstd, zlib"


def test_without_the_zstd_extra_asking_for_zstd_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(_compression._COMPRESS, "zstd")
    monkeypatch.setattr(_compression, "SUPPORTED_COMPRESSION", ("zlib",))
    with pytest.raises(ValueError) as info:
        check_compression("zstd")
    assert str(info.value) == (
        "unknown compression 'zstd' (pip install trio-micro[zstd]); known: none, zlib"
    )


def test_a_compressor_shows_its_encoding_and_threshold() -> None:
    assert repr(Compressor("zlib", 1024, 16384)) == "<Compressor zlib threshold=1024>"


def test_a_payload_of_exactly_the_threshold_is_compressed() -> None:
    compressor = Compressor("zlib", 100, 1 << 20)
    assert isinstance(compressor(b"x" * 100), Ext)
    assert compressor(b"x" * 99) == b"x" * 99


def test_a_payload_of_exactly_the_peers_frame_size_is_compressed() -> None:
    assert isinstance(Compressor("zlib", 0, 100)(b"x" * 100), Ext)


def test_a_payload_over_the_peers_frame_size_is_refused_with_both_sizes() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Compressor("zlib", 0, 100)(b"x" * 101)
    assert str(info.value) == (
        "payload is 101 bytes, over the peer's max_frame_size of 100: it may not inflate "
        "to that, so compression can't help"
    )


def test_a_payload_that_compresses_to_its_own_size_goes_as_it_is() -> None:
    # Random bytes grow by zlib's framing; a run of zeros shrinks: some length of the run
    # makes them even.
    noise = random.Random(0).randbytes(200)
    payloads = [noise + bytes(k) for k in range(64)]
    even = [p for p in payloads if len(zlib.compress(p, 1)) == len(p)]
    assert even
    compressor = Compressor("zlib", 0, 1 << 20)
    assert compressor(even[0]) == even[0]


def client_compressing_with_zlib(
    threshold: int = DEFAULT_COMPRESSION_THRESHOLD,
) -> tuple[Connection, Connection]:
    c = Connection(Role.CLIENT, settings=ZLIB, compression="zlib", compression_threshold=threshold)
    s = Connection(Role.SERVER, settings=ZLIB)
    s.receive_data(c.initiate())
    c.receive_data(s.initiate())
    return c, s


def test_a_compression_threshold_of_0_compresses_every_payload_that_shrinks() -> None:
    c, s = client_compressing_with_zlib(threshold=0)
    event = request(c, s, b"x" * 64)
    assert isinstance(event.payload, Ext)


def test_a_negative_compression_threshold_is_refused_naming_it() -> None:
    with pytest.raises(ValueError) as info:
        Connection(Role.CLIENT, compression_threshold=-1)
    assert str(info.value) == "compression_threshold must be >= 0, got -1"


def test_the_clients_default_compresses_a_request_without_metadata() -> None:
    c, s = client_compressing_with_zlib()
    event = request(c, s, BIG)
    assert isinstance(event.payload, Ext)
    assert s.decompress(event.payload) == BIG


def test_a_hint_the_server_does_not_accept_leaves_the_request_to_the_clients_default() -> None:
    c, s = client_compressing_with_zlib()  # the server accepts zlib only
    event = request(c, s, BIG, metadata={COMPRESSION_HINT: "zstd"})
    assert isinstance(event.payload, Ext)
    assert event.payload.code == 1
