"""Writes for merchants and API keys."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from core import versions
from core.models import ApiKey, Merchant

KEY_PREFIX_LENGTH = 12


def hash_api_key(raw_key: str) -> str:
    # Keys carry 190+ bits of randomness, so a fast hash is safe (no brute force is possible).
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw_key: str  # shown once, never stored


def api_key_create(*, merchant: Merchant, name: str = "") -> IssuedKey:
    mode = "live" if merchant.is_live else "test"
    raw = f"sk_{mode}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        merchant=merchant,
        name=name,
        prefix=raw[:KEY_PREFIX_LENGTH],
        hashed_key=hash_api_key(raw),
        is_live=merchant.is_live,
    )
    return IssuedKey(api_key=key, raw_key=raw)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


@transaction.atomic
def merchant_create(*, name: str, is_live: bool = False, api_version: str | None = None
                    ) -> tuple[Merchant, IssuedKey]:
    """A merchant pinned to `api_version` (default: the newest, core.versions) and its key."""
    if api_version is not None and not versions.is_version(api_version):
        raise ValueError(f"unknown API version {api_version!r}; one of {versions.VERSIONS}")
    merchant = Merchant.objects.create(name=name, is_live=is_live,
                                       api_version=api_version or versions.LATEST)
    return merchant, api_key_create(merchant=merchant, name="default")
