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
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from core import crypto, metrics
from core.errors import IdempotencyInFlight, IdempotencyMismatch, InvalidRequest
from core.models import IdempotencyKey, Merchant
from core.parsers import parse_json_object

logger = logging.getLogger(__name__)

HEADER = "HTTP_IDEMPOTENCY_KEY"
# 422 too: a key whose row was reaped and that a business row refused (other parameters) must
# not now be stored under the refused request's fingerprint.
NOT_STORED_STATUSES = {400, 401, 404, 405, 413, 415, 422, 429}


class _Replay(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Method, path and the canonical body (the same strict parse as the API's: a body the API
    would refuse is fingerprinted as its bytes, never parsed unbounded)."""
    try:
        canonical = json.dumps(parse_json_object(body or b"{}"), sort_keys=True,
                               separators=(",", ":"))
    except (ValueError, InvalidRequest):
        canonical = body.decode("utf-8", errors="replace")
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def same_request_or_422(row: Any, fingerprint: str) -> Any:
    """A business row found by its Idempotency-Key (after the key's own row was reaped, or by a
    retry that died after committing): the same request gets the row, other parameters get
    422, at any age. Rows written before fingerprints were kept have none and match."""
    stored = getattr(row, "idempotency_fingerprint", "")
    if stored and fingerprint and stored != fingerprint:
        metrics.IDEMPOTENCY.labels("mismatch").inc()
        raise IdempotencyMismatch(
            "This Idempotency-Key was already used with different parameters for "
            f"{row.pk}. Use a new key for a new request.", param="Idempotency-Key")
    return row


def _validate_key(raw: str) -> str:
    if not 1 <= len(raw) <= 255 or not raw.isprintable() or not raw.isascii():
        raise InvalidRequest(
            "Idempotency-Key must be 1–255 printable ASCII characters.",
            code="idempotency_key_invalid", param="Idempotency-Key",
        )
    return raw


# One round trip claims a new key or reads a used one. The INSERT's RETURNING gives the claimed
# row; otherwise the SELECT, from the same statement's snapshot, gives the row that was there. A
# row committed by a concurrent claim after that snapshot makes the INSERT do nothing and is not
# yet visible to the SELECT: no row comes back and _claim asks again with a fresh snapshot.
_CLAIM_SQL = """
    WITH claimed AS (
        INSERT INTO core_idempotencykey
               (merchant_id, key, fingerprint, method, path, status, created_at, locked_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (merchant_id, key) DO NOTHING
        RETURNING id, fingerprint, method, path, status, response_status, response_body,
                  locked_at)
    SELECT *, true AS is_claimed FROM claimed
    UNION ALL
    SELECT id, fingerprint, method, path, status, response_status, response_body, locked_at,
           false AS is_claimed
      FROM core_idempotencykey WHERE merchant_id = %s AND key = %s
"""


def _claim_or_read(merchant: Merchant, key: str, method: str, path: str, fp: str
                   ) -> IdempotencyKey | None:
    """The claimed row (`is_claimed`), the row already there, or None (see _CLAIM_SQL)."""
    now = timezone.now()
    rows = IdempotencyKey.objects.raw(_CLAIM_SQL, [
        merchant.pk, key, fp, method, path, IdempotencyKey.Status.IN_PROGRESS, now, now,
        merchant.pk, key,
    ])
    return next(iter(rows), None)


def _claim(merchant: Merchant, key: str, method: str, path: str, fp: str) -> int:
    """Claim the key and return its row id, or raise _Replay / 409 / 422 for a used key.

    A new key and a replay (the common retry) each cost one statement."""
    for _ in range(3):  # a concurrent claim, a reap or a takeover can race the statement
        existing = _claim_or_read(merchant, key, method, path, fp)
        if existing is None:
            continue
        if existing.is_claimed:
            return existing.pk
        if existing.fingerprint != fp:
            metrics.IDEMPOTENCY.labels("mismatch").inc()
            raise IdempotencyMismatch(
                "This Idempotency-Key was already used with different parameters "
                f"({existing.method} {existing.path}). Use a new key for a new request.",
                param="Idempotency-Key",
            )
        if existing.status == IdempotencyKey.Status.COMPLETED:
            response = Response(_stored_body(existing.response_body),
                                status=existing.response_status)
            response["Idempotent-Replayed"] = "true"
            metrics.IDEMPOTENCY.labels("replayed").inc()
            raise _Replay(response)
        now = timezone.now()
        stale_after = timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS)
        if now - existing.locked_at >= stale_after:
            # The first request died while holding the key. Compare-and-swap on locked_at so
            # only one retry takes it over; the service then finds the business row written
            # under the same key, so this resumes instead of duplicating.
            took_over = IdempotencyKey.objects.filter(
                pk=existing.pk, status=IdempotencyKey.Status.IN_PROGRESS,
                locked_at=existing.locked_at,
            ).update(locked_at=now)
            if took_over:
                logger.warning("took over stale idempotency key id=%s", existing.pk)
                return existing.pk
        metrics.IDEMPOTENCY.labels("in_flight").inc()
        raise IdempotencyInFlight(
            "A request with this Idempotency-Key is still being processed; retry later.",
            param="Idempotency-Key", headers={"Retry-After": "1"},
        )
    raise IdempotencyInFlight("This Idempotency-Key is changing hands; retry later.",
                              param="Idempotency-Key", headers={"Retry-After": "1"})


_ENCRYPTED = "encrypted_response"


def _storable_body(data: Any, *, sensitive: bool) -> Any:
    """Responses that reveal a secret (a new webhook signing secret) are stored encrypted, so
    the idempotency table never holds one in plain text; everything else stays readable."""
    if not sensitive:
        return data
    return {_ENCRYPTED: crypto.encrypt(json.dumps(data))}


def _stored_body(body: Any) -> Any:
    if isinstance(body, dict) and set(body) == {_ENCRYPTED}:
        return json.loads(crypto.decrypt(body[_ENCRYPTED]))
    return body


def stored_secrets_reencrypt() -> int:
    """Key rotation (core.crypto.at_rest_register): the encrypted stored responses."""
    done = 0
    rows = IdempotencyKey.objects.filter(response_body__has_key=_ENCRYPTED)
    for row in rows.iterator(chunk_size=500):
        body = {_ENCRYPTED: crypto.reencrypt(row.response_body[_ENCRYPTED])}
        IdempotencyKey.objects.filter(pk=row.pk).update(response_body=body)
        done += 1
    return done


class IdempotentMixin:
    """Mix into an APIView: POSTs with an Idempotency-Key are claimed, stored and replayed.

    Set `idempotency_response_is_secret = True` on views whose answer carries a secret."""

    idempotency_response_is_secret = False

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        self._idempotency_row: int | None = None
        self._idempotency: dict[str, str] = {"idempotency_key": "",
                                             "idempotency_fingerprint": ""}
        raw = request.META.get(HEADER)
        if request.method != "POST" or raw is None:
            return
        key = _validate_key(raw)
        fp = self.request_fingerprint(request)
        self._idempotency_row = _claim(request.user, key, request.method, request.path, fp)
        self._idempotency = {"idempotency_key": key, "idempotency_fingerprint": fp}

    def request_fingerprint(self, request: Request) -> str:
        """What makes two requests "the same" (a view with a non-JSON body overrides it)."""
        return fingerprint(request.method, request.path, request.body)

    def idempotency(self, request: Request) -> dict[str, str]:
        """`idempotency_key` and `idempotency_fingerprint` for a create service, which keeps
        both on the row it writes."""
        return dict(getattr(self, "_idempotency", {"idempotency_key": "",
                                                   "idempotency_fingerprint": ""}))

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _Replay):
            return exc.response
        return super().handle_exception(exc)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        row_id = getattr(self, "_idempotency_row", None)
        if row_id is not None:
            self._idempotency_row = None
            if response.status_code in NOT_STORED_STATUSES or response.status_code >= 500:
                IdempotencyKey.objects.filter(pk=row_id).delete()
            else:
                IdempotencyKey.objects.filter(pk=row_id).update(
                    status=IdempotencyKey.Status.COMPLETED,
                    response_status=response.status_code,
                    response_body=_storable_body(
                        response.data, sensitive=self.idempotency_response_is_secret),
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
