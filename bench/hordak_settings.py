"""Settings for the django-hordak baseline: hordak alone, in its own database.

Used only by `python -m bench.hordak_bench` in a subprocess, so hordak's tables and migrations
never enter the project's database or its migration graph.
"""

import environ

env = environ.Env()

SECRET_KEY = "bench-hordak-only-not-a-secret"  # noqa: S105 (no sessions, no signing here)
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "mptt",
    "djmoney",
    "hordak",
]
DATABASES = {"default": env.db("DATABASE_URL")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
HORDAK_INTERNAL_CURRENCY = "USD"
CURRENCIES = ["USD"]
