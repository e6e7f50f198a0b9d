"""Structured JSON logs: request id, merchant id and latency on every request line, and one
redaction processor that strips secrets, API keys, webhook secrets and card-like numbers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import structlog
from django.http import HttpRequest, HttpResponse

from core.carddata import redact_card_numbers

_SECRET_KEYS = re.compile(r"(secret|password|passwd|token|api_key|authorization|signature|"
                          r"credential|cookie|whsec|cvc|cvv|cvn|security_code|card_code)",
                          re.IGNORECASE)  # card security codes: never kept, logs included
_SECRET_VALUES = re.compile(r"\b(sk_(?:test|live)_[A-Za-z0-9_\-]+|whsec_[A-Za-z0-9_\-]+|"
                            r"Bearer\s+[A-Za-z0-9_\-\.]+)")
REDACTED = "[REDACTED]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_card_numbers(_SECRET_VALUES.sub(REDACTED, value))
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEYS.search(str(k)) else _scrub(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def redact(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The one place secrets are removed: every log line passes through it."""
    return _scrub(event)


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
]


def formatter(renderer: str = "json") -> dict[str, Any]:
    """A logging.config formatter that renders stdlib and structlog records alike."""
    render = (structlog.dev.ConsoleRenderer(colors=False) if renderer == "console"
              else structlog.processors.JSONRenderer())
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": SHARED_PROCESSORS,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact,
            render,
        ],
    }


def configure_structlog() -> None:
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


access_log = structlog.get_logger("clearhouse.request")


class RequestLogMiddleware:
    """Binds the request id for every line logged while serving, then logs one access line."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=getattr(request, "request_id", None))
        started = time.monotonic()
        response = self.get_response(request)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        if request.path.startswith(("/api/", "/webhooks/")):
            access_log.info("request", method=request.method, path=request.path,
                            status=response.status_code, latency_ms=latency_ms,
                            replayed=response.get("Idempotent-Replayed") == "true")
        structlog.contextvars.clear_contextvars()
        return response


def bind_merchant(merchant_id: str) -> None:
    structlog.contextvars.bind_contextvars(merchant_id=merchant_id)
