"""Optional tracing and error reporting for every process, each off unless configured:
OpenTelemetry (OTEL_EXPORTER_OTLP_ENDPOINT: spans over OTLP/HTTP for web → Celery task →
provider HTTP call, one trace across processes) and Sentry (SENTRY_DSN: exceptions, scrubbed by
the same redaction as the logs). Their packages are the `observability` dependency group, which
the image installs; configuring one without its packages stops start-up, saying so."""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)
_STARTED: set[str] = set()


def _sentry_scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    from core.logging import redact

    return redact(None, "sentry", event)


def setup(service: str) -> None:
    """Called once per process: by config/wsgi.py in each gunicorn worker, and by Celery's
    worker_process_init in each pool process (after the fork, as both libraries require)."""
    if os.environ.get("SENTRY_DSN") and "sentry" not in _STARTED:
        _STARTED.add("sentry")
        try:
            import sentry_sdk
        except ImportError as exc:
            raise RuntimeError("SENTRY_DSN is set but sentry-sdk is not installed: install the "
                               "`observability` group (uv sync --group observability)") from exc
        sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], send_default_pii=False,
                        environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
                        traces_sample_rate=float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE",
                                                                "0")),
                        server_name=service, before_send=_sentry_scrub)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and "otel" not in _STARTED:
        _STARTED.add("otel")
        _tracing(service)


def _tracing(service: str) -> None:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not "
                           "installed: install the `observability` group "
                           "(uv sync --group observability)") from exc
    provider = TracerProvider(resource=Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (…/v1/traces is appended) and headers.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    _probes_before_tracing()
    CeleryInstrumentor().instrument()  # the trace context travels in the task's headers
    HTTPXClientInstrumentor().instrument()  # every provider adapter calls out with httpx
    logger.info("tracing to %s as %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"], service)


_FIRST = ("core.middleware.RequestIdMiddleware", "core.health.ProbeMiddleware")


def _probes_before_tracing() -> None:
    """The OpenTelemetry middleware puts itself first and reads the Host at once (DisallowedHost
    for the orchestrator's probe from 127.0.0.1): the probes are answered before it, untraced."""
    from django.conf import settings

    settings.MIDDLEWARE = [*(name for name in _FIRST if name in settings.MIDDLEWARE),
                           *(name for name in settings.MIDDLEWARE if name not in _FIRST)]
