"""Per-API-key rate limits: a token bucket in Redis, updated atomically by one Lua script.

Writes (POST/DELETE) and reads (GET) have separate buckets. Every API response carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; an empty bucket answers 429 with
`Retry-After`. Deliberate choice when Redis is down or unset: fail OPEN (payments keep working),
with a warning log line and a counter, because refusing money is worse than a burst of traffic.

`hit` is the other kind: a fixed-window count for limits that protect someone else (e.g. how
often a public page may make us ask a provider). Exceeding it refuses nothing, the caller just
answers without the costly call, so it never fails open: without Redis it counts in PostgreSQL.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import metrics
from core.models import RateWindow

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
    def client(cls):  # type: ignore[no-untyped-def]
        cls.script()
        return cls._client

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


# One statement: concurrent visits each get their own count (the row lock orders them).
_COUNT_SQL = """
INSERT INTO core_ratewindow (key, count, expires_at) VALUES (%s, 1, %s)
ON CONFLICT (key) DO UPDATE SET count = core_ratewindow.count + 1
RETURNING count
"""


def hit(*, key: str, limit: int, window_seconds: int = 60) -> bool:
    """Count one use of `key` in the current fixed window of `window_seconds`; False once it was
    used `limit` times in it. In Redis (INCR) when set; without it, or when it fails, in the
    database (one upsert), never failing open."""
    now = timezone.now()
    window = int(now.timestamp()) // window_seconds
    name = f"rl:hit:{key}:{window}"
    if settings.REDIS_URL:
        try:
            pipe = _Redis.client().pipeline()
            pipe.incr(name)
            pipe.expire(name, window_seconds + 1)
            count, _ = pipe.execute()
            return int(count) <= limit
        except Exception as exc:
            _Redis.failures += 1
            logger.warning("rate counter unavailable in Redis, counting in the database: %s",
                           type(exc).__name__)
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_SQL, [name, now + timedelta(seconds=window_seconds)])
        (count,) = cursor.fetchone()
    return int(count) <= limit


def rate_windows_reap(*, batch_size: int = 5000) -> int:
    """Delete the database's counted windows that are over; returns how many went."""
    total = 0
    while True:
        keys = list(RateWindow.objects.filter(expires_at__lt=timezone.now())
                    .values_list("pk", flat=True)[:batch_size])
        if not keys:
            return total
        total += RateWindow.objects.filter(pk__in=keys).delete()[0]
