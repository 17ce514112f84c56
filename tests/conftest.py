from __future__ import annotations

from hypothesis import settings

# Deterministic, bounded property tests: the same examples every run.
settings.register_profile("trio_micro", derandomize=True, deadline=None, max_examples=100)
settings.load_profile("trio_micro")
