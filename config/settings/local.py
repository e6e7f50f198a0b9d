"""Settings for `make run` on a developer machine."""

from config.settings.base import *  # noqa: F403

DEBUG = True
