"""The connection state machine, driven as h11's tests do: two Connection objects with the
bytes of one piped into the other, plus hand-made frames for what a broken peer would send."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trio_micro.protocol import (
    CallType,
    Cancel,
    Connection,
    ConnectionClosed,
    Credit,
    End,
    Error,
    ErrorCode,
    Event,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    Hello,
    Item,
    LocalProtocolError,
    Ping,
    Pong,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Settings,
    Status,
    StreamState,
)
from trio_micro.protocol._frames import MAGIC, PREFACE, PROTOCOL_VERSION

STREAM = CallType.SERVER_STREAM


class ConnectionPair:
    """A client and a server that have completed the handshake."""

    def __init__(self, *, client: Settings | None = None, server: Settings | None = None) -> None:
        self.client = Connection(Role.CLIENT, settings=client)
        self.server = Connection(Role.SERVER, settings=server)
        self.server_hello = self.server.receive_data(self.client.initiate())
        self.client_hello = self.client.receive_data(self.server.initiate())

    def to_server(self, data: bytes) -> list[Event]:
        return self.server.receive_data(data)

    def to_client(self, data: bytes) -> list[Event]:
        return self.client.receive_data(data)

    def call(self, method: str = "svc/m", *, call_type: CallType = CallType.UNARY) -> int:
        """Open a stream from client to server and return its id."""
        stream_id = self.client.next_stream_id
        events = self.to_server(
            self.client.send_request(stream_id, method, b"\xc0", call_type=call_type)
        )
        assert [type(e) for e in events] == [Request]
        return stream_id


def forge(*frames: Frame) -> bytes:
    """Bytes a misbehaving peer might send (no state machine checks them)."""
    encoder = FrameEncoder()
    return b"".join(encoder.encode(frame) for frame in frames)


def hello(settings: Settings | None = None) -> bytes:
    return PREFACE + forge(Hello(PROTOCOL_VERSION, settings or Settings()))


# -- handshake -------------------------------------------------------------------------


def test_each_side_receives_the_others_hello_and_settings() -> None:
    pair = ConnectionPair(
        client=Settings(initial_stream_credit=5), server=Settings(max_concurrent_streams=9)
    )
    assert pair.server_hello == [Hello(PROTOCOL_VERSION, Settings(initial_stream_credit=5))]
    assert pair.client_hello == [Hello(PROTOCOL_VERSION, Settings(max_concurrent_streams=9))]
    assert pair.client.remote_settings == Settings(max_concurrent_streams=9)
    assert pair.client.handshake_complete
    assert pair.server.handshake_complete


def test_the_handshake_works_with_the_preface_split_into_single_bytes() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    data = client.initiate()
    events = [e for i in range(len(data)) for e in server.receive_data(data[i : i + 1])]
    assert events == [Hello(PROTOCOL_VERSION, Settings())]


def test_a_request_in_the_same_chunk_as_the_hello_is_processed() -> None:
    server = Connection(Role.SERVER)
    server.initiate()
    events = server.receive_data(hello() + forge(Request(1, "s/m", b"")))
    assert [type(e) for e in events] == [Hello, Request]


def test_garbage_instead_of_the_preface_is_rejected_at_the_first_wrong_byte() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError, match=r"expected the preface .*got b'G'"):
        server.receive_data(b"G")


def test_an_http_request_instead_of_the_preface_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="expected the preface"):
        Connection(Role.SERVER).receive_data(b"GET / HTTP/1.1\r\n\r\n")


def test_a_preface_with_another_version_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="version 2; we speak 1") as info:
        Connection(Role.SERVER).receive_data(MAGIC + b"\x00\x02")
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_a_hello_with_another_version_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="HELLO says protocol version 7") as info:
        Connection(Role.SERVER).receive_data(PREFACE + forge(Hello(7, Settings())))
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION


def test_a_frame_before_hello_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="expected HELLO as the first frame, got PING"):
        Connection(Role.SERVER).receive_data(PREFACE + forge(Ping(1)))


def test_a_frame_before_we_sent_hello_is_rejected() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError, match="REQUEST arrived before we sent our HELLO"):
        server.receive_data(hello() + forge(Request(1, "s/m", b"")))


def test_a_goaway_may_arrive_before_we_sent_hello() -> None:
    server = Connection(Role.SERVER)
    goaway = GoAway(0, ErrorCode.UNSUPPORTED_VERSION, "bye")
    assert server.receive_data(hello() + forge(goaway)) == [Hello(1, Settings()), goaway]


def test_a_second_hello_is_rejected() -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError, match="HELLO sent twice"):
        pair.to_server(forge(Hello(PROTOCOL_VERSION, Settings())))


def test_nothing_but_hello_can_be_sent_before_the_peers_hello_arrives() -> None:
    client = Connection(Role.CLIENT)
    client.initiate()
    with pytest.raises(LocalProtocolError, match=r"^can't send REQUEST before the HELLO exchange"):
        client.send_request(1, "s/m", b"")
    assert not client.can_open_stream()


def test_a_ping_before_the_peers_hello_is_refused_by_name() -> None:
    client = Connection(Role.CLIENT)
    client.initiate()
    with pytest.raises(LocalProtocolError, match=r"^can't send PING before the HELLO exchange"):
        client.send_ping()


def test_sending_too_early_says_which_hello_is_missing() -> None:
    client = Connection(Role.CLIENT)
    assert client.handshake_complete is False
    with pytest.raises(LocalProtocolError) as info:
        client.send_ping()
    assert info.value.message.endswith("(our HELLO sent: False, theirs received: False)")
    client.initiate()
    with pytest.raises(LocalProtocolError) as info:
        client.send_ping()
    assert info.value.message.endswith("(our HELLO sent: True, theirs received: False)")


def test_initiate_twice_is_refused() -> None:
    client = Connection(Role.CLIENT)
    client.initiate()
    with pytest.raises(LocalProtocolError, match=r"^initiate\(\) was already called$"):
        client.initiate()


def test_role_must_be_a_role() -> None:
    with pytest.raises(TypeError, match="got 'client'"):
        Connection("client")  # type: ignore[arg-type]


# -- unary and server-stream calls ---------------------------------------------------------


def test_a_unary_call_round_trips() -> None:
    pair = ConnectionPair()
    data = pair.client.send_request(
        1, "users/get", b"\x01", timeout_ms=250, metadata={"traceparent": "00-ab-cd-01"}
    )
    assert pair.to_server(data) == [
        Request(1, "users/get", b"\x01", 250, {"traceparent": "00-ab-cd-01"}, CallType.UNARY)
    ]
    assert pair.to_client(pair.server.send_response(1, b"\x02")) == [Response(1, b"\x02")]
    assert pair.client.stream_state(1) is StreamState.CLOSED
    assert pair.server.stream_state(1) is StreamState.CLOSED


def test_a_server_stream_delivers_items_then_end() -> None:
    pair = ConnectionPair()
    sid = pair.call(call_type=STREAM)
    data = pair.server.send_item(sid, b"a") + pair.server.send_item(sid, b"b")
    data += pair.server.send_end(sid)
    assert pair.to_client(data) == [Item(sid, b"a"), Item(sid, b"b"), End(sid)]
    assert pair.client.open_streams == 0


def test_an_error_closes_the_stream_on_both_sides() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    data = pair.server.send_error(sid, Status.NOT_FOUND, "no user 7", {"field": "$.id"})
    assert pair.to_client(data) == [Error(sid, Status.NOT_FOUND, "no user 7", {"field": "$.id"})]
    assert pair.server.stream_state(sid) is StreamState.CLOSED
    assert pair.client.stream_state(sid) is StreamState.CLOSED


def test_an_error_with_status_ok_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(ValueError, match="other than OK"):
        pair.server.send_error(sid, Status.OK)


def test_a_remote_error_with_status_ok_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(RemoteProtocolError, match="status OK"):
        pair.to_client(forge(Error(sid, Status.OK)))


def test_a_response_on_a_server_stream_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call(call_type=STREAM)
    with pytest.raises(LocalProtocolError, match="send ITEMs and END, not RESPONSE"):
        pair.server.send_response(sid, b"")


def test_an_item_on_a_unary_stream_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(LocalProtocolError, match="unary: send RESPONSE, not ITEM"):
        pair.server.send_item(sid, b"")


def test_a_remote_item_on_a_unary_stream_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(RemoteProtocolError, match="ITEM on unary stream"):
        pair.to_client(forge(Item(sid, b"")))


def test_a_second_response_on_a_stream_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    pair.server.send_response(sid, b"")
    with pytest.raises(LocalProtocolError, match="it is closed"):
        pair.server.send_response(sid, b"")


def test_a_response_for_a_stream_never_opened_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError, match="RESPONSE for stream 5, never opened"):
        pair.to_client(forge(Response(5, b"")))


def test_a_response_for_a_closed_stream_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    pair.to_client(pair.server.send_response(sid, b""))
    with pytest.raises(RemoteProtocolError, match=f"RESPONSE for stream {sid}, already closed"):
        pair.to_client(forge(Response(sid, b"")))


def test_a_server_may_not_send_a_request() -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError, match="a server may not send REQUEST"):
        pair.to_client(forge(Request(1, "s/m", b"")))


def test_a_client_may_not_send_a_response() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(RemoteProtocolError, match=r"^a client may not send RESPONSE frames"):
        pair.to_server(forge(Response(sid, b"")))


def test_only_a_client_sends_requests() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match="only a client sends REQUEST"):
        pair.server.send_request(1, "s/m", b"")


# -- stream ids -----------------------------------------------------------------------------


def test_a_request_reusing_a_live_id_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(RemoteProtocolError, match=f"reuses stream id {sid}, still open"):
        pair.to_server(forge(Request(sid, "s/m", b"")))


def test_sending_a_request_on_a_live_id_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(LocalProtocolError, match=f"stream {sid} is still open"):
        pair.client.send_request(sid, "s/m", b"")


def test_a_request_with_a_lower_id_than_before_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    pair.to_server(forge(Request(5, "s/m", b"")))
    with pytest.raises(RemoteProtocolError, match="must increase: REQUEST 3 after 5"):
        pair.to_server(forge(Request(3, "s/m", b"")))


def test_ids_may_skip_values() -> None:
    pair = ConnectionPair()
    pair.to_server(pair.client.send_request(10, "s/m", b""))
    assert pair.client.next_stream_id == 11
    assert pair.server.stream_state(4) is StreamState.CLOSED  # used-or-skipped ids are dead
    assert pair.server.stream_state(11) is StreamState.IDLE


def test_the_highest_stream_id_may_be_used() -> None:
    pair = ConnectionPair()
    [request] = pair.to_server(pair.client.send_request(2**63 - 1, "s/m", b""))
    assert isinstance(request, Request)
    assert request.id == 2**63 - 1


@pytest.mark.parametrize("timeout_ms", [0, 2**63 - 1])
def test_a_request_carries_any_timeout_in_range(timeout_ms: int) -> None:
    pair = ConnectionPair()
    [request] = pair.to_server(pair.client.send_request(1, "s/m", b"", timeout_ms=timeout_ms))
    assert isinstance(request, Request)
    assert request.timeout_ms == timeout_ms


def test_memory_holds_only_live_streams() -> None:
    pair = ConnectionPair()
    for _ in range(50):
        sid = pair.call()
        pair.to_client(pair.server.send_response(sid, b""))
    assert pair.client._streams == {}
    assert pair.server._streams == {}


# -- flow control ---------------------------------------------------------------------------


def test_a_server_stream_starts_with_the_clients_initial_credit() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=3))
    sid = pair.call(call_type=STREAM)
    assert pair.server.stream_credit(sid) == 3


def test_sending_an_item_without_credit_is_refused() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=1))
    sid = pair.call(call_type=STREAM)
    pair.server.send_item(sid, b"")
    with pytest.raises(LocalProtocolError, match="no credit") as info:
        pair.server.send_item(sid, b"")
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_receiving_an_item_beyond_credit_is_a_flow_control_error() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=1))
    sid = pair.call(call_type=STREAM)
    pair.to_client(forge(Item(sid, b"")))
    with pytest.raises(RemoteProtocolError, match="without credit") as info:
        pair.to_client(forge(Item(sid, b"")))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_credit_lets_the_server_send_more_items() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=0))
    sid = pair.call(call_type=STREAM)
    assert pair.to_server(pair.client.send_credit(sid, 2)) == [Credit(sid, 2)]
    assert pair.server.stream_credit(sid) == 2
    data = pair.server.send_item(sid, b"1") + pair.server.send_item(sid, b"2")
    assert pair.to_client(data) == [Item(sid, b"1"), Item(sid, b"2")]


def test_credit_adds_to_what_is_left_never_replaces_it() -> None:
    # Spec §8.5: each CREDIT grants n more items on top of the unused credit.
    pair = ConnectionPair(client=Settings(initial_stream_credit=3))
    sid = pair.call(call_type=STREAM)
    pair.to_client(pair.server.send_item(sid, b"1"))  # 2 left of the initial 3
    pair.to_server(pair.client.send_credit(sid, 2) + pair.client.send_credit(sid, 1))
    assert pair.server.stream_credit(sid) == 5
    data = b"".join(pair.server.send_item(sid, b"%d" % i) for i in range(5))
    assert len(pair.to_client(data)) == 5
    assert pair.server.stream_credit(sid) == 0
    with pytest.raises(LocalProtocolError):
        pair.server.send_item(sid, b"one too many")


def test_credit_on_a_unary_stream_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(LocalProtocolError, match="CREDIT is for server-streams"):
        pair.client.send_credit(sid, 1)


def test_credit_past_the_limit_is_a_flow_control_error() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=2**31 - 1))
    sid = pair.call(call_type=STREAM)
    with pytest.raises(RemoteProtocolError, match="over 2147483647") as info:
        pair.to_server(forge(Credit(sid, 1)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_credit_may_reach_the_limit_exactly() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=2**31 - 2))
    sid = pair.call(call_type=STREAM)
    assert pair.to_server(forge(Credit(sid, 1))) == [Credit(sid, 1)]
    assert pair.server.stream_credit(sid) == 2**31 - 1


def test_granting_credit_past_the_limit_is_refused() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=2**31 - 2))
    sid = pair.call(call_type=STREAM)
    assert pair.to_server(pair.client.send_credit(sid, 1)) == [Credit(sid, 1)]  # to the limit
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send_credit(sid, 1)
    assert info.value.message == f"CREDIT 1 would take stream {sid} over 2147483647"
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_granting_credit_on_a_stream_never_opened_is_refused_by_name() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match=r"^can't send CREDIT on stream 5: never opened"):
        pair.client.send_credit(5, 1)


def test_a_stream_that_is_not_open_has_no_credit() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=3))
    sid = pair.call(call_type=STREAM)
    pair.to_client(pair.server.send_end(sid))
    assert pair.server.stream_credit(sid) == 0
    assert pair.server.stream_credit(sid + 1) == 0


def test_credit_for_a_stream_that_just_ended_is_ignored_by_the_server() -> None:
    pair = ConnectionPair()
    sid = pair.call(call_type=STREAM)
    end = pair.server.send_end(sid)
    assert pair.to_server(forge(Credit(sid, 5))) == []  # crossed the END in flight
    pair.to_client(end)
    assert pair.client.send_credit(sid, 5) == b""


# -- concurrent stream limit ----------------------------------------------------------------


def test_a_client_at_the_stream_limit_cannot_open_another() -> None:
    pair = ConnectionPair(server=Settings(max_concurrent_streams=2))
    pair.call()
    assert pair.client.available_streams == 1
    pair.call()
    assert not pair.client.can_open_stream()
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send_request(pair.client.next_stream_id, "s/m", b"")
    assert info.value.message == (
        "2 streams open, the server's max_concurrent_streams; wait until can_open_stream()"
    )
    assert info.value.code is ErrorCode.TOO_MANY_STREAMS


def test_a_request_beyond_the_stream_limit_is_a_protocol_error() -> None:
    pair = ConnectionPair(server=Settings(max_concurrent_streams=1))
    pair.call()
    with pytest.raises(RemoteProtocolError) as info:
        pair.to_server(forge(Request(2, "s/m", b"")))
    assert info.value.message == (
        "REQUEST 2 opens stream number 2; our max_concurrent_streams is 1"
    )
    assert info.value.code is ErrorCode.TOO_MANY_STREAMS


def test_a_stream_slot_frees_when_the_terminal_frame_arrives() -> None:
    pair = ConnectionPair(server=Settings(max_concurrent_streams=1))
    sid = pair.call()
    response = pair.server.send_response(sid, b"")
    assert not pair.client.can_open_stream()  # the server's slot is free, ours not yet
    pair.to_client(response)
    assert pair.client.can_open_stream()


# -- cancellation ---------------------------------------------------------------------------


def test_cancel_reaches_the_server_once() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    assert pair.to_server(pair.client.send_cancel(sid)) == [Cancel(sid)]
    assert pair.client.send_cancel(sid) == b""
    assert pair.to_server(forge(Cancel(sid))) == []  # a duplicate from a sloppy peer
    assert pair.server.stream_state(sid) is StreamState.CANCELLING


def test_a_cancelled_stream_keeps_its_slot_until_the_terminal_frame() -> None:
    pair = ConnectionPair(server=Settings(max_concurrent_streams=1))
    sid = pair.call()
    pair.to_server(pair.client.send_cancel(sid))
    assert pair.client.stream_state(sid) is StreamState.CANCELLING
    assert not pair.client.can_open_stream()
    pair.to_client(pair.server.send_error(sid, Status.CANCELLED))
    assert pair.client.can_open_stream()


def test_a_response_after_cancel_is_delivered_and_closes_the_stream() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    cancel = pair.client.send_cancel(sid)
    response = pair.server.send_response(sid, b"done")  # crosses the CANCEL in flight
    assert pair.to_server(cancel) == []
    assert pair.to_client(response) == [Response(sid, b"done")]
    assert pair.client.stream_state(sid) is StreamState.CLOSED


def test_cancel_after_the_stream_closed_sends_nothing() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    pair.to_client(pair.server.send_response(sid, b""))
    assert pair.client.send_cancel(sid) == b""


def test_cancel_for_a_stream_never_opened_is_refused() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match=r"^can't send CANCEL on stream 1: never opened"):
        pair.client.send_cancel(1)


def test_a_remote_cancel_for_a_stream_never_opened_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError, match="CANCEL for stream 3, never opened"):
        pair.to_server(forge(Cancel(3)))


# -- limits ---------------------------------------------------------------------------------


def test_metadata_over_the_peers_limit_is_refused() -> None:
    pair = ConnectionPair(server=Settings(max_metadata_size=10))
    with pytest.raises(LocalProtocolError, match="metadata is 11 bytes") as info:
        pair.client.send_request(1, "s/m", b"", metadata={"k": "é" * 5})  # 1 + 2 * 5 bytes
    assert info.value.code is ErrorCode.METADATA_TOO_LARGE
    assert pair.client.next_stream_id == 1  # the failed call consumed nothing


def test_received_metadata_over_our_limit_is_a_protocol_error() -> None:
    pair = ConnectionPair(server=Settings(max_metadata_size=10))
    with pytest.raises(RemoteProtocolError, match="11 bytes of metadata") as info:
        pair.to_server(forge(Request(1, "s/m", b"", None, {"key": "12345678"})))
    assert info.value.code is ErrorCode.METADATA_TOO_LARGE


def test_metadata_size_is_every_key_and_value_in_utf8_bytes() -> None:
    metadata = {"ab": "c", "é": "éé"}  # 2 + 1 + 2 + 4 bytes
    pair = ConnectionPair(server=Settings(max_metadata_size=8))
    with pytest.raises(LocalProtocolError, match="metadata is 9 bytes"):
        pair.client.send_request(1, "s/m", b"", metadata=metadata)
    pair = ConnectionPair(server=Settings(max_metadata_size=9))
    assert pair.to_server(pair.client.send_request(1, "s/m", b"", metadata=metadata))


def test_a_frame_over_the_peers_max_frame_size_is_refused_and_changes_nothing() -> None:
    pair = ConnectionPair(client=Settings(max_frame_size=16 * 1024))
    sid = pair.call()
    with pytest.raises(LocalProtocolError, match="over the peer's max_frame_size") as info:
        pair.server.send_response(sid, b"x" * 16 * 1024)
    assert info.value.code is ErrorCode.FRAME_SIZE_ERROR
    assert pair.server.stream_state(sid) is StreamState.OPEN
    pair.to_client(pair.server.send_error(sid, Status.RESOURCE_EXHAUSTED, "response too large"))


# -- GOAWAY ---------------------------------------------------------------------------------


def test_after_goaway_the_client_opens_no_new_streams() -> None:
    pair = ConnectionPair()
    pair.call()
    assert pair.to_client(pair.server.send_goaway()) == [GoAway(1, ErrorCode.NO_ERROR, "")]
    assert not pair.client.can_open_stream()
    with pytest.raises(LocalProtocolError, match="after the server's GOAWAY"):
        pair.client.send_request(2, "s/m", b"")


def test_streams_up_to_last_id_continue_after_goaway() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    pair.to_client(pair.server.send_goaway())
    assert pair.to_client(pair.server.send_response(sid, b"")) == [Response(sid, b"")]


def test_a_request_that_crossed_the_goaway_is_dropped_by_the_server() -> None:
    pair = ConnectionPair()
    first = pair.call()
    goaway = pair.server.send_goaway()
    late = pair.client.send_request(first + 1, "s/m", b"")
    assert pair.to_server(late) == []
    assert pair.server.stream_state(first + 1) is StreamState.CLOSED
    pair.to_client(goaway)
    assert pair.client.stream_state(first + 1) is StreamState.CLOSED  # refused: safe to retry
    assert pair.client.stream_state(first) is StreamState.OPEN


def test_a_request_at_the_goaways_last_id_is_still_processed() -> None:
    pair = ConnectionPair()
    pair.server.send_goaway(last_id=2)
    pair.call()
    assert [type(e) for e in pair.to_server(pair.client.send_request(2, "s/m", b""))] == [Request]


def test_a_servers_goaway_drops_its_streams_above_last_id_at_once() -> None:
    pair = ConnectionPair()
    first, second = pair.call(), pair.call()
    pair.server.send_goaway(last_id=first)
    assert pair.server.stream_state(second) is StreamState.CLOSED
    assert pair.server.open_streams == 1


def test_a_clients_goaway_says_last_id_0_and_keeps_its_streams() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    assert pair.to_server(pair.client.send_goaway()) == [GoAway(0)]
    assert pair.client.stream_state(sid) is StreamState.OPEN


def test_a_goaway_may_name_the_highest_stream_id() -> None:
    pair = ConnectionPair()
    assert pair.to_client(pair.server.send_goaway(last_id=2**63 - 1)) == [GoAway(2**63 - 1)]


def test_a_goaway_with_a_higher_last_id_than_before_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    pair.to_client(forge(GoAway(3)))
    with pytest.raises(RemoteProtocolError, match="only decrease: 3, then 4"):
        pair.to_client(forge(GoAway(4)))


def test_a_goaway_repeating_the_last_id_is_accepted() -> None:
    pair = ConnectionPair()
    pair.to_client(pair.server.send_goaway(last_id=0))
    assert pair.to_client(pair.server.send_goaway(last_id=0)) == [GoAway(0)]


def test_sending_a_goaway_with_a_higher_last_id_than_before_is_refused() -> None:
    pair = ConnectionPair()
    pair.server.send_goaway(last_id=3)
    with pytest.raises(LocalProtocolError, match="only decrease"):
        pair.server.send_goaway(last_id=4)


def test_a_request_after_the_clients_goaway_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    pair.to_server(pair.client.send_goaway())
    with pytest.raises(RemoteProtocolError, match="after the client's GOAWAY"):
        pair.to_server(forge(Request(1, "s/m", b"")))


def test_goaway_can_be_sent_after_a_remote_protocol_error() -> None:
    server = Connection(Role.SERVER)
    server.initiate()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(b"garbage")
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    data = server.send_goaway(info.value.code, info.value.message)
    assert FrameDecoder().receive_data(data) == [
        GoAway(0, ErrorCode.PROTOCOL_ERROR, info.value.message)
    ]


# -- keepalive and end of stream ------------------------------------------------------------


def test_ping_and_pong_round_trip() -> None:
    pair = ConnectionPair()
    (ping,) = pair.to_server(pair.client.send_ping(42))
    assert ping == Ping(42)
    assert pair.to_client(pair.server.send_pong(ping.opaque)) == [Pong(42)]


@pytest.mark.parametrize("opaque", [0, 2**63 - 1])
def test_ping_and_pong_carry_any_opaque_in_range(opaque: int) -> None:
    pair = ConnectionPair()
    assert pair.to_server(pair.client.send_ping(opaque)) == [Ping(opaque)]
    assert pair.to_client(pair.server.send_pong(opaque)) == [Pong(opaque)]


def test_a_ping_carries_0_by_default() -> None:
    pair = ConnectionPair()
    assert pair.to_server(pair.client.send_ping()) == [Ping(0)]


def test_a_clean_close_between_frames_is_an_event() -> None:
    pair = ConnectionPair()
    assert pair.to_server(b"") == [ConnectionClosed()]


def test_a_close_before_any_byte_is_a_clean_close() -> None:
    assert Connection(Role.SERVER).receive_data(b"") == [ConnectionClosed()]


def test_a_close_in_the_middle_of_a_frame_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    data = pair.client.send_request(1, "s/m", b"payload")
    pair.to_server(data[:-3])
    with pytest.raises(RemoteProtocolError, match=r"in the middle of a frame, \d+ bytes into it$"):
        pair.to_server(b"")


def test_a_close_during_the_preface_is_a_protocol_error() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(MAGIC[:3])
    with pytest.raises(RemoteProtocolError, match="during the preface"):
        server.receive_data(b"")


def test_receiving_after_the_close_is_refused() -> None:
    pair = ConnectionPair()
    pair.to_server(b"")
    with pytest.raises(LocalProtocolError, match="after end of stream"):
        pair.to_server(forge(Ping(1)))


def test_receiving_after_a_protocol_error_raises_again() -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError):
        pair.to_server(forge(Cancel(9)))
    with pytest.raises(RemoteProtocolError, match="after a protocol error: CANCEL"):
        pair.to_server(forge(Ping(1)))


def test_receiving_after_a_protocol_error_raises_with_its_code() -> None:
    pair = ConnectionPair(client=Settings(initial_stream_credit=0))
    sid = pair.call(call_type=STREAM)
    with pytest.raises(RemoteProtocolError):
        pair.to_client(forge(Item(sid, b"")))
    with pytest.raises(RemoteProtocolError) as info:
        pair.to_client(forge(Ping(1)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


# -- argument checking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda c: c.send_request(2**63, "s/m", b""), "stream_id must be at most"),
        (lambda c: c.send_request(1, "s/m", b"", timeout_ms=-1), "timeout_ms must be >= 0"),
        (lambda c: c.send_credit(1, 0), "n must be in"),
        (lambda c: c.send_ping(-1), "opaque must be in"),
        (lambda c: c.send_goaway(last_id=-1), "last_id must be in"),
    ],
    ids=["stream_id", "timeout_ms", "credit", "opaque", "last_id"],
)
def test_out_of_range_arguments_raise_value_error(
    operation: Callable[[Connection], bytes], message: str
) -> None:
    pair = ConnectionPair()
    with pytest.raises(ValueError, match=message):
        operation(pair.client)


def test_goaway_before_initiate_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match=r"^can't send GOAWAY before initiate\(\)$"):
        Connection(Role.SERVER).send_goaway()


def test_a_client_opens_no_streams_after_its_own_goaway() -> None:
    pair = ConnectionPair()
    pair.client.send_goaway()
    with pytest.raises(LocalProtocolError, match=r"^can't open a stream after sending GOAWAY$"):
        pair.client.send_request(1, "s/m", b"")


def test_a_repeated_goaway_keeps_the_earlier_lower_last_id() -> None:
    pair = ConnectionPair()
    pair.server.send_goaway(last_id=0)
    pair.to_server(pair.client.send_request(1, "s/m", b""))
    assert pair.to_client(pair.server.send_goaway()) == [GoAway(0)]


def test_sending_a_request_with_a_used_id_is_refused() -> None:
    pair = ConnectionPair()
    pair.to_client(pair.server.send_response(pair.call(), b""))
    pair.call()
    with pytest.raises(LocalProtocolError) as info:
        pair.client.send_request(1, "s/m", b"")
    assert info.value.message == (
        "stream ids must increase: got 1, but 2 was already used (see next_stream_id)"
    )


def test_end_on_a_unary_stream_is_refused() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(LocalProtocolError, match="unary: send RESPONSE, not END"):
        pair.server.send_end(sid)


def test_end_on_a_closed_stream_is_refused_by_name() -> None:
    pair = ConnectionPair()
    sid = pair.call(call_type=STREAM)
    pair.server.send_end(sid)
    with pytest.raises(LocalProtocolError, match=rf"^can't send END on stream {sid}: it is closed"):
        pair.server.send_end(sid)


@pytest.mark.parametrize(
    ("kind", "send"),
    [
        ("RESPONSE", lambda c, sid: c.send_response(sid, b"")),
        ("ITEM", lambda c, sid: c.send_item(sid, b"")),
        ("ERROR", lambda c, sid: c.send_error(sid, Status.INTERNAL)),
    ],
    ids=["response", "item", "error"],
)
def test_a_server_frame_on_a_closed_stream_is_refused_by_name(
    kind: str, send: Callable[[Connection, int], bytes]
) -> None:
    pair = ConnectionPair()
    sid = pair.call(call_type=STREAM if kind == "ITEM" else CallType.UNARY)
    pair.server.send_error(sid, Status.CANCELLED)
    with pytest.raises(LocalProtocolError, match=rf"^can't send {kind} on stream {sid}: it is"):
        send(pair.server, sid)


def test_a_server_frame_from_a_client_is_refused_by_name() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match=r"^only a server sends RESPONSE; this is a"):
        pair.client.send_response(1, b"")


def test_a_client_frame_from_a_server_is_refused_by_name() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match=r"^only a client sends CANCEL; this is a"):
        pair.server.send_cancel(1)


def test_a_server_frame_before_the_handshake_is_refused_by_name() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match=r"^can't send RESPONSE before the HELLO"):
        server.send_response(1, b"")


def test_a_client_frame_before_the_handshake_is_refused_by_name() -> None:
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError, match=r"^can't send CANCEL before the HELLO"):
        client.send_cancel(1)


def test_cancel_for_stream_0_is_refused() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match="never opened"):
        pair.client.send_cancel(0)


def test_a_stream_id_never_used_is_idle_and_0_is_never_used() -> None:
    pair = ConnectionPair()
    assert pair.client.stream_state(0) is StreamState.IDLE
    sid = pair.call()
    assert pair.client.stream_state(sid) is StreamState.OPEN
    assert pair.client.stream_state(0) is StreamState.IDLE


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (End(1), "END on unary stream 1"),
        (Item(2, b""), "ITEM for stream 2, never opened"),
        (End(2), "END for stream 2, never opened"),
        (Error(2, Status.INTERNAL), "ERROR for stream 2, never opened"),
    ],
    ids=["end-on-unary", "item-unopened", "end-unopened", "error-unopened"],
)
def test_server_frames_on_the_wrong_stream_are_protocol_errors(frame: Frame, message: str) -> None:
    pair = ConnectionPair()
    pair.call()
    with pytest.raises(RemoteProtocolError, match=message):
        pair.to_client(forge(frame))


def test_remote_credit_on_a_unary_stream_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    sid = pair.call()
    with pytest.raises(RemoteProtocolError, match="CREDIT on unary stream"):
        pair.to_server(forge(Credit(sid, 1)))
