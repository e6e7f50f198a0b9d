"""Settings shared by every environment; values come from the environment via django-environ."""

from pathlib import Path

import environ

from core import dev_credentials
from core.logging import configure_structlog
from core.logging import formatter as log_formatter
from providers import conf as provider_conf

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _default_database_url() -> str:
    # `make run` / `make test` start an embedded PostgreSQL and write its URL here, so that
    # `manage.py` in another terminal reaches the same database with no extra environment.
    url_file = BASE_DIR / ".data" / "database_url"
    if url_file.exists():
        return url_file.read_text().strip()
    return "postgres://postgres@127.0.0.1:54329/clearhouse"


SECRET_KEY = env("DJANGO_SECRET_KEY", default=dev_credentials.DEV_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    # django.contrib.admin with the back-office site as admin.site (2FA, dashboard, roles).
    "backoffice.apps.BackofficeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "core",
    "webhooks",
    "providers",
    "ledger",
    "payments",
    "wallet",
    "reconciliation",
    "backoffice",  # last: its admin replaces the auth, django_otp and axes registrations
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    # The orchestrator's own probes (loopback or HEALTH_PROBE_NETWORKS, not proxied) are
    # answered before host validation and the TLS redirect; everything else goes on through.
    "core.health.ProbeMiddleware",
    "core.metrics.HttpMetricsMiddleware",  # request counts and durations per route
    "core.logging.RequestLogMiddleware",
    "core.middleware.RequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified() for the admin's 2FA
    "django.contrib.messages.middleware.MessageMiddleware",
    "backoffice.middleware.StaffSessionMiddleware",  # idle and absolute admin session expiry
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: lockout responses
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=_default_database_url())}
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services own their transactions
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A streaming replica for list pages (core.db): reads that must be fresh stay on the primary.
if env("DATABASE_REPLICA_URL", default=""):
    DATABASES["replica"] = env.db("DATABASE_REPLICA_URL")
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["core.db.PrimaryReplicaRouter"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# Production and the image build (config/settings/build.py) serve STATIC_ROOT with WhiteNoise:
# compressed, with content hashes in the names (collectstatic writes them and the manifest).
WHITENOISE_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Probes from these networks (CIDRs, besides loopback) reach /healthz and /readyz without host
# validation or the TLS redirect, e.g. the kubelet's node network; only when not proxied.
HEALTH_PROBE_NETWORKS = env.list("HEALTH_PROBE_NETWORKS", default=[])

ADMIN_URL = env("DJANGO_ADMIN_URL", default="admin/")

# Request limits from the contract: bodies over 16 KiB answer 413.
MAX_REQUEST_BODY_BYTES = 16 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024  # admin forms; the API guard above is stricter

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.auth.IsMerchant"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.schema.ClearhouseAutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Clearhouse API",
    "DESCRIPTION": (
        "Payment orchestration: payments, refunds, events. Amounts are integers in the "
        "currency's minor unit. Every POST accepts an `Idempotency-Key` header."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",  # for `webhooks`: the event catalogue (core.schema)
    "SCHEMA_PATH_PREFIX": "/api/v1",  # operations are tagged by resource (payments, refunds…)
    "DEFAULT_GENERATOR_CLASS": "core.schema.ClearhouseSchemaGenerator",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "core.schema.postprocess"],
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PaymentStatusEnum": "payments.models.PaymentStatus",
        "RefundStatusEnum": "payments.models.RefundStatus",
    },
}

# Celery: Redis when configured, otherwise kombu's filesystem transport (no server needed).
REDIS_URL = env("REDIS_URL", default="")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_DIR = Path(env("CELERY_BROKER_DIR", default=str(BASE_DIR / ".data" / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),  # default is ./control
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = False

# Idempotency keys live at least this long before the reaper may delete them.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
# A key left "in flight" longer than this (a crashed request) may be taken over by a retry.
IDEMPOTENCY_LOCK_TIMEOUT_SECONDS = env.int("IDEMPOTENCY_LOCK_TIMEOUT_SECONDS", default=60)

# Providers (providers/conf.py): here every adapter is enabled in test mode against the local
# simulator with its dev credentials; production enables them explicitly with no defaults.
# Live merchants reach only PROVIDERS_LIVE; test merchants only the others (the sandbox always),
# PROVIDERS_TEST (every enabled provider not live, unless the environment lists them).
PROVIDERS_ENABLED = provider_conf.enabled_from_env()
PROVIDERS_LIVE = provider_conf.live_from_env(enabled=PROVIDERS_ENABLED)
PROVIDERS_TEST = provider_conf.test_from_env(enabled=PROVIDERS_ENABLED, live=PROVIDERS_LIVE)
PROVIDERS = provider_conf.providers_from_env(enabled=PROVIDERS_ENABLED)
SIMULATOR_URL = provider_conf.simulator_url()
# Test mode only: the provider a test payment goes to when no routing rule matches. Live
# payments never fall back; with no live provider they fail `provider_unavailable`.
DEFAULT_PROVIDER = env("DEFAULT_PROVIDER", default="sandbox")
PROVIDER_TIMEOUTS = provider_conf.timeouts_from_env()
PROVIDER_BREAKER = provider_conf.breaker_from_env()
PROVIDER_AUTHORIZATION_DAYS = provider_conf.authorization_days_from_env()
# Delayed retries of an off-session payment's soft decline, in seconds after each decline: one
# retry per entry (at most 8), then the payment fails with the last decline's code.
PAYMENT_RETRY_DELAYS = [int(s) for s in env.list("PAYMENT_RETRY_DELAYS",
                                                 default=["3600", "86400", "259200"])]

# Structured logs (core/logging.py): JSON lines by default, LOG_FORMAT=console for humans.
configure_structlog()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": log_formatter(env("LOG_FORMAT", default="json"))},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# Demo data for `make run` (local settings only; `demo_seed` refuses non-test keys).
DEMO_API_KEY = env("DEMO_API_KEY", default=dev_credentials.DEMO_API_KEY)
DEMO_ADMIN_USERNAME = env("DEMO_ADMIN_USERNAME", default="admin")
DEMO_ADMIN_PASSWORD = env("DEMO_ADMIN_PASSWORD", default=dev_credentials.DEMO_ADMIN_PASSWORD)

# Rate limits per API key (token buckets in Redis; fail open when Redis is unreachable).
RATE_LIMIT_ENABLED = env.bool("RATE_LIMIT_ENABLED", default=True)
RATE_LIMIT_WRITE_BURST = env.int("RATE_LIMIT_WRITE_BURST", default=100)
RATE_LIMIT_WRITE_PER_SECOND = env.float("RATE_LIMIT_WRITE_PER_SECOND", default=50.0)
RATE_LIMIT_READ_BURST = env.int("RATE_LIMIT_READ_BURST", default=200)
RATE_LIMIT_READ_PER_SECOND = env.float("RATE_LIMIT_READ_PER_SECOND", default=100.0)

# Outbound webhooks: endpoint secrets are encrypted with MultiFernet (first key encrypts, all
# decrypt: prepend a new key to rotate). Endpoints must be https and resolve to public addresses.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
WEBHOOKS_REQUIRE_HTTPS = env.bool("WEBHOOKS_REQUIRE_HTTPS", default=True)
WEBHOOKS_ALLOW_LOOPBACK = env.bool("WEBHOOKS_ALLOW_LOOPBACK", default=False)

# 3-D Secure (payments `requires_action`): the address customers' browsers reach us at (the
# provider sends them back to PUBLIC_URL/payments/authentication/…), and how long a
# challenge may stay unfinished before the janitor fails the payment `authentication_abandoned`.
PUBLIC_URL = env("PUBLIC_URL", default="http://127.0.0.1:8000")
PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS = env.int("PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS",
                                                 default=15 * 60)
# The return address is public (a browser) and each visit may ask the provider: at most this
# many lookups per attempt per minute (then it answers from our state), and it stops working
# (404) once the payment is past its challenge and this long has passed since the challenge's
# deadline.
PAYMENT_AUTHENTICATION_RETURN_LOOKUPS_PER_MINUTE = env.int(
    "PAYMENT_AUTHENTICATION_RETURN_LOOKUPS_PER_MINUTE", default=5)
PAYMENT_AUTHENTICATION_RETURN_TTL_HOURS = env.int("PAYMENT_AUTHENTICATION_RETURN_TTL_HOURS",
                                                  default=24)

# The ledger (ledger/services.py, ledger/checkpoints.py). Checkpoints of every account's chain
# head are signed with an Ed25519 seed (hex) that lives only in the environment; old public keys
# (hex) stay listed after a rotation. Files go to LEDGER_CHECKPOINT_DIR/<database name>/, which
# in production should be storage the database role cannot rewrite.
LEDGER_CHECKPOINT_SIGNING_KEY = env("LEDGER_CHECKPOINT_SIGNING_KEY",
                                    default=dev_credentials.DEV_LEDGER_CHECKPOINT_KEY)
LEDGER_CHECKPOINT_PUBLIC_KEYS = env.list("LEDGER_CHECKPOINT_PUBLIC_KEYS", default=[])
LEDGER_CHECKPOINT_DIR = env("LEDGER_CHECKPOINT_DIR", default=str(BASE_DIR / ".data" /
                                                                  "ledger-checkpoints"))
# Dispute evidence files (payments/files.py): encrypted at rest in this folder, which must lie
# outside anything a web server serves (STATIC_ROOT; a system check refuses overlap); at most
# EVIDENCE_MAX_BYTES each (PDF, PNG or JPEG, judged by content).
EVIDENCE_STORAGE_DIR = env("EVIDENCE_STORAGE_DIR", default=str(BASE_DIR / ".data" / "evidence"))
EVIDENCE_MAX_BYTES = env.int("EVIDENCE_MAX_BYTES", default=5 * 1024 * 1024)
# An open dispute whose evidence is due within this many hours is reminded of (once) and heads
# the back-office's "due soon" queue.
DISPUTE_REMINDER_HOURS = env.int("DISPUTE_REMINDER_HOURS", default=72)
# The dispute job asks the provider about each open dispute at most this often.
DISPUTE_LOOKUP_MINUTES = env.int("DISPUTE_LOOKUP_MINUTES", default=60)
# provider_clearing:<provider> is split into this many rows (by merchant), summed on read.
LEDGER_CLEARING_SHARDS = env.int("LEDGER_CLEARING_SHARDS", default=16)

# Beat's schedules live in the database (django-celery-beat); the reconciliation app's data
# migration creates them. These code-defined entries are merged in at start-up.
CELERY_BEAT_SCHEDULE = {
    "provider-events-sweep": {"task": "webhooks.tasks.provider_events_sweep", "schedule": 30.0,
                              "options": {"expires": 25}},
}

# Reconciliation jobs (RECON_JANITOR_INTERVAL_SECONDS, RECON_SETTLEMENT_PROVIDERS, the crontabs…)
# are read from the environment by reconciliation/conf.py, which lists them with their defaults;
# beat's rows follow them at migrate time or with `manage.py recon_schedule --sync`.

# The event stream (webhooks/stream.py, `manage.py events_relay --sink redis|nats|kafka`): one
# relay per broker publishes every event, in order, at least once (docs/OPERATIONS.md).
EVENT_STREAM_REDIS_URL = env("EVENT_STREAM_REDIS_URL", default=REDIS_URL)
EVENT_STREAM_REDIS_KEY = env("EVENT_STREAM_REDIS_KEY", default="clearhouse:events")
EVENT_STREAM_REDIS_MAXLEN = env.int("EVENT_STREAM_REDIS_MAXLEN", default=None)
EVENT_STREAM_NATS_URL = env("EVENT_STREAM_NATS_URL", default="nats://127.0.0.1:4222")
EVENT_STREAM_NATS_STREAM = env("EVENT_STREAM_NATS_STREAM", default="CLEARHOUSE_EVENTS")
EVENT_STREAM_NATS_SUBJECT_PREFIX = env("EVENT_STREAM_NATS_SUBJECT_PREFIX",
                                       default="clearhouse.events")
EVENT_STREAM_KAFKA_BOOTSTRAP_SERVERS = env("EVENT_STREAM_KAFKA_BOOTSTRAP_SERVERS", default="")
EVENT_STREAM_KAFKA_TOPIC = env("EVENT_STREAM_KAFKA_TOPIC", default="clearhouse.events")
# Extra librdkafka properties as JSON, e.g. {"security.protocol": "SASL_SSL", ...}.
EVENT_STREAM_KAFKA_CONFIG = env.json("EVENT_STREAM_KAFKA_CONFIG", default={})

# /metrics (Prometheus). Empty token: open (dev); production requires one.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# `make bench` only: mounts bench/urls.py (a constant endpoint, the API benchmark's baseline).
BENCH_ENDPOINTS = env.bool("BENCH_ENDPOINTS", default=False)

# -- Back-office: staff login security, maker-checker thresholds, sessions --------------------
# Lockout (django-axes) checks every login first; ModelBackend then authenticates.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Staff must pass a TOTP code (django-otp) to use the admin. Production forces it on; tests and
# `make run` switch it off. Devices: `manage.py staff_totp_create <username>`.
BACKOFFICE_REQUIRE_2FA = env.bool("BACKOFFICE_REQUIRE_2FA", default=True)
OTP_TOTP_ISSUER = "Clearhouse back-office"
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # a device's key is shown when it is created, never again
# Refunds above these amounts (minor units, per currency) need a second person (an approver).
# A currency missing here needs approval for every refund: fail safe, not open.
BACKOFFICE_REFUND_APPROVAL_THRESHOLDS = env.json(
    "BACKOFFICE_REFUND_APPROVAL_THRESHOLDS",
    default={"usd": 50_000, "eur": 50_000, "gbp": 50_000, "brl": 250_000},
)
# Admin sessions end after 30 idle minutes and 8 hours at most, and with the browser.
BACKOFFICE_SESSION_IDLE_SECONDS = env.int("BACKOFFICE_SESSION_IDLE_SECONDS", default=30 * 60)
SESSION_COOKIE_AGE = env.int("BACKOFFICE_SESSION_MAX_AGE_SECONDS", default=8 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Proxies in front of the app that append to X-Forwarded-For (0: use REMOTE_ADDR). The audit
# log and the lockout both read the client address this way.
BACKOFFICE_TRUSTED_PROXY_COUNT = env.int("BACKOFFICE_TRUSTED_PROXY_COUNT", default=0)
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours: a locked (username, address) may try again after 15 minutes
# Per (username, address): a typo-prone colleague behind the office NAT does not lock out the
# whole floor, and nobody can lock a named operator out from elsewhere. TOTP covers the rest.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "backoffice/lockout.html"
AXES_CLIENT_IP_CALLABLE = "backoffice.audit.client_ip"
