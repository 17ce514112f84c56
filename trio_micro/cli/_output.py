"""How the CLI prints: text made safe for a terminal, JSON lines and tables.

Every text output of a command goes through :func:`safe_text` (directly or through
:func:`print_table`); JSON output (:func:`print_json`) is safe by construction. Imports
neither Trio nor rich at import time (rich only when a table goes to a terminal).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any, Final

import msgspec

__all__: list[str] = []  # internal to the cli package

# What a terminal may act on, or what makes one line look like two or reorders its text:
# C0 and C1 controls and DEL (escape sequences start with ESC or CSI), the Unicode line and
# paragraph separators, bidi overrides and isolates, zero-width and invisible format
# characters, the BOM, and lone surrogates (which can't even be encoded).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in "\t\n\r":
        return repr(char)[1:-1]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` with every control or invisible format character escaped as ``\\xNN``,
    ``\\uNNNN`` (``\\n``, ``\\r``, ``\\t`` for those three): what every text output of the CLI
    goes through, so a server's error message or a log line can neither move the cursor,
    recolour the terminal, nor forge a line. JSON output needs none of this (its encoder
    escapes controls). Printable text, non-ASCII included, is returned as is.
    """
    return text if _UNSAFE.search(text) is None else _UNSAFE.sub(_escape, text)


def _json_fallback(obj: Any) -> Any:
    if isinstance(obj, msgspec.msgpack.Ext):
        import base64

        return {"ext_code": obj.code, "data": base64.b64encode(obj.data).decode()}
    return str(obj)


_json_encoder: Final = msgspec.json.Encoder(enc_hook=_json_fallback)


def print_json(value: Any, *, indent: int = 0) -> None:
    """Print ``value`` as JSON on one line (``indent``: pretty), then flush.

    Bytes are base64, NaN and infinities ``null``, anything else odd its ``str()``.
    """
    data = _json_encoder.encode(value)
    if indent:
        data = msgspec.json.format(data, indent=indent)
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()


def print_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str | None = None,
) -> None:
    """Print a table: rich at a terminal, aligned plain text otherwise.

    Args:
        title: Printed above (plain: on its own line, even when empty).
        headers: The column names.
        rows: The cells, as text (never read as rich markup; controls escaped by
            :func:`safe_text`, like the title and headers).
        align: ``"l"`` or ``"r"`` per column (default: all left).
    """
    align = align or "l" * len(headers)
    title = safe_text(title)
    headers = [safe_text(header) for header in headers]
    rows = [[safe_text(cell) for cell in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left")
        for i, header in enumerate(headers):
            # Names stay whole; only the last column (e.g. request fields) wraps.
            table.add_column(
                header,
                justify="left" if align[i] == "l" else "right",
                no_wrap=i < len(headers) - 1,
            )
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        Console().print(table)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    print(title)
    print(fmt(headers))
    print(fmt(["-" * w for w in widths]))
    for row in rows:
        print(fmt(row))
