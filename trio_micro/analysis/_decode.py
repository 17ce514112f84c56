"""Decoding JSON-lines bytes into :class:`~trio_micro.observe.CallRecord`, counting bad lines.

The fast path hands a whole chunk of lines to msgspec at once
(:meth:`msgspec.json.Decoder.decode_lines`). Only when that fails (a malformed line, or a
line that is some other event) is the chunk cut into pieces of about 64 KiB that are tried
the same way, and only the pieces that fail again are decoded line by line, so a few bad
lines cost little and every bad line is counted exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import msgspec

from ..observe._schema import CALL_EVENTS, CallRecord

__all__ = ["MALFORMED_KINDS", "iter_call_records"]

#: The reasons a line is counted as malformed.
MALFORMED_KINDS: Final = ("invalid_json", "not_utf8", "missing_field", "wrong_type")

_PIECE: Final = 64 * 1024
_DECODER: Final = msgspec.json.Decoder(CallRecord)


class _EventOnly(msgspec.Struct):
    event: str | None = None


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventOnly)


class _Tally:
    """Counts of what was not a usable call record; merged by :class:`SummaryBuilder`."""

    __slots__ = ("examples", "malformed", "other_events")

    def __init__(self) -> None:
        self.other_events = 0
        self.malformed: dict[str, int] = {}
        # kind -> first error message seen, to show what was wrong
        self.examples: dict[str, str] = {}

    def bad(self, kind: str, message: str) -> None:
        self.malformed[kind] = self.malformed.get(kind, 0) + 1
        self.examples.setdefault(kind, message)


def decode_chunk(data: bytes, tally: _Tally) -> list[CallRecord]:
    """Decode complete JSON lines; count other events and malformed lines in ``tally``.

    Call records are returned in order; lines that are not call records are not. Blank
    lines are skipped. The last line may lack its newline.
    """
    try:
        records = _DECODER.decode_lines(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    else:
        return _keep_call_events(records, tally)
    if len(data) <= _PIECE:
        return _decode_each_line(data.split(b"\n"), tally)
    out: list[CallRecord] = []
    start = 0
    end = len(data)
    while start < end:
        cut = data.find(b"\n", min(start + _PIECE, end - 1))
        stop = end if cut < 0 else cut + 1
        piece = data[start:stop]
        try:
            records = _DECODER.decode_lines(piece)
        except (msgspec.DecodeError, UnicodeDecodeError):
            out += _decode_each_line(piece.split(b"\n"), tally)
        else:
            out += _keep_call_events(records, tally)
        start = stop
    return out


def _keep_call_events(records: list[CallRecord], tally: _Tally) -> list[CallRecord]:
    events = CALL_EVENTS
    for record in records:
        if record.event not in events:
            break
    else:
        return records
    kept = [record for record in records if record.event in events]
    tally.other_events += len(records) - len(kept)
    return kept


def _decode_each_line(lines: Iterable[bytes | str], tally: _Tally) -> list[CallRecord]:
    out: list[CallRecord] = []
    decode = _DECODER.decode
    events = CALL_EVENTS
    for line in lines:
        if not line.strip():
            continue
        try:
            record = decode(line)
        except msgspec.ValidationError as exc:
            _classify_invalid(line, str(exc), tally)
            continue
        except msgspec.DecodeError as exc:
            tally.bad("invalid_json", str(exc))
            continue
        except UnicodeDecodeError as exc:
            tally.bad("not_utf8", str(exc))
            continue
        if record.event in events:
            out.append(record)
        else:
            tally.other_events += 1
    return out


def _classify_invalid(line: bytes | str, message: str, tally: _Tally) -> None:
    # A valid JSON object that is not a valid call record: some other event (skipped),
    # or a call record with a field missing or of the wrong type (malformed).
    try:
        event = _EVENT_DECODER.decode(line).event
    except msgspec.DecodeError:
        event = None
    if isinstance(event, str) and event not in CALL_EVENTS:
        tally.other_events += 1
    elif message.startswith("Object missing required field"):
        tally.bad("missing_field", message)
    else:
        tally.bad("wrong_type", message)


def iter_call_records(lines: Iterable[bytes | str]) -> Iterator[CallRecord]:
    """Yield the call records among JSON ``lines``, skipping other events and bad lines.

    Each item is one line (a trailing newline is allowed). Use
    :meth:`SummaryBuilder.add_json_lines` to have the skipped lines counted.
    """
    tally = _Tally()
    for line in lines:
        yield from _decode_each_line((line,), tally)
