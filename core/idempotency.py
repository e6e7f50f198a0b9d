"""Idempotency-Key handling for every POST, implemented once as a DRF view mixin.

The first request with a key claims a row (unique on merchant + key) and stores a fingerprint of
method, path and canonical body. A retry with the same fingerprint replays the stored response
with `Idempotent-Replayed: true`; while the first is still running it gets 409; with other
parameters it gets 422. Responses that changed nothing (400/401/404/413/429) and 5xx are not
stored, so the client may fix and retry; services stay safe on such a retry because business
rows carry the key too (unique on merchant + idempotency_key).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import IdempotencyInFlight, IdempotencyMismatch, InvalidRequest
from core.models import IdempotencyKey, Merchant

logger = logging.getLogger(__name__)

HEADER = "HTTP_IDEMPOTENCY_KEY"
NOT_STORED_STATUSES = {400, 401, 404, 405, 413, 415, 429}


class _Replay(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body or b"{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", errors="replace")
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def _validate_key(raw: str) -> str:
    if not 1 <= len(raw) <= 255 or not raw.isprintable() or not raw.isascii():
        raise InvalidRequest(
            "Idempotency-Key must be 1–255 printable ASCII characters.",
            code="idempotency_key_invalid", param="Idempotency-Key",
        )
    return raw


def _claim(merchant: Merchant, key: str, method: str, path: str, fp: str) -> IdempotencyKey:
    """Claim the key, or raise _Replay / 409 / 422 for a key already used."""
    now = timezone.now()
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(
                merchant=merchant, key=key, fingerprint=fp, method=method, path=path,
                status=IdempotencyKey.Status.IN_PROGRESS, locked_at=now,
            )
    except IntegrityError:
        pass
    with transaction.atomic():
        existing = (
            IdempotencyKey.objects.select_for_update()
            .filter(merchant=merchant, key=key)
            .first()
        )
        if existing is None:  # reaped between our insert and this read: claim it now
            return IdempotencyKey.objects.create(
                merchant=merchant, key=key, fingerprint=fp, method=method, path=path,
                status=IdempotencyKey.Status.IN_PROGRESS, locked_at=now,
            )
        if existing.fingerprint != fp:
            raise IdempotencyMismatch(
                "This Idempotency-Key was already used with different parameters "
                f"({existing.method} {existing.path}). Use a new key for a new request.",
                param="Idempotency-Key",
            )
        if existing.status == IdempotencyKey.Status.COMPLETED:
            response = Response(existing.response_body, status=existing.response_status)
            response["Idempotent-Replayed"] = "true"
            raise _Replay(response)
        stale_after = timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS)
        if now - existing.locked_at < stale_after:
            raise IdempotencyInFlight(
                "A request with this Idempotency-Key is still being processed; retry later.",
                param="Idempotency-Key", headers={"Retry-After": "1"},
            )
        # The first request died while holding the key: take it over. The service finds the
        # business row written under the same key, so this resumes instead of duplicating.
        logger.warning("taking over stale idempotency key id=%s", existing.pk)
        existing.locked_at = now
        existing.save(update_fields=["locked_at"])
        return existing


class IdempotentMixin:
    """Mix into an APIView: POSTs with an Idempotency-Key are claimed, stored and replayed."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        self._idempotency_row: IdempotencyKey | None = None
        raw = request.META.get(HEADER)
        if request.method != "POST" or raw is None:
            return
        key = _validate_key(raw)
        fp = fingerprint(request.method, request.path, request.body)
        self._idempotency_row = _claim(request.user, key, request.method, request.path, fp)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        row = getattr(self, "_idempotency_row", None)
        if row is not None:
            self._idempotency_row = None
            if response.status_code in NOT_STORED_STATUSES or response.status_code >= 500:
                IdempotencyKey.objects.filter(pk=row.pk).delete()
            else:
                IdempotencyKey.objects.filter(pk=row.pk).update(
                    status=IdempotencyKey.Status.COMPLETED,
                    response_status=response.status_code,
                    response_body=response.data,
                    completed_at=timezone.now(),
                )
        return super().finalize_response(request, response, *args, **kwargs)


def idempotency_reap(*, older_than: timedelta | None = None, batch_size: int = 5000) -> int:
    """Delete keys past their TTL in batches; returns how many went."""
    ttl = older_than or timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    cutoff = timezone.now() - ttl
    total = 0
    while True:
        ids = list(
            IdempotencyKey.objects.filter(created_at__lt=cutoff)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return total
        total += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]
