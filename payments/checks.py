"""Checks for dispute evidence storage: a folder set in production, and never one a web server
serves (files there could be fetched, or run, by anyone who guesses a name); the public
https address customers come back to from a 3-D Secure challenge; and delayed retry delays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


def _served_folders() -> list[Path]:
    folders = [getattr(settings, "STATIC_ROOT", None), getattr(settings, "MEDIA_ROOT", None),
               *getattr(settings, "STATICFILES_DIRS", ())]
    return [Path(str(folder)).resolve() for folder in folders if folder]


def _overlaps(one: Path, other: Path) -> bool:
    return one == other or one.is_relative_to(other) or other.is_relative_to(one)


def served_overlaps(folder: str) -> list[str]:
    """The served folders (STATIC_ROOT, MEDIA_ROOT, STATICFILES_DIRS) `folder` overlaps."""
    resolved = Path(folder).resolve()
    return [str(path) for path in _served_folders() if _overlaps(resolved, path)]


@register()
def check_evidence_storage(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    folder = str(getattr(settings, "EVIDENCE_STORAGE_DIR", "") or "")
    if not folder:
        return []
    resolved = Path(folder).resolve()
    served = served_overlaps(folder)
    if served:
        return [Error(
            f"EVIDENCE_STORAGE_DIR ({resolved}) overlaps a folder the web server serves "
            f"({', '.join(served)}): uploaded evidence could be fetched or run by URL.",
            hint="Use a private folder outside STATIC_ROOT / MEDIA_ROOT / STATICFILES_DIRS.",
            id="payments.E002")]
    return []


@register(deploy=True)
def check_evidence_storage_set(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if getattr(settings, "EVIDENCE_STORAGE_DIR", ""):
        return []
    return [Error("EVIDENCE_STORAGE_DIR is not set: dispute evidence uploads would fail.",
                  hint="Point it at private, persistent storage (a volume no web server "
                       "serves), shared by the web and worker processes.", id="payments.E001")]


@register(deploy=True)
def check_public_base_url(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    if str(getattr(settings, "PUBLIC_URL", "")).startswith("https://"):
        return []
    return [Error("PUBLIC_URL is not an https:// address: customers returning from a "
                  "3-D Secure challenge would be sent nowhere, or over plain http.",
                  hint="Set it to the public https address of this deployment.",
                  id="payments.E003")]


@register()
def check_payment_retry_delays(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    from payments.models import MAX_RETRIES

    delays = list(getattr(settings, "PAYMENT_RETRY_DELAYS", []))
    if len(delays) <= MAX_RETRIES and all(
            isinstance(delay, int) and delay > 0 for delay in delays):
        return []
    return [Error(
        f"PAYMENT_RETRY_DELAYS is {delays}: each delay must be a positive number of seconds and "
        f"there may be at most {MAX_RETRIES}. A delay of 0 or less retries a declined card at "
        "once on every janitor run; entries past the bound would be ignored.",
        hint="Set it like 3600,86400,259200 (seconds after each soft decline).",
        id="payments.E004")]
