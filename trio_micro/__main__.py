"""``python -m trio_micro``: the ``trio-micro`` command."""

from __future__ import annotations

from trio_micro.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
