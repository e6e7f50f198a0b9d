"""The network half of webhook delivery: sign, vet the address, POST once, report what happened.

Nothing here touches the database (the services claim rows before and record outcomes after),
so it can run in worker threads and never holds a row lock across the network call.
"""

from __future__ import annotations

import functools
import ssl
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
from django.utils import timezone

from webhooks import ssrf
from webhooks.verify import compute_signature

USER_AGENT = "Clearhouse-Webhooks/1.0"
SIGNATURE_HEADER = "Clearhouse-Signature"
EVENT_ID_HEADER = "Clearhouse-Event-Id"
# Short timeouts: a slow merchant must not tie up workers; the retry schedule absorbs blips.
TIMEOUT = httpx.Timeout(connect=3.0, read=5.0, write=5.0, pool=2.0)
# Wall-clock cap on reading the response body (a server may drip one byte per read timeout).
BODY_READ_SECONDS = 5.0
SNIPPET_BYTES = 1024
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Outgoing:
    """One claimed attempt: everything the sender needs, loaded before any network call."""

    delivery_id: str
    attempt_number: int
    endpoint_id: str
    url: str
    event_id: str
    body: bytes
    secrets: tuple[str, ...]  # current first, then the previous one during rotation overlap


@dataclass(frozen=True)
class AttemptResult:
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    response_snippet: str = ""
    error: str = ""

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signature_header(*, body: bytes, secrets: tuple[str, ...] | list[str], timestamp: int
                     ) -> str:
    """`t=<unix>,v1=<hex>[,v1=<hex>…]`: one v1 per secret, verified by webhooks.verify."""
    parts = [f"t={timestamp}"]
    parts += [f"v1={compute_signature(body, secret, timestamp)}" for secret in secrets]
    return ",".join(parts)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # Built once per process: loading the CA bundle costs more than a local delivery.
    return httpx.create_ssl_context(trust_env=False)


def _clean(text: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; the log is for humans, so drop it.
    return text.replace("\x00", "")[:limit]


def _read_snippet(response: httpx.Response) -> str:
    """At most SNIPPET_BYTES of the body; the rest is never read (the connection is dropped)."""
    collected = b""
    deadline = time.monotonic() + BODY_READ_SECONDS
    for chunk in response.iter_raw(chunk_size=SNIPPET_BYTES):
        collected += chunk
        if len(collected) >= SNIPPET_BYTES or time.monotonic() > deadline:
            break
    return _clean(collected[:SNIPPET_BYTES].decode("utf-8", errors="replace"), SNIPPET_BYTES)


def send(outgoing: Outgoing) -> AttemptResult:
    """POST the event once. Never raises for anything the endpoint or the network does."""
    started_at = timezone.now()
    clock = time.perf_counter()

    def elapsed_ms() -> int:
        return int((time.perf_counter() - clock) * 1000)

    try:
        target = ssrf.vet_url(outgoing.url)
    except ssrf.UnsafeUrl as exc:
        return AttemptResult(started_at=started_at, latency_ms=elapsed_ms(),
                             error=_clean(f"refused ({exc.code}): {exc}", MAX_ERROR_LENGTH))
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",  # the snippet is read raw; no decompression bombs
        EVENT_ID_HEADER: outgoing.event_id,
        SIGNATURE_HEADER: signature_header(body=outgoing.body, secrets=outgoing.secrets,
                                           timestamp=int(time.time())),
    }
    try:
        # A fresh client per attempt: the URL names the vetted IP, so a pooled connection could
        # be reused for another host name with another TLS identity. trust_env=False: a proxy
        # from the environment would resolve the host itself, bypassing the vetting above.
        with httpx.Client(verify=_ssl_context(), timeout=TIMEOUT, follow_redirects=False,
                          trust_env=False) as client, client.stream(
            "POST", target.connect_url, content=outgoing.body, headers=headers,
            extensions={"sni_hostname": target.sni_hostname},
        ) as response:
            snippet = _read_snippet(response)
            return AttemptResult(started_at=started_at, latency_ms=elapsed_ms(),
                                 status_code=response.status_code, response_snippet=snippet)
    except httpx.TimeoutException as exc:
        error = f"timeout ({type(exc).__name__}) after {elapsed_ms()} ms"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return AttemptResult(started_at=started_at, latency_ms=elapsed_ms(),
                         error=_clean(error, MAX_ERROR_LENGTH))
