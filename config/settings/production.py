"""Production settings: secrets, hosts and providers required from the environment (no
default for any of them), secure transport. `manage.py check --deploy` adds the checks in
core/checks.py and providers/checks.py (development secrets, the simulator live, a test-mode
provider at a production endpoint, loopback webhooks, DEBUG)."""

import os

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import env
from providers import conf as provider_conf

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
# A load balancer's plain-http health check with a valid Host is answered, not redirected (the
# orchestrator's own probes never get this far: core.health.ProbeMiddleware).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Static files from gunicorn itself (WhiteNoise, right after SecurityMiddleware as it asks).
STORAGES = WHITENOISE_STORAGES  # noqa: F405
MIDDLEWARE = [item for name in MIDDLEWARE for item in (  # noqa: F405
    (name, "whitenoise.middleware.WhiteNoiseMiddleware")
    if name == "django.middleware.security.SecurityMiddleware" else (name,))]
SESSION_COOKIE_AGE = 8 * 60 * 60
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS")  # required: webhook secrets at rest
METRICS_TOKEN = env("METRICS_TOKEN").strip()  # required: /metrics is not public
if not METRICS_TOKEN:  # set but empty would make /metrics public (metrics_view skips no token)
    raise ImproperlyConfigured("METRICS_TOKEN is empty: set it to a long random value "
                               "(/metrics is served only with it).")
# Not required to start (the image builds without secrets), but `check --deploy` refuses the
# development key or none (ledger.E001) and no export folder (ledger.E002).
LEDGER_CHECKPOINT_SIGNING_KEY = env("LEDGER_CHECKPOINT_SIGNING_KEY", default="")
LEDGER_CHECKPOINT_DIR = env("LEDGER_CHECKPOINT_DIR", default="")
# Dispute evidence (payments.E001 refuses none at `check --deploy`; E002 a served folder).
EVIDENCE_STORAGE_DIR = env("EVIDENCE_STORAGE_DIR", default="")
# Where customers come back from a 3-D Secure challenge (payments.E003 at `check --deploy`
# refuses none, or one that is not https).
PUBLIC_URL = env("PUBLIC_URL", default="")

# Providers: enabled explicitly, each one classified live or test explicitly; each enabled
# one's endpoint, credentials and secrets required. A provider not in PROVIDERS_ENABLED is not
# reachable at all (its webhook URL answers 404).
PROVIDERS_ENABLED = provider_conf.enabled_from_env(os.environ, production=True)
PROVIDERS_LIVE = provider_conf.live_from_env(os.environ, enabled=PROVIDERS_ENABLED)
PROVIDERS_TEST = provider_conf.test_from_env(os.environ, enabled=PROVIDERS_ENABLED,
                                             live=PROVIDERS_LIVE, production=True)
PROVIDERS = provider_conf.providers_from_env(os.environ, production=True,
                                             enabled=PROVIDERS_ENABLED)

# -- Back-office ------------------------------------------------------------------------------
# Not from the environment on purpose: staff always need a TOTP code and lockout stays on.
BACKOFFICE_REQUIRE_2FA = True
AXES_ENABLED = True
# The app runs behind one TLS-terminating proxy (see SECURE_PROXY_SSL_HEADER above).
BACKOFFICE_TRUSTED_PROXY_COUNT = env.int("BACKOFFICE_TRUSTED_PROXY_COUNT", default=1)
