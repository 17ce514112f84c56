"""``python -m examples.demo``: run the demo (``--help`` for its options)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
