"""Settings for the test suite: real PostgreSQL, in-memory broker, fast password hashing."""

import tempfile

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = False
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default=None)}  # noqa: F405
WEBHOOKS_REQUIRE_HTTPS = False
WEBHOOKS_ALLOW_LOOPBACK = False  # webhook tests switch it on per test
# Checkpoints stay in the test database unless a test gives them a folder (tmp_path): files
# from `make run` must never be read against a test database.
LEDGER_CHECKPOINT_DIR = ""
# Evidence files of the test run go to a throwaway folder, never .data/ of `make run`.
EVIDENCE_STORAGE_DIR = env("EVIDENCE_STORAGE_DIR",  # noqa: F405
                           default=tempfile.mkdtemp(prefix="clearhouse-test-evidence-"))

# -- Back-office ------------------------------------------------------------------------------
# No TOTP prompt and no lockout by default; the tests of those features switch them on.
BACKOFFICE_REQUIRE_2FA = False
AXES_ENABLED = False
BACKOFFICE_REFUND_APPROVAL_THRESHOLDS = {"usd": 50_000, "eur": 50_000, "brl": 250_000}
