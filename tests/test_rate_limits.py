"""Rate limits per API key in Redis: 429 with Retry-After after the budget, other keys
unaffected, and the limiter fails open when Redis is unreachable."""

import os

import pytest
import redis

from core import ratelimit

REDIS_URL = os.environ.get("REDIS_URL", "")


def _redis_answers() -> bool:
    if not REDIS_URL:
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not _redis_answers(),
                                 reason="needs Redis: set REDIS_URL (CI does)")


@pytest.fixture
def tight_budget(settings):
    settings.REDIS_URL = REDIS_URL
    settings.RATE_LIMIT_ENABLED = True
    settings.RATE_LIMIT_WRITE_BURST = 3
    settings.RATE_LIMIT_WRITE_PER_SECOND = 0.5
    settings.RATE_LIMIT_READ_BURST = 5
    settings.RATE_LIMIT_READ_PER_SECOND = 0.5
    ratelimit._Redis.reset()
    yield
    ratelimit._Redis.reset()


BODY = {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa"}


@needs_redis
@pytest.mark.django_db
def test_writes_beyond_the_budget_are_429_with_retry_after(api, other_api, tight_budget):
    ok = [api.post("/payments", BODY) for _ in range(3)]
    assert [r.status_code for r in ok] == [201, 201, 201]
    assert ok[0]["RateLimit-Limit"] == "3"
    assert ok[-1]["RateLimit-Remaining"] == "0"
    limited = api.post("/payments", BODY)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # One token comes back every 2 s at 0.5/s.
    assert 1 <= int(limited["Retry-After"]) <= 2
    # Reads have their own bucket; other merchants are unaffected.
    assert api.get("/payments").status_code == 200
    assert other_api.post("/payments", BODY).status_code == 201


@pytest.mark.django_db
def test_the_limiter_fails_open_when_redis_is_down(api, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.RATE_LIMIT_ENABLED = True
    ratelimit._Redis.reset()
    before = ratelimit._Redis.failures
    try:
        response = api.post("/payments", BODY)
    finally:
        ratelimit._Redis.reset()
    assert response.status_code == 201
    assert "RateLimit-Limit" not in response
    assert ratelimit._Redis.failures == before + 1
