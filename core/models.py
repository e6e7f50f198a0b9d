"""Merchants, their API keys (stored hashed) and the idempotency keys of their requests; and what
the apps' money tables share: the rules PostgreSQL keeps on every payment, refund, deposit and
payout, and the columns of every provider attempt row."""

from collections.abc import Iterable

from django.db import models
from django.db.models import Q

from core import versions
from core.ids import PublicIdField
from core.money import MAX_AMOUNT


class Merchant(models.Model):
    id = PublicIdField(prefix="acct")
    name = models.CharField(max_length=200)
    is_live = models.BooleanField(default=False, help_text="Live mode; test mode when off.")
    # The API version the merchant's requests and webhooks render in unless a request names
    # another (core.versions): the newest one when the merchant was created.
    api_version = models.CharField(max_length=10, default=versions.latest)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=~Q(name=""), name="merchant_name_nonempty")]

    # DRF treats the authenticated principal like a user; a merchant is always authenticated.
    is_authenticated = True

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ApiKey(models.Model):
    """A secret key: only its SHA-256 is stored; `prefix` (first 12 chars) finds the row."""

    id = PublicIdField(prefix="key")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    is_live = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"{self.prefix}… ({state})"


class IdempotencyKey(models.Model):
    """One row per (merchant, Idempotency-Key): the in-flight lock, then the stored response."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    status = models.CharField(max_length=16, choices=Status.choices)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    locked_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "key"],
                                    name="idempotency_key_per_merchant"),
            models.CheckConstraint(
                condition=Q(status="in_progress") | Q(response_status__isnull=False),
                name="idempotency_completed_has_response",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class RateWindow(models.Model):
    """How often one key was used in one fixed window (core.ratelimit.hit), for the limits that
    must hold without Redis: a row per key and window, deleted by the hourly reaper once past
    `expires_at`."""

    key = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class MerchantObject(models.Model):
    """The columns of every object a merchant creates through the API: its Idempotency-Key with
    the request's fingerprint, and its times. Its rules: `merchant_object_constraints`,
    `merchant_object_indexes` (and, for money, `money_object_*`)."""

    idempotency_key = models.CharField(max_length=255, blank=True, default="", editable=False)
    # The request's fingerprint (core.idempotency): a key reused with other parameters is 422
    # even after the idempotency row is reaped.
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="",
                                               db_default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return str(self.pk)


def merchant_object_constraints(name: str) -> list[models.BaseConstraint]:
    """One row per merchant and Idempotency-Key (named `<name>_…`)."""
    return [models.UniqueConstraint(fields=["merchant", "idempotency_key"],
                                    condition=~Q(idempotency_key=""),
                                    name=f"{name}_idempotency_key_per_merchant")]


def merchant_object_indexes(name: str) -> list[models.Index]:
    """A merchant's newest first (the API's lists and their cursors)."""
    return [models.Index(fields=["merchant", "-created_at", "-id"],
                         name=f"{name}_merchant_recent")]


# An attempt stays open while it is requested (committed, maybe sent) or unknown (sent, answer
# lost): only then may an answer still be recorded. Every app's AttemptStatus has these two
# values; plain strings, so migrations serialise them as literals.
OPEN_ATTEMPT_STATUSES = ("requested", "unknown")


class ProviderAttempt(models.Model):
    """One call to a provider, committed before the call so a crash leaves a trace; its id is the
    provider idempotency key, so sending the same attempt again can never move money twice.
    Each app adds what the attempt is for and its own `status` choices."""

    provider = models.CharField(max_length=32)
    amount = models.BigIntegerField()
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.CharField(max_length=500, blank=True, default="")
    exchange = models.JSONField(default=dict, blank=True, help_text="Redacted request/response.")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def provider_idempotency_key(self) -> str:
        return self.id

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ATTEMPT_STATUSES


# The rules of every merchant object that moves money (payment, refund, deposit, payout), named
# `<name>_…`, kept by PostgreSQL.
def money_object_constraints(name: str, statuses: Iterable[str], *, sent_to_provider: bool
                             ) -> list[models.BaseConstraint]:
    """Its amount within range, a known status, one row per merchant and Idempotency-Key. An
    object sent to a provider under its own reference (not a refund, which follows its payment)
    also has a lower-case ISO 4217 currency and one row per provider reference."""
    rules = [
        models.CheckConstraint(condition=Q(amount__gte=1, amount__lte=MAX_AMOUNT),
                               name=f"{name}_amount_range"),
        models.CheckConstraint(condition=Q(status__in=list(statuses)),
                               name=f"{name}_status_known"),
        *merchant_object_constraints(name),
    ]
    if sent_to_provider:
        rules += [
            models.CheckConstraint(condition=Q(currency__regex=r"^[a-z]{3}$"),
                                   name=f"{name}_currency_format"),
            models.UniqueConstraint(fields=["provider", "provider_reference"],
                                    condition=~Q(provider_reference=""),
                                    name=f"{name}_provider_reference_unique"),
        ]
    return rules


def money_object_indexes(name: str) -> list[models.Index]:
    """A merchant's newest first (the API's lists), and by status and age (the janitor)."""
    return [
        *merchant_object_indexes(name),
        models.Index(fields=["status", "updated_at"], name=f"{name}_status_age"),
    ]
