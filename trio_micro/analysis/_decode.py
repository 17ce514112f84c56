"""Decoding JSON-lines bytes into lean rows, counting bad lines and other events.

Theory of operation: a whole chunk of lines goes to msgspec at once
(:meth:`msgspec.json.Decoder.decode_lines`), into :class:`_Row`, a struct with only the
fields the summary reads, every one optional, plus the summary's ``group_by`` fields (a
:class:`RowSchema` per set of them). Unknown keys are skipped by msgspec without building
them, and because nothing is required, a line of another event decodes too instead of
failing the chunk; the call records (and the events counted) are then picked out by their
``event`` with C-level list operations. Only when msgspec raises (a
line that is not JSON, not UTF-8, or has a value of the wrong type) is the chunk cut into
pieces of about 64 KiB that are tried the same way, and only the pieces that fail again
are decoded line by line, so a few bad lines cost little and each is counted exactly.

Required fields are checked afterwards (:func:`drop_incomplete`), and timestamps are
parsed in bulk by :func:`parse_times`: the ``YYYY-MM-DDTHH:MM:`` prefix through a small
cache and the seconds with :func:`float`, for the ``...Z`` form that our services write;
any other ISO-8601 form with an offset goes through :meth:`datetime.fromisoformat`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import compress, islice
from operator import attrgetter, itemgetter, le, not_
from typing import Annotated, Any, Final, Literal, TypeVar, cast

import msgspec

from ..observe import (
    CALL_EVENTS,
    CODE_OK,
    RPC_CALL_COMPLETE,
    RPC_CALL_FAILED,
    CallRecord,
)
from ..protocol import DECODE_ERRORS

__all__ = ["MALFORMED_KINDS", "iter_call_records"]

#: The reasons a line is counted as malformed.
MALFORMED_KINDS: Final = ("invalid_json", "not_utf8", "missing_field", "wrong_type")

_T = TypeVar("_T")
_PIECE: Final = 64 * 1024
# split_calls cuts out other events one by one when at most 1 row in _FEW is one.
_FEW: Final = 8
_MAX_MINUTES: Final = 4096


class _Row(msgspec.Struct, gc=False):
    """The fields of a log line that the summary counts; all optional (checked later).

    The fields shown only for a few sampled calls (slowest, errors) are left out: every
    field costs decoding time on every line. :class:`LineFinder` gets them when needed.
    """

    event: str | None = None
    timestamp: str | None = None
    service: str | None = None
    method: str | None = None
    server: str | None = None
    code: str | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None


class _FullRow(_Row, gc=False):
    """A row with the fields of a sampled call too."""

    peer: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    message: str | None = None


_FULL_DECODER: Final = msgspec.json.Decoder(_FullRow)
_RECORD_DECODER: Final = msgspec.json.Decoder(CallRecord)


class _EventOnly(msgspec.Struct):
    event: str | None = None


_EVENT_DECODER: Final = msgspec.json.Decoder(_EventOnly)
_EVENT: Final = attrgetter("event")
_TIMESTAMP: Final = attrgetter("timestamp")
_REQUIRED: Final = ("timestamp", "service", "method", "code", "duration_ms")
#: Fields a summary cannot group by: its own columns.
RESERVED_FIELDS: Final = frozenset(_Row.__struct_fields__)
#: The types a ``group_by`` field's value may have (an object or array is ``wrong_type``).
GroupValue = str | int | float | bool
_MINUTE: Final = itemgetter(slice(0, 17))  # "2026-11-26T10:00:"
_TENS: Final = b"012345"
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
# Only "T": stamps that sort as strings in time order (others take the slow path).
_MINUTE_RE: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):")


class _Tally:
    """Counts of what was not a usable call record; merged by ``SummaryBuilder``."""

    __slots__ = ("examples", "malformed", "other_events")

    def __init__(self) -> None:
        self.other_events = 0
        self.malformed: dict[str, int] = {}
        # kind -> first error message seen, to show what was wrong
        self.examples: dict[str, str] = {}

    def bad(self, kind: str, message: str, n: int = 1) -> None:
        self.malformed[kind] = self.malformed.get(kind, 0) + n
        self.examples.setdefault(kind, message)


class _Minutes(dict[str, float]):
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:`` prefixes, each parsed once (bounded)."""

    def __missing__(self, prefix: str) -> float:
        match = _MINUTE_RE.fullmatch(prefix)
        if match is None:
            raise KeyError(prefix)
        try:
            year, month, day, hour, minute = map(int, match.groups())
            value = datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()
        except ValueError:
            raise KeyError(prefix) from None
        if len(self) >= _MAX_MINUTES:
            self.clear()
        self[prefix] = value
        return value


_MINUTES: Final = _Minutes()


class _Vocabulary:
    """A decoder whose low-cardinality string fields are ``Literal`` types it learns.

    msgspec returns the one ``str`` object of a ``Literal`` for each occurrence, so every
    later hash and comparison of those fields (counting by ``(service, method, server,
    *group_by)``) hits a cached hash or an identity check instead of a fresh string: that
    halves the cost of counting. A value not yet known makes msgspec reject the chunk; the
    chunk is then decoded with plain ``str`` fields, its values are learnt and the decoder
    rebuilt. A field with more than :data:`_MAX_VOCABULARY` values, or a ``group_by``
    field with a value that is not a string, keeps its plain type, so that memory stays
    bounded.
    """

    __slots__ = ("decoder", "row_type", "values")

    def __init__(self, row_type: type[_Row], names: Iterable[str]) -> None:
        self.row_type = row_type
        self.values: dict[str, set[str] | None] = {name: set() for name in names}
        self.decoder: msgspec.json.Decoder[_Row] | None = None

    def learn(self, rows: list[_Row]) -> None:
        changed = False
        for name, known in self.values.items():
            if known is None:
                continue
            new = set(map(attrgetter(name), rows)) - known
            new.discard(None)
            if not new:
                continue
            changed = True
            if len(known) + len(new) > _MAX_VOCABULARY or not all(
                isinstance(value, str) for value in new
            ):
                self.values[name] = None
            else:
                known |= new
        if changed or self.decoder is None:
            self.decoder = self._build()

    def _build(self) -> msgspec.json.Decoder[_Row] | None:
        fields: list[tuple[str, Any, Any]] = []
        literal: Any = Literal
        for name, known in self.values.items():
            if known:
                # The constants themselves, so that comparing with them is an identity check.
                values = tuple(_CANONICAL.get(value, value) for value in sorted(known))
                fields.append((name, literal[values] | None, None))
        if not fields:
            return None
        row_type = msgspec.defstruct("_InternedRow", fields, bases=(self.row_type,), gc=False)
        return msgspec.json.Decoder(row_type)


_INTERNED: Final = ("event", "service", "method", "server", "code")
_CANONICAL: Final = {value: value for value in (RPC_CALL_COMPLETE, RPC_CALL_FAILED, CODE_OK)}
_MAX_VOCABULARY: Final = 1000


class RowSchema:
    """The row types and decoders for one set of ``group_by`` fields (see :func:`row_schema`).

    A field is decoded into the attribute ``group_<i>`` (its position in ``group_by``),
    so that any JSON key works, ``"http.status"`` too.
    """

    __slots__ = ("attributes", "full", "group_by", "row", "vocabulary")

    def __init__(self, group_by: tuple[str, ...]) -> None:
        self.group_by = group_by
        #: The attribute of each ``group_by`` field in a decoded row.
        self.attributes = tuple(f"group_{i}" for i in range(len(group_by)))
        extra: list[tuple[str, Any, Any]] = [
            (name, GroupValue | None, None) for name in self.attributes
        ]
        rename = dict(zip(self.attributes, group_by, strict=True))
        # Flat types (the fields of _Row or _FullRow and the extra ones), not subclasses:
        # msgspec frees a row faster the shallower its class hierarchy is.
        row_type: type[_Row] = _Row
        full_type: type[_Row] = _FullRow
        if group_by:
            row_type = cast(type[_Row], _flat_struct("_GroupedRow", _Row, extra, rename))
            full_type = cast(type[_Row], _flat_struct("_GroupedFullRow", _FullRow, extra, rename))
        self.row: msgspec.json.Decoder[_Row] = msgspec.json.Decoder(row_type)
        self.full: msgspec.json.Decoder[_Row] = msgspec.json.Decoder(full_type)
        self.vocabulary = _Vocabulary(row_type, (*_INTERNED, *self.attributes))


def _flat_struct(
    name: str, base: type[msgspec.Struct], extra: list[tuple[str, Any, Any]], rename: dict[str, str]
) -> type[msgspec.Struct]:
    fields = [(f.name, f.type, f.default) for f in msgspec.structs.fields(base)]
    return msgspec.defstruct(name, [*fields, *extra], gc=False, rename=rename)


@functools.cache
def row_schema(group_by: tuple[str, ...]) -> RowSchema:
    """The (shared) :class:`RowSchema` of ``group_by``, which has no field of :class:`_Row`."""
    return RowSchema(group_by)


_PLAIN: Final = row_schema(())


def decode_rows(data: bytes | bytearray, tally: _Tally, schema: RowSchema = _PLAIN) -> list[_Row]:
    """Decode complete JSON lines into rows, counting lines that are not JSON objects.

    Rows are returned in order, for every event (see :func:`split_calls`). Blank lines are
    skipped. The last line may lack its newline.
    """
    vocabulary = schema.vocabulary
    if vocabulary.decoder is not None:
        try:
            return vocabulary.decoder.decode_lines(data)
        except DECODE_ERRORS:
            pass
    rows = _decode_plain(data, tally, schema)
    vocabulary.learn(rows)
    return rows


def _decode_plain(data: bytes | bytearray, tally: _Tally, schema: RowSchema) -> list[_Row]:
    decoder = schema.row
    try:
        return decoder.decode_lines(data)
    except DECODE_ERRORS:
        pass
    if len(data) <= _PIECE:
        return decode_each_line(data.split(b"\n"), tally, schema=schema)
    out: list[_Row] = []
    start = 0
    end = len(data)
    while start < end:
        cut = data.find(b"\n", min(start + _PIECE, end - 1))
        stop = end if cut < 0 else cut + 1
        piece = data[start:stop]
        try:
            out += decoder.decode_lines(piece)
        except DECODE_ERRORS:
            out += decode_each_line(piece.split(b"\n"), tally, schema=schema)
        start = stop
    return out


def decode_each_line(
    lines: Iterable[bytes | bytearray | str],
    tally: _Tally,
    *,
    full: bool = False,
    schema: RowSchema = _PLAIN,
) -> list[_Row]:
    """Decode lines one at a time into rows (:class:`_FullRow` if ``full``); count bad ones."""
    out: list[_Row] = []
    decode = (schema.full if full else schema.row).decode
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(decode(line))
        except msgspec.ValidationError as exc:
            # A wrong type may be met before a string that is not UTF-8: the bytes decide.
            if _undecodable_kind(line) == "not_utf8":
                tally.bad("not_utf8", str(exc))
            else:
                _classify_invalid(line, str(exc), tally)
        except DECODE_ERRORS as exc:
            tally.bad(_undecodable_kind(line), str(exc))
    return out


def _undecodable_kind(line: bytes | bytearray | str) -> str:
    """``not_utf8`` for bytes that are not UTF-8, else ``invalid_json`` (error path only).

    msgspec before 0.23 raised :class:`UnicodeDecodeError` for a string with invalid UTF-8
    and 0.23 raises :class:`msgspec.DecodeError`; checking the bytes here classifies a line
    the same way on every version, and costs nothing on the fast path.
    """
    if isinstance(line, str):
        return "invalid_json"
    try:
        line.decode()
    except UnicodeDecodeError:
        return "not_utf8"
    return "invalid_json"


def _classify_invalid(line: bytes | bytearray | str, message: str, tally: _Tally) -> None:
    # Valid JSON that is not a valid row: some other event (skipped), or a call record
    # with a value of the wrong type, or not an object at all (malformed).
    try:
        event = _EVENT_DECODER.decode(line).event
    except DECODE_ERRORS:
        event = None
    if isinstance(event, str) and event not in CALL_EVENTS:
        tally.other_events += 1
    else:
        tally.bad("wrong_type", message)


def split_calls(
    rows: list[_Row], tally: _Tally, counted: tuple[str, ...] = ()
) -> tuple[list[_Row], list[_Row]]:
    """Return the call records and the records of the ``counted`` events among ``rows``.

    Every other event is counted in ``tally`` (the ``counted`` ones too); a row without
    ``event`` is malformed (``missing_field``).
    """
    events = list(map(_EVENT, rows))
    n = len(rows)
    calls = events.count(RPC_CALL_COMPLETE) + events.count(RPC_CALL_FAILED)
    if calls == n:
        return rows, []
    if len(counted) > 1:  # one scan to drop those absent, not one per event
        present = set(events)
        counted = tuple(event for event in counted if event in present)
    queries = sum(map(events.count, counted))
    if calls + queries == n and queries * _FEW <= n:
        # A few counted events among calls (the usual mix): find them with list.index
        # and cut them out with slices, instead of testing every row twice.
        tally.other_events += queries
        found = (
            _positions(events, counted[0])
            if len(counted) == 1
            else sorted(i for event in counted for i in _positions(events, event))
        )
        out: list[_Row] = []
        previous = 0
        for i in found:
            out += rows[previous:i]
            previous = i + 1
        out += rows[previous:]
        return out, list(map(rows.__getitem__, found))
    missing = events.count(None)
    if missing:
        tally.bad("missing_field", "Object missing required field `event`", missing)
    tally.other_events += n - calls - missing
    counted_rows = (
        list(compress(rows, map(frozenset(counted).__contains__, events))) if queries else []
    )
    return list(compress(rows, map(CALL_EVENTS.__contains__, events))), counted_rows


def _positions(items: list[Any], value: object) -> list[int]:
    """Where ``value`` occurs in ``items`` (one C-level scan, a Python step per hit)."""
    out: list[int] = []
    i = -1
    try:
        while True:
            i = items.index(value, i + 1)
            out.append(i)
    except ValueError:
        return out


def drop_incomplete(
    rows: Sequence[_T], times: list[float], positions: list[int], tally: _Tally
) -> tuple[list[_T], list[float], list[int]]:
    """Drop call rows that lack a required field, counting them as ``missing_field``.

    ``times`` and ``positions`` are lists parallel to ``rows``, filtered alike.
    """
    keep = [all(getattr(row, name) is not None for name in _REQUIRED) for row in rows]
    for row in compress(rows, map(not_, keep)):
        name = next(name for name in _REQUIRED if getattr(row, name) is None)
        tally.bad("missing_field", f"Object missing required field `{name}`")
    return list(compress(rows, keep)), list(compress(times, keep)), list(compress(positions, keep))


def parse_times(
    rows: list[_Row], tally: _Tally | None
) -> tuple[list[_Row], list[str] | list[float], Callable[[Any], float]]:
    """Return the rows with a valid timestamp, their timestamps, and a function that
    turns one of those timestamps into seconds since the epoch.

    When every timestamp has the form ``YYYY-MM-DDTHH:MM:SS[.f]Z`` and the same length
    (what our services write), they are validated in bulk and returned as the strings,
    which then sort in time order and are parsed only where a number is needed.
    Otherwise they are parsed one by one into floats (and the function is ``float``):
    rows without a timestamp count as ``missing_field``, those with an invalid one (or
    one without a UTC offset) as ``wrong_type`` (when ``tally`` is given).
    """
    if not rows:
        return rows, [], float
    stamps: list[str | None] = list(map(_TIMESTAMP, rows))
    try:
        if _uniform_utc(stamps):  # type: ignore[arg-type]  # TypeError on None
            return rows, cast(list[str], stamps), _epoch_z
    except (KeyError, TypeError, UnicodeEncodeError):
        pass
    kept: list[_Row] = []
    times: list[float] = []
    for row, stamp in zip(rows, stamps, strict=True):
        if stamp is None:
            if tally is not None:
                tally.bad("missing_field", "Object missing required field `timestamp`")
            continue
        value = _epoch(stamp)
        if value is None:
            if tally is not None:
                tally.bad("wrong_type", f"Invalid timestamp {stamp!r} - at `$.timestamp`")
            continue
        kept.append(row)
        times.append(value)
    return kept, times, float


def _uniform_utc(stamps: list[str]) -> bool:
    """Whether ``stamps`` are in order and all valid ``YYYY-MM-DDTHH:MM:SS[.f]Z`` of one
    length (then they sort as strings in time order).

    Checked in bulk: the digits and separators by one ``bytes.translate`` of all stamps
    against the expected pattern; the ranges of the date and hour by parsing the first
    and last stamp (every stamp sorts between them, so when they share date and hour,
    all do), else every distinct minute; minutes and seconds by their tens digit (one
    strided slice of the joined bytes each).

    Raises:
        KeyError: A minute prefix is invalid.
        TypeError: A stamp is ``None``.
        UnicodeEncodeError: A stamp is not ASCII.
    """
    lengths = set(map(len, stamps))
    if len(lengths) != 1 or not all(map(le, stamps, islice(stamps, 1, None))):
        return False
    length = lengths.pop()
    if length == 20:
        pattern = b"0000-00-00T00:00:00Z"
    elif length >= 22:
        pattern = b"0000-00-00T00:00:00." + b"0" * (length - 21) + b"Z"
    else:
        return False
    joined = "".join(stamps).encode("ascii")
    if joined.translate(_DIGITS_TO_ZERO) != pattern * len(stamps):
        return False
    first, last = stamps[0], stamps[-1]
    if first[:13] == last[:13]:
        _MINUTES[first[:17]]
        _MINUTES[last[:17]]
    else:
        for minute in set(map(_MINUTE, stamps)):
            _MINUTES[minute]
    # The tens of the minutes and of the seconds of every stamp, in two strided slices.
    minute_tens, second_tens = joined[14::length], joined[17::length]
    return not minute_tens.translate(None, _TENS) and not second_tens.translate(None, _TENS)


def _epoch_z(stamp: str) -> float:
    """Seconds since the epoch of a stamp that :func:`_uniform_utc` accepted."""
    return _MINUTES[stamp[:17]] + float(stamp[17:-1])


def _epoch(stamp: str) -> float | None:
    """Seconds since the epoch of an ISO-8601 time with an offset (``None``: invalid)."""
    if stamp[-1:] == "Z":
        try:
            seconds = float(stamp[17:-1])
            if 0 <= seconds < 61:
                return _MINUTES[stamp[:17]] + seconds
        except (KeyError, ValueError):
            pass
    try:
        value = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return None if value.tzinfo is None else value.timestamp()


class LineFinder:
    """Finds the :class:`_FullRow` of rows decoded from ``data`` (ask in line order).

    Searches for the row's timestamp from where the last search ended and checks the
    line found against the row, so that it costs about one pass over ``data`` in all.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.pos = 0

    def find(self, row: _Row, hint: float = 0.0) -> _FullRow | None:
        """Return the full row of ``row`` (``None`` if its line cannot be found).

        ``hint`` is where the line probably is, as a fraction of ``data``: the search
        starts a little before it (and wraps around if the line is not found).
        """
        if row.timestamp is None:
            return None
        needle = msgspec.json.encode(row.timestamp)
        start = max(self.pos, int(len(self.data) * hint) - _PIECE)
        found = self._search(row, needle, start, len(self.data))
        if found is None and start:  # asked out of order, or a bad hint
            found = self._search(row, needle, 0, start + len(needle))
        return found

    def _search(self, row: _Row, needle: bytes, pos: int, stop: int) -> _FullRow | None:
        data = self.data
        while True:
            hit = data.find(needle, pos, stop)
            if hit < 0:
                return None
            start = data.rfind(b"\n", 0, hit) + 1
            end = data.find(b"\n", hit)
            end = len(data) if end < 0 else end
            try:
                full = _FULL_DECODER.decode(data[start:end])
            except DECODE_ERRORS:
                full = None
            if full is not None and (
                full.timestamp,
                full.event,
                full.service,
                full.method,
                full.code,
                full.duration_ms,
            ) == (row.timestamp, row.event, row.service, row.method, row.code, row.duration_ms):
                self.pos = end + 1  # rows map to distinct lines: the next is later
                return full
            pos = end + 1


def iter_call_records(lines: Iterable[bytes | str]) -> Iterator[CallRecord]:
    """Yield the call records among JSON ``lines``, skipping other events and bad lines.

    Each item is one line (a trailing newline is allowed). Use
    :meth:`SummaryBuilder.add_json_lines` to have the skipped lines counted.
    """
    decode = _RECORD_DECODER.decode
    for line in lines:
        if not line.strip():
            continue
        try:
            record = decode(line)
        except DECODE_ERRORS:
            continue
        if record.event in CALL_EVENTS:
            yield record
