"""API-key authentication: `Authorization: Bearer sk_…` resolves to the key's merchant."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core.errors import AuthenticationFailed
from core.logging import bind_merchant
from core.models import ApiKey, Merchant
from core.services import hash_api_key

# `last_used_at` is refreshed at most this often, so a busy key does not write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Merchant, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme != self.keyword or not raw.startswith(("sk_test_", "sk_live_")):
            raise AuthenticationFailed("Malformed Authorization header; use `Bearer sk_test_…`.")
        # One indexed lookup on the hash whether the key exists or not.
        key = (
            ApiKey.objects.select_related("merchant")
            .filter(hashed_key=hash_api_key(raw))
            .first()
        )
        if key is None or key.revoked_at is not None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        bind_merchant(key.merchant_id)
        return key.merchant, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class IsMerchant(BasePermission):
    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.user, Merchant)
