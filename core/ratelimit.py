"""Per-API-key rate limits: a token bucket in Redis, updated atomically by one Lua script.

Writes (POST/DELETE) and reads (GET) have separate buckets. Every API response carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; an empty bucket answers 429 with
`Retry-After`. Deliberate choice when Redis is down or unset: fail OPEN (payments keep working),
with a warning log line and a counter, because refusing money is worse than a burst of traffic.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

from django.conf import settings

from core import metrics

logger = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV capacity, refill per second. Uses the server clock, so every web process
# agrees on time. Returns {allowed, remaining tokens (floored), ms until one token is back}.
_BUCKET_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {allowed, math.floor(tokens), wait}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int


class _Redis:
    """A lazily created client with short timeouts; a fault costs one request at most 100 ms."""

    _lock = threading.Lock()
    _client = None
    _script = None
    failures = 0  # fail-open counter, exported as a metric

    @classmethod
    def script(cls):  # type: ignore[no-untyped-def]
        if cls._script is None:
            with cls._lock:
                if cls._script is None:
                    import redis

                    cls._client = redis.Redis.from_url(
                        settings.REDIS_URL, socket_timeout=0.1, socket_connect_timeout=0.1)
                    cls._script = cls._client.register_script(_BUCKET_SCRIPT)
        return cls._script

    @classmethod
    def reset(cls) -> None:
        cls._client = cls._script = None


def _budget(is_write: bool) -> tuple[int, float]:
    if is_write:
        return settings.RATE_LIMIT_WRITE_BURST, settings.RATE_LIMIT_WRITE_PER_SECOND
    return settings.RATE_LIMIT_READ_BURST, settings.RATE_LIMIT_READ_PER_SECOND


def check(*, key_id: str, is_write: bool) -> Decision | None:
    """Take one token from the key's bucket. None when limiting is off or Redis is unreachable."""
    if not settings.RATE_LIMIT_ENABLED or not settings.REDIS_URL:
        return None
    capacity, rate = _budget(is_write)
    bucket = f"rl:{'w' if is_write else 'r'}:{key_id}"
    try:
        allowed, remaining, wait_ms = _Redis.script()(keys=[bucket], args=[capacity, rate])
    except Exception as exc:
        _Redis.failures += 1
        metrics.RATE_LIMIT_FAIL_OPEN.inc()
        logger.warning("rate limiter unavailable, failing open: %s", type(exc).__name__)
        return None
    return Decision(bool(allowed), capacity, int(remaining), int(wait_ms))


def headers(decision: Decision) -> dict[str, str]:
    capacity_reset = max(1, math.ceil(decision.retry_after_ms / 1000))
    values = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(max(0, decision.remaining)),
        "RateLimit-Reset": str(capacity_reset),
    }
    if not decision.allowed:
        values["Retry-After"] = str(capacity_reset)
    return values
