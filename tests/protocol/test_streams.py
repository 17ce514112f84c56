"""Client-stream and bidi-stream calls in the sans-io core: every transition of the client's
half, flow control both ways, and what ends both halves."""

from __future__ import annotations

import pytest

from trio_micro.protocol import (
    CallType,
    Cancel,
    Credit,
    End,
    Error,
    ErrorCode,
    Item,
    LocalProtocolError,
    RemoteProtocolError,
    Response,
    Settings,
    Status,
    StreamState,
)

from .test_connection import ConnectionPair, forge

UP = CallType.CLIENT_STREAM
BIDI = CallType.BIDI_STREAM


def pair(credit: int = 4) -> ConnectionPair:
    """Both sides grant ``credit`` items on a new stream."""
    settings = Settings(initial_stream_credit=credit)
    return ConnectionPair(client=settings, server=settings)


# -- the client's half -------------------------------------------------------------------


@pytest.mark.parametrize("call_type", [UP, BIDI])
def test_client_items_reach_the_server_in_order(call_type: CallType) -> None:
    p = pair()
    sid = p.call(call_type=call_type)
    data = p.client.send_item(sid, b"a") + p.client.send_item(sid, b"b")
    assert p.to_server(data) == [Item(sid, b"a"), Item(sid, b"b")]


@pytest.mark.parametrize("call_type", [UP, BIDI])
def test_end_from_the_client_half_closes_the_stream(call_type: CallType) -> None:
    p = pair()
    sid = p.call(call_type=call_type)
    assert p.to_server(p.client.send_end(sid)) == [End(sid)]
    assert p.client.half_closed(sid)
    assert p.server.half_closed(sid)
    assert p.server.stream_state(sid) is StreamState.OPEN  # the answer is still due


def test_a_client_stream_is_answered_by_one_response() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.to_server(p.client.send_item(sid, b"a") + p.client.send_end(sid))
    assert p.to_client(p.server.send_response(sid, b"sum")) == [Response(sid, b"sum")]
    assert p.client.stream_state(sid) is StreamState.CLOSED
    assert p.client.open_streams == p.server.open_streams == 0


def test_a_bidi_stream_carries_items_both_ways_then_end() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    p.to_server(p.client.send_item(sid, b"ping"))
    assert p.to_client(p.server.send_item(sid, b"pong")) == [Item(sid, b"pong")]
    p.to_server(p.client.send_end(sid))
    assert p.to_client(p.server.send_end(sid)) == [End(sid)]
    assert p.client.stream_state(sid) is StreamState.CLOSED


def test_the_server_may_answer_before_the_client_half_closes() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    assert p.to_client(p.server.send_response(sid, b"early")) == [Response(sid, b"early")]
    assert p.client.stream_state(sid) is StreamState.CLOSED


def test_sending_an_item_after_the_server_ended_the_call_says_so() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.to_client(p.server.send_error(sid, Status.INTERNAL))
    with pytest.raises(LocalProtocolError, match="the call has ended"):
        p.client.send_item(sid, b"late")


def test_items_that_crossed_the_servers_answer_are_ignored() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    late = p.client.send_item(sid, b"late") + p.client.send_end(sid)
    p.server.send_response(sid, b"early")
    assert p.to_server(late) == []


def test_sending_an_item_after_half_close_is_refused() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    p.client.send_end(sid)
    with pytest.raises(LocalProtocolError, match="half-closed"):
        p.client.send_item(sid, b"x")


def test_half_closing_twice_is_refused() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.client.send_end(sid)
    with pytest.raises(LocalProtocolError, match="half-closed"):
        p.client.send_end(sid)


def test_a_remote_item_after_the_clients_end_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    with pytest.raises(RemoteProtocolError, match="after the client's END"):
        p.to_server(forge(End(sid), Item(sid, b"x")))


@pytest.mark.parametrize("call_type", [CallType.UNARY, CallType.SERVER_STREAM])
def test_a_client_may_not_send_items_on_calls_without_a_client_half(
    call_type: CallType,
) -> None:
    p = pair()
    sid = p.call(call_type=call_type)
    with pytest.raises(LocalProtocolError, match="the client sends no ITEM"):
        p.client.send_item(sid, b"x")


@pytest.mark.parametrize("frame", [Item(1, b"x"), End(1)])
def test_client_frames_on_a_server_stream_are_protocol_errors(frame: Item | End) -> None:
    p = pair()
    sid = p.call(call_type=CallType.SERVER_STREAM)
    assert sid == 1
    with pytest.raises(RemoteProtocolError, match="from the client on SERVER_STREAM"):
        p.to_server(forge(frame))


def test_a_client_item_for_a_stream_never_opened_is_a_protocol_error() -> None:
    p = pair()
    with pytest.raises(RemoteProtocolError, match="never opened"):
        p.to_server(forge(Item(7, b"x")))


def test_a_client_item_on_a_stream_never_opened_is_refused_locally() -> None:
    p = pair()
    with pytest.raises(LocalProtocolError, match="never opened"):
        p.client.send_item(7, b"x")


def test_a_response_on_a_bidi_stream_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    with pytest.raises(RemoteProtocolError, match="RESPONSE on server-stream"):
        p.to_client(forge(Response(sid, b"x")))


def test_an_item_from_the_server_on_a_client_stream_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    with pytest.raises(RemoteProtocolError, match="ITEM on unary stream"):
        p.to_client(forge(Item(sid, b"x")))


def test_the_server_may_not_send_items_on_a_client_stream() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    with pytest.raises(LocalProtocolError, match="is unary"):
        p.server.send_item(sid, b"x")


# -- flow control of the client's half ------------------------------------------------------


def test_the_client_starts_with_the_servers_initial_credit() -> None:
    p = ConnectionPair(
        client=Settings(initial_stream_credit=9), server=Settings(initial_stream_credit=3)
    )
    sid = p.call(call_type=BIDI)
    assert p.client.send_credit_available(sid) == 3
    assert p.server.send_credit_available(sid) == 9


def test_a_client_item_without_credit_is_refused_and_changes_nothing() -> None:
    p = pair(credit=1)
    sid = p.call(call_type=UP)
    p.client.send_item(sid, b"a")
    with pytest.raises(LocalProtocolError, match="no credit") as info:
        p.client.send_item(sid, b"b")
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    assert p.client.send_credit_available(sid) == 0


def test_a_client_that_ignores_credit_is_a_flow_control_error() -> None:
    p = pair(credit=1)
    sid = p.call(call_type=UP)
    with pytest.raises(RemoteProtocolError) as info:
        p.to_server(forge(Item(sid, b"a"), Item(sid, b"b")))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_server_credit_lets_the_client_send_more() -> None:
    p = pair(credit=1)
    sid = p.call(call_type=UP)
    p.to_server(p.client.send_item(sid, b"a"))
    assert p.to_client(p.server.send_credit(sid, 2)) == [Credit(sid, 2)]
    assert p.client.send_credit_available(sid) == 2
    p.to_server(p.client.send_item(sid, b"b") + p.client.send_item(sid, b"c"))


def test_server_credit_past_the_limit_is_a_flow_control_error() -> None:
    p = pair(credit=1)
    sid = p.call(call_type=UP)
    with pytest.raises(RemoteProtocolError) as info:
        p.to_client(forge(Credit(sid, 2**31 - 1)))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_granting_credit_past_the_limit_is_refused() -> None:
    p = pair(credit=1)
    sid = p.call(call_type=UP)
    with pytest.raises(LocalProtocolError) as info:
        p.server.send_credit(sid, 2**31 - 1)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_server_credit_on_a_server_stream_is_refused() -> None:
    p = pair()
    sid = p.call(call_type=CallType.SERVER_STREAM)
    with pytest.raises(LocalProtocolError, match="the client sends no ITEMs"):
        p.server.send_credit(sid, 1)


def test_remote_server_credit_on_a_unary_stream_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call()
    with pytest.raises(RemoteProtocolError, match="CREDIT from the server on UNARY"):
        p.to_client(forge(Credit(sid, 1)))


def test_remote_server_credit_for_a_closed_stream_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.to_client(p.server.send_response(sid, b""))
    with pytest.raises(RemoteProtocolError, match="already closed"):
        p.to_client(forge(Credit(sid, 1)))


def test_server_credit_after_the_clients_end_sends_nothing() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.to_server(p.client.send_end(sid))
    assert p.server.send_credit(sid, 1) == b""


def test_server_credit_after_its_answer_sends_nothing() -> None:
    p = pair()
    sid = p.call(call_type=UP)
    p.server.send_response(sid, b"")
    assert p.server.send_credit(sid, 1) == b""


def test_server_credit_for_a_stream_never_opened_is_refused() -> None:
    p = pair()
    with pytest.raises(LocalProtocolError, match="never opened"):
        p.server.send_credit(5, 1)


def test_credit_that_crossed_the_clients_end_is_absorbed() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    grant = p.server.send_credit(sid, 1)
    p.to_server(p.client.send_end(sid))
    assert p.to_client(grant) == []
    assert p.client.send_credit_available(sid) == 0


def test_both_directions_count_credit_independently() -> None:
    p = pair(credit=2)
    sid = p.call(call_type=BIDI)
    p.to_server(p.client.send_item(sid, b"a"))
    assert p.server.stream_credit(sid) == 2  # the server's own ITEMs are untouched
    p.to_client(p.server.send_item(sid, b"b"))
    assert p.client.send_credit_available(sid) == 1


# -- cancellation and deadlines end both halves -----------------------------------------


@pytest.mark.parametrize("call_type", [UP, BIDI])
def test_cancel_ends_the_clients_half(call_type: CallType) -> None:
    p = pair()
    sid = p.call(call_type=call_type)
    assert p.to_server(p.client.send_cancel(sid)) == [Cancel(sid)]
    assert p.client.half_closed(sid)
    assert p.server.half_closed(sid)
    with pytest.raises(LocalProtocolError, match="cancelled"):
        p.client.send_item(sid, b"x")
    with pytest.raises(LocalProtocolError, match="cancelled"):
        p.client.send_end(sid)
    assert p.client.send_credit_available(sid) == 0


def test_a_remote_item_after_cancel_is_a_protocol_error() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    with pytest.raises(RemoteProtocolError, match="after CANCEL"):
        p.to_server(forge(Cancel(sid), Item(sid, b"x")))


@pytest.mark.parametrize("call_type", [UP, BIDI])
def test_a_cancelled_stream_still_ends_with_the_servers_terminal_frame(
    call_type: CallType,
) -> None:
    p = pair()
    sid = p.call(call_type=call_type)
    p.to_server(p.client.send_cancel(sid))
    assert p.client.stream_state(sid) is StreamState.CANCELLING
    events = p.to_client(p.server.send_error(sid, Status.CANCELLED))
    assert events == [Error(sid, Status.CANCELLED)]
    assert p.client.open_streams == p.server.open_streams == 0


def test_a_deadline_error_ends_both_halves() -> None:
    p = pair()
    sid = p.call(call_type=BIDI)
    p.to_client(p.server.send_error(sid, Status.DEADLINE_EXCEEDED))
    assert not p.client.half_closed(sid)
    with pytest.raises(LocalProtocolError, match="the call has ended"):
        p.client.send_end(sid)
    assert p.client.send_credit_available(sid) == 0


def test_a_client_item_on_a_stream_refused_by_goaway_is_ignored() -> None:
    p = pair()
    p.server.send_goaway(last_id=0)
    late = forge(Item(1, b"x"))
    p.to_server(p.client.send_request(1, "svc/m", b"", call_type=UP))
    assert p.to_server(late) == []
