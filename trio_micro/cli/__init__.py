"""The ``trio-micro`` command, and the load engine behind ``trio-micro bench``.

``main`` runs the command. The load engine (:func:`run_load`, :class:`LoadResult`,
:class:`PeerCounter`, :func:`progress`) is exported for programs that drive their own
load, such as the demo in ``examples/demo``; it is imported on first use, so that
``trio-micro --version`` and ``trio-micro logs`` don't pay for Trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._main import main

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from ._load import LoadResult, PeerCounter, progress, run_load

__all__ = ["LoadResult", "PeerCounter", "main", "progress", "run_load"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {"._load": ["LoadResult", "PeerCounter", "progress", "run_load"]},
    __all__,
)
