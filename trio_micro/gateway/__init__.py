"""An HTTP/JSON gateway speaking the Connect protocol, in front of trio_micro services.

``curl -d '{"user_id": 1}' -H 'Content-Type: application/json' http://HOST:P/users/get_user``
calls ``users/get_user``: unary methods are ``POST /<service>/<method>`` with
``application/json``; server-streams use Connect's enveloped JSON
(``application/connect+json``); errors are Connect's error JSON with its codes and HTTP
statuses (mapped from ``rpc.Status``: :data:`CONNECT_CODES`); ``Connect-Timeout-Ms`` is the
call's deadline and ``traceparent`` continues the caller's trace. Each HTTP request is one
untyped call on an ``rpc.Channel``, so the server's handlers and interceptors run as for
any call. ``docs/interop.md`` cites the sections of the Connect specification followed.

:func:`serve_gateway` serves it with hypercorn's trio worker (limits set against slowloris
and oversize requests); ``trio-micro serve --http-port P`` runs it beside the RPC server,
``trio-micro gateway registry://...`` in front of a registry. :func:`openapi_document` and
:func:`json_schema_document` describe it from reflection (``trio-micro schema``).
"""

from __future__ import annotations

from .._lazy import fixup_module_metadata
from ._app import ConnectApp
from ._connect import CONNECT_CODES
from ._schema import json_schema_document, openapi_document
from ._serve import open_gateway, routes_of, serve_gateway

__all__ = [
    "CONNECT_CODES",
    "ConnectApp",
    "json_schema_document",
    "open_gateway",
    "openapi_document",
    "routes_of",
    "serve_gateway",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
