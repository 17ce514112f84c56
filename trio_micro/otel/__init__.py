"""The OpenTelemetry bridge: spans and call-duration histograms for every RPC.

* :class:`OtelServerInterceptor`: a server span per call (kind ``SERVER``), the child of
  the ``traceparent`` the caller sent; the handler runs with it current, so the calls it
  makes are its children. Logs written during the call carry the span's ids.
* :class:`OtelClientInterceptor`: a client span per call (kind ``CLIENT``), the child of
  the current OpenTelemetry span, else of the current :func:`trio_micro.observe.current_span`;
  its ``traceparent`` is what the server receives.

Both follow OpenTelemetry's RPC semantic conventions (span name ``service/method``,
``rpc.system`` = ``"trio_micro"``, ``rpc.service``, ``rpc.method``,
``rpc.trio_micro.status_code`` -- gRPC's numbering -- ``server.address``/``server.port``,
``error.type``) and record ``rpc.server.call.duration`` / ``rpc.client.call.duration``
histograms (seconds). They talk to ``opentelemetry-api`` only: the SDK, the sampler and the
exporter (OTLP to Jaeger or Tempo, ...) are the application's, set as the global providers
or passed in. Without an SDK the API's no-op tracer makes them nearly free.

Needs the ``trio-micro[otel]`` extra (``opentelemetry-api``); importing this package without
it raises :class:`ImportError` saying so. trio_micro's own log-only tracing
(:mod:`trio_micro.observe`) is the default and needs nothing.

.. versionadded:: 0.2
"""

from __future__ import annotations

try:
    import opentelemetry.metrics
    import opentelemetry.trace  # noqa: F401
except ImportError as exc:  # pragma: no cover - tested with the modules hidden
    raise ImportError(
        "trio_micro.otel needs the OpenTelemetry API, which is not installed: "
        "pip install 'trio-micro[otel]' (and an SDK and exporter of your choice, e.g. "
        "opentelemetry-sdk and opentelemetry-exporter-otlp)"
    ) from exc

from .._lazy import fixup_module_metadata
from ._interceptors import (
    RPC_SYSTEM,
    STATUS_CODE_ATTRIBUTE,
    OtelClientInterceptor,
    OtelServerInterceptor,
)

__all__ = [
    "RPC_SYSTEM",
    "STATUS_CODE_ATTRIBUTE",
    "OtelClientInterceptor",
    "OtelServerInterceptor",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
