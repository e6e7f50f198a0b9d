"""An httpx transport that makes every POST idempotent and retries what is safe to retry.

Each POST without an `Idempotency-Key` gets a fresh one (uuid4) before its first try, and every
retry sends the same bytes with the same key, so a retried request never acts twice: the server
replays the first answer or says the first is still running. Retried: network errors, 429 (after
`Retry-After`), 409 answers that mean "still running" (idempotency_key_in_use,
payment_operation_in_progress) and 5xx except a provider's final decline.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable

import httpx

RETRYABLE_409_CODES = frozenset({"idempotency_key_in_use", "payment_operation_in_progress"})
# 502s worth another try; any other 502 is the provider's final answer (a decline).
RETRYABLE_502_CODES = frozenset({"provider_unavailable", "provider_outcome_unknown"})
MAX_DELAY_SECONDS = 20.0


def _error_code(response: httpx.Response) -> str:
    try:
        return str(json.loads(response.read())["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def should_retry(response: httpx.Response) -> bool:
    status = response.status_code
    if status == 429:
        return True
    if status == 409:
        return _error_code(response) in RETRYABLE_409_CODES
    if status == 502:
        return _error_code(response) in RETRYABLE_502_CODES
    return status >= 500


class RetryingTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport | None = None, *, max_retries: int = 3,
                 backoff_seconds: float = 0.5, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.attempts: list[tuple[str, str, int | None]] = []  # (method, url, status) per try

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and "Idempotency-Key" not in request.headers:
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        request.read()  # the body is sent again, byte for byte, on a retry
        for attempt in range(self.max_retries + 1):
            is_last = attempt == self.max_retries
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError:
                self.attempts.append((request.method, str(request.url), None))
                if is_last:
                    raise
                self.sleep(self._delay(attempt, None))
                continue
            self.attempts.append((request.method, str(request.url), response.status_code))
            if is_last or not should_retry(response):
                return response
            retry_after = response.headers.get("Retry-After")
            response.close()
            self.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")  # the loop returns or raises on its last try

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After when the server says, else exponential backoff with full jitter."""
        if retry_after is not None and retry_after.isascii() and retry_after.isdigit():
            return min(float(retry_after), MAX_DELAY_SECONDS)
        ceiling = min(self.backoff_seconds * (2 ** attempt), MAX_DELAY_SECONDS)
        return random.uniform(0, ceiling)

    def close(self) -> None:
        self.inner.close()
