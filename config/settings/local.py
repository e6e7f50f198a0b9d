"""Settings for `make run` on a developer machine."""

from config.settings.base import *  # noqa: F403

DEBUG = True
WEBHOOKS_REQUIRE_HTTPS = False
WEBHOOKS_ALLOW_LOOPBACK = True  # the demo's receivers run on this machine
BACKOFFICE_REQUIRE_2FA = False  # the demo admin has no TOTP device; production forces it on
