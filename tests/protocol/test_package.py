"""Package-level guarantees of trio_micro.protocol."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import trio_micro

# The top-level package re-exports the trio toolkit, so importing it pulls in trio. The
# guarantee is about the protocol's own code: stand in an empty `trio_micro` package (only a
# __path__) so that just trio_micro.protocol and what *it* imports get executed.
_IMPORT_PROTOCOL_ONLY = f"""
import sys, types
parent = types.ModuleType("trio_micro")
parent.__path__ = [{str(pathlib.Path(trio_micro.__file__).parent)!r}]
sys.modules["trio_micro"] = parent
import trio_micro.protocol
leaked = sorted(m for m in sys.modules if m == "trio" or m.startswith("trio."))
assert not leaked, leaked
assert "trio_micro.protocol._connection" in sys.modules
"""


def test_importing_the_protocol_package_does_not_import_trio() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROTOCOL_ONLY], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
