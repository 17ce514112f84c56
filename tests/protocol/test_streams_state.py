"""A hypothesis state machine driving both ends of a connection through every call shape.

Each rule is something a well-behaved client or server may do at any moment (open a call of
any shape, send an item within its credit, half-close, cancel, grant credit, answer), and the
bytes in flight each way are delivered in arbitrary pieces at arbitrary times. Invariants:
a well-behaved pair never trips a protocol error, no side ever receives more items on a
stream than it granted credit for, and once nothing is in flight both ends agree on which
streams are open.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_micro.protocol import (
    CallType,
    Connection,
    Credit,
    End,
    Error,
    Item,
    Request,
    Response,
    Role,
    Settings,
    Status,
    StreamState,
)

_SHAPES = list(CallType)
_CLIENT_SENDS = {CallType.CLIENT_STREAM, CallType.BIDI_STREAM}
_SERVER_SENDS = {CallType.SERVER_STREAM, CallType.BIDI_STREAM}
_CREDIT = 3
_LIVE = {StreamState.OPEN, StreamState.CANCELLING}


class _Ledger:
    """What one end granted and received on one stream, to check the peer kept to it."""

    def __init__(self, granted: int) -> None:
        self.granted = granted
        self.received = 0


class BothEnds(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        conf = Settings(initial_stream_credit=_CREDIT, max_concurrent_streams=4)
        self.client = Connection(Role.CLIENT, settings=conf)
        self.server = Connection(Role.SERVER, settings=conf)
        self.server.receive_data(self.client.initiate())
        self.client.receive_data(self.server.initiate())
        self.up = bytearray()  # client -> server, in flight
        self.down = bytearray()  # server -> client, in flight
        self.shapes: dict[int, CallType] = {}
        self.server_ledger: dict[int, _Ledger] = {}  # the client's items
        self.client_ledger: dict[int, _Ledger] = {}  # the server's items

    # -- helpers ------------------------------------------------------------------------

    def _client_open(self) -> list[int]:
        return [s for s in self.shapes if self.client.stream_state(s) in _LIVE]

    def _server_open(self) -> list[int]:
        return [s for s in self.shapes if self.server.stream_state(s) in _LIVE]

    # -- the client -----------------------------------------------------------------------

    @precondition(lambda self: self.client.can_open_stream())
    @rule(shape=st.sampled_from(_SHAPES))
    def open_call(self, shape: CallType) -> None:
        sid = self.client.next_stream_id
        self.up += self.client.send_request(sid, "svc/m", b"", call_type=shape)
        self.shapes[sid] = shape
        self.client_ledger[sid] = _Ledger(_CREDIT if shape in _SERVER_SENDS else 0)

    @rule(data=st.data())
    def client_sends_item(self, data: st.DataObject) -> None:
        ready = [s for s in self._client_open() if self.client.send_credit_available(s) > 0]
        if ready:
            self.up += self.client.send_item(data.draw(st.sampled_from(ready)), b"up")

    @rule(data=st.data())
    def client_half_closes(self, data: st.DataObject) -> None:
        ready = [
            s
            for s in self._client_open()
            if self.shapes[s] in _CLIENT_SENDS and not self.client.half_closed(s)
        ]
        if ready:
            self.up += self.client.send_end(data.draw(st.sampled_from(ready)))

    @rule(data=st.data())
    def client_cancels(self, data: st.DataObject) -> None:
        streams = self._client_open()
        if streams:
            self.up += self.client.send_cancel(data.draw(st.sampled_from(streams)))

    @rule(data=st.data(), n=st.integers(1, 3))
    def client_grants_credit(self, data: st.DataObject, n: int) -> None:
        streams = [s for s in self._client_open() if self.shapes[s] in _SERVER_SENDS]
        if streams:
            sid = data.draw(st.sampled_from(streams))
            sent = self.client.send_credit(sid, n)
            if sent:
                self.client_ledger[sid].granted += n
            self.up += sent

    # -- the server -----------------------------------------------------------------------

    @rule(data=st.data())
    def server_sends_item(self, data: st.DataObject) -> None:
        ready = [s for s in self._server_open() if self.server.send_credit_available(s) > 0]
        if ready:
            self.down += self.server.send_item(data.draw(st.sampled_from(ready)), b"down")

    @rule(data=st.data(), n=st.integers(1, 3))
    def server_grants_credit(self, data: st.DataObject, n: int) -> None:
        streams = [s for s in self._server_open() if self.shapes[s] in _CLIENT_SENDS]
        if streams:
            sid = data.draw(st.sampled_from(streams))
            sent = self.server.send_credit(sid, n)
            if sent:
                self.server_ledger[sid].granted += n
            self.down += sent

    @rule(data=st.data(), fail=st.booleans())
    def server_answers(self, data: st.DataObject, fail: bool) -> None:
        streams = self._server_open()
        if not streams:
            return
        sid = data.draw(st.sampled_from(streams))
        if fail:
            self.down += self.server.send_error(sid, Status.CANCELLED)
        elif self.shapes[sid] in _SERVER_SENDS:
            self.down += self.server.send_end(sid)
        else:
            self.down += self.server.send_response(sid, b"done")

    # -- the network ----------------------------------------------------------------------

    @rule(size=st.integers(1, 64))
    def deliver_up(self, size: int) -> None:
        chunk, self.up = bytes(self.up[:size]), self.up[size:]
        for event in self.server.receive_data(chunk) if chunk else []:
            if isinstance(event, Request):
                shape = self.shapes[event.id]
                self.server_ledger[event.id] = _Ledger(_CREDIT if shape in _CLIENT_SENDS else 0)
            elif isinstance(event, Item):
                self.server_ledger[event.id].received += 1
            else:
                assert isinstance(event, End | Credit) or type(event).__name__ == "Cancel"

    @rule(size=st.integers(1, 64))
    def deliver_down(self, size: int) -> None:
        chunk, self.down = bytes(self.down[:size]), self.down[size:]
        for event in self.client.receive_data(chunk) if chunk else []:
            if isinstance(event, Item):
                self.client_ledger[event.id].received += 1
            else:
                assert isinstance(event, End | Error | Response | Credit)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def nobody_receives_more_than_it_granted(self) -> None:
        for ledger in (*self.server_ledger.values(), *self.client_ledger.values()):
            assert ledger.received <= ledger.granted

    @invariant()
    def the_server_never_has_more_streams_than_the_client(self) -> None:
        assert self.server.open_streams <= self.client.open_streams

    @invariant()
    def with_nothing_in_flight_both_ends_agree(self) -> None:
        if not self.up and not self.down:
            for sid in self.shapes:
                client_open = self.client.stream_state(sid) in _LIVE
                assert client_open == (self.server.stream_state(sid) in _LIVE)
                if client_open:
                    assert self.client.half_closed(sid) == self.server.half_closed(sid)


BothEnds.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBothEnds = BothEnds.TestCase
