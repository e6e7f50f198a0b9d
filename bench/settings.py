"""Django settings for the benchmark processes: the base settings, DEBUG off, the bench database.

`bench.runtime` points DATABASE_URL at the bench database before Django loads, so nothing here
can reach the development data. Webhooks may go to the local receiver (loopback, plain http).
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = False  # DEBUG would keep every SQL statement in memory and slow every query down
RATE_LIMIT_ENABLED = False  # the benchmarks measure the service, not the per-key budget
WEBHOOKS_REQUIRE_HTTPS = False
WEBHOOKS_ALLOW_LOOPBACK = True  # scenario 4's receiver runs on 127.0.0.1
# In-process scenarios enqueue nothing anyone consumes; the API scenario's gunicorn uses the
# filesystem broker (or Redis) so that a worker can drain what it enqueued.
CELERY_BROKER_URL = env("BENCH_CELERY_BROKER_URL", default="memory://")
LOGGING["root"]["level"] = env("LOG_LEVEL", default="WARNING")  # noqa: F405
