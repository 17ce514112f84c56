"""examples/mtls_authz.py: methods allowed by the client certificate's identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples import mtls_authz


async def test_each_identity_gets_exactly_the_methods_it_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await mtls_authz.main(tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if ": " in line]
    assert [line for line in lines if line.startswith(("shop", "auditor"))] == [
        "shop: pay allowed",
        "shop: refund refused: PERMISSION_DENIED",
        "auditor: pay allowed",
        "auditor: refund allowed",
    ]
