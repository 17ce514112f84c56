"""The article's user service, done properly: SQLite, a TTL/LRU cache, request coalescing.

* :mod:`.database`: :class:`~.database.UserDatabase`, SQLite in WAL mode used from worker
  threads.
* :mod:`.cache`: :class:`~.cache.TTLCache`, TTL + LRU with single-flight loads.
* :mod:`.service`: :class:`UserService`, the RPC service (``users``).

Run it as a process (``UserService.open`` takes the ``-o`` options)::

    python -m examples.user_service seed --db data/users.db --users 10000
    trio-micro serve examples.user_service:UserService -o db=data/users.db --port 50051
"""

from __future__ import annotations

from .service import UserService

__all__ = ["UserService"]
