"""Settings for building the image (`deploy/build.sh`, which the Dockerfile runs): collectstatic
with production's static storage, and nothing else. No secret, database, broker or provider
credential is needed or read here, so a clean checkout with no .env builds."""

from config.settings.base import *  # noqa: F403

DEBUG = False
STORAGES = WHITENOISE_STORAGES  # noqa: F405 (the same storage production serves from)
