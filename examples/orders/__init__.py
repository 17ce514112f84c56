"""The order service: SQLite, a user check through the registry, a stream of new orders.

* :mod:`.database`: :class:`~.database.OrderDatabase`, the ``orders`` table.
* :mod:`.service`: :class:`OrderService`, the RPC service (``orders``), which calls the
  user service (:mod:`examples.user_service`).

Run it as a process (``OrderService.open`` takes the ``-o`` options)::

    trio-micro serve examples.orders:OrderService --port 50061 \\
        -o db=data/orders.db -o users=registry://127.0.0.1:50050/users
"""

from __future__ import annotations

from .service import OrderService

__all__ = ["OrderService"]
