"""Deploy checks (`manage.py check --deploy`): production refuses DEBUG, the repository's
development secrets and placeholders, a missing or invalid FIELD_ENCRYPTION_KEYS, the demo API
key and webhook endpoints on loopback or plain http. Errors, not warnings: `check --deploy`
must fail."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, register
from django.db import ProgrammingError

from core import dev_credentials

# /metrics answers anyone when METRICS_TOKEN is empty (development); production needs a real one.
MIN_METRICS_TOKEN_LENGTH = 16


def _development_value(value: str) -> bool:
    return value in {dev_credentials.DEV_SECRET_KEY, dev_credentials.DEMO_API_KEY} or (
        dev_credentials.PLACEHOLDER_MARK in value)


def _valid_fernet_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return False
    return True


@register(deploy=True)
def check_production_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.DEBUG:
        errors.append(Error("DEBUG is on.", hint="Unset DJANGO_DEBUG in production.",
                            id="core.E001"))
    for setting, variable in (("SECRET_KEY", "DJANGO_SECRET_KEY"),
                              ("METRICS_TOKEN", "METRICS_TOKEN")):
        if _development_value(str(getattr(settings, setting, "") or "")):
            errors.append(Error(f"{variable} is a development value or a placeholder.",
                                hint=f"Set {variable} to a long random value.", id="core.E002"))
    if len(str(getattr(settings, "METRICS_TOKEN", "") or "").strip()) < MIN_METRICS_TOKEN_LENGTH:
        errors.append(Error(f"METRICS_TOKEN is empty or shorter than {MIN_METRICS_TOKEN_LENGTH} "
                            "characters: /metrics would be public or guessable.",
                            hint="Set METRICS_TOKEN to a long random value.", id="core.E007"))
    keys = list(getattr(settings, "FIELD_ENCRYPTION_KEYS", None) or [])
    if not keys or not all(_valid_fernet_key(key) for key in keys):
        errors.append(Error(
            "FIELD_ENCRYPTION_KEYS is missing or holds a value that is not a Fernet key.",
            hint="Comma-separated keys from Fernet.generate_key(), newest first.",
            id="core.E003"))
    # The demo and the tests deliver webhooks to this machine; in production that would let a
    # merchant aim our deliveries at services behind the firewall (SSRF).
    if getattr(settings, "WEBHOOKS_ALLOW_LOOPBACK", False):
        errors.append(Error("WEBHOOKS_ALLOW_LOOPBACK is on: webhook endpoints may be on this "
                            "machine or its loopback network.",
                            hint="Unset WEBHOOKS_ALLOW_LOOPBACK in production.", id="core.E005"))
    if not getattr(settings, "WEBHOOKS_REQUIRE_HTTPS", True):
        errors.append(Error("WEBHOOKS_REQUIRE_HTTPS is off: events would be sent in clear text.",
                            hint="Unset WEBHOOKS_REQUIRE_HTTPS in production.", id="core.E006"))
    return errors


@register(deploy=True)
def check_demo_api_key(app_configs: Any, databases: Any = None, **kwargs: Any) -> list[Error]:
    """The demo key is in the repository: an active one in this database lets anyone in. Runs
    with `check --deploy --database default` (checks do not touch the database otherwise)."""
    if not databases:
        return []
    from core.models import ApiKey
    from core.services import hash_api_key

    demo = hash_api_key(dev_credentials.DEMO_API_KEY)
    try:
        found = ApiKey.objects.filter(hashed_key=demo, revoked_at__isnull=True).exists()
    except ProgrammingError:  # not migrated yet (a fresh database): no key at all
        return []
    if found:
        return [Error("An active API key is the repository's demo key.",
                      hint="Revoke it (admin → API keys) before serving traffic.",
                      id="core.E004")]
    return []
