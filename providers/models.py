"""Tables owned by the providers app: the sandbox provider's own books of charges, payouts and
deposits, routing rules (data, edited in the admin), what each decline code means (data,
changed through the back-office with an approver) and the per-provider circuit breakers.

The sandbox stands in for a remote PSP, so its state lives in its own tables (shared by the web
process and the workers) and is written in autocommit, never inside a caller's transaction.
"""

from django.core.exceptions import ValidationError
from django.db import models


class SandboxCharge(models.Model):
    reference = models.CharField(max_length=64, primary_key=True)
    merchant_reference = models.CharField(max_length=64, db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16)
    captured = models.BigIntegerField(default=0)
    refunded = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.reference


class SandboxOperation(models.Model):
    """One row per provider idempotency key: a repeated key replays the stored answer."""

    idempotency_key = models.CharField(max_length=255, primary_key=True)
    operation = models.CharField(max_length=16)
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.idempotency_key


class RoutingRule(models.Model):
    """Routing as data: the first active rule (lowest `priority`, then oldest) whose every set
    condition matches a payment decides the providers to try, in order. Blank conditions match
    anything. Targets with a weight share the first attempt between them (a volume split);
    the others follow in their listed order as fallbacks."""

    name = models.CharField(max_length=100)
    priority = models.PositiveIntegerField(default=100, help_text="Lower numbers are tried first.")
    is_active = models.BooleanField(default=True)
    merchant_id = models.CharField(
        max_length=64, blank=True, default="",
        help_text="A merchant id (acct_…); blank matches every merchant.")
    currency = models.CharField(
        max_length=3, blank=True, default="",
        help_text="Lower-case ISO 4217 code; blank matches every currency.")
    min_amount = models.BigIntegerField(null=True, blank=True,
                                        help_text="Inclusive, in minor units.")
    max_amount = models.BigIntegerField(null=True, blank=True,
                                        help_text="Inclusive, in minor units.")
    payment_method_brand = models.CharField(
        max_length=32, blank=True, default="",
        help_text="Card brand, e.g. visa or mastercard; blank matches every brand.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_amount__isnull=True) | models.Q(max_amount__isnull=True)
                | models.Q(min_amount__lte=models.F("max_amount")),
                name="routing_rule_amount_range"),
            models.CheckConstraint(
                condition=models.Q(currency="") | models.Q(currency__regex=r"^[a-z]{3}$"),
                name="routing_rule_currency_lower"),
        ]
        indexes = [models.Index(fields=["is_active", "priority"], name="routing_rule_active")]

    def __str__(self) -> str:
        return f"{self.name} (priority {self.priority})"

    def clean(self) -> None:
        self.currency = self.currency.lower()
        self.payment_method_brand = self.payment_method_brand.lower()


class RoutingTarget(models.Model):
    rule = models.ForeignKey(RoutingRule, on_delete=models.CASCADE, related_name="targets")
    provider = models.CharField(max_length=32, help_text="A registered provider code.")
    position = models.PositiveSmallIntegerField(default=0, help_text="Fallback order.")
    weight = models.PositiveIntegerField(
        default=0, help_text="Share of first attempts among weighted targets; 0: fallback only.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "provider"],
                                               name="routing_target_provider_once")]

    def __str__(self) -> str:
        return f"{self.provider} (weight {self.weight})"

    def clean(self) -> None:
        # Imported here: the registry imports the sandbox, which imports this module.
        from providers.registry import registered_codes

        if self.provider not in registered_codes():
            raise ValidationError({"provider": f"Unknown provider; one of {registered_codes()}."})


class BreakerState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class ProviderBreaker(models.Model):
    """One circuit breaker per provider, shared by every web process and worker; changed only
    under its row lock by `providers.breaker`."""

    provider = models.CharField(max_length=32, primary_key=True)
    state = models.CharField(max_length=16, choices=BreakerState.choices,
                             default=BreakerState.CLOSED)
    failure_count = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    probe_started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(state__in=BreakerState.values),
                                              name="provider_breaker_state_known")]

    def __str__(self) -> str:
        return f"{self.provider}: {self.state}"


class SandboxMovement(models.Model):
    """A payout or deposit on the sandbox's books: accepted `pending`, finished once by
    `SandboxProvider.complete` (payouts `paid`/`failed`, deposits `confirmed`/`failed`)."""

    reference = models.CharField(max_length=64, primary_key=True)
    kind = models.CharField(max_length=16)  # payout | deposit
    merchant_reference = models.CharField(max_length=64, db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    target = models.CharField(max_length=64)  # payout destination or deposit method
    status = models.CharField(max_length=16)
    failure_reason = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.reference} ({self.status})"


class DeclineMeaning(models.TextChoices):
    """What a declined authorization means for what happens next."""

    RETRY_OTHER_PROVIDER = "retry_other_provider", "Retry now on the next routed provider"
    RETRY_LATER_SAME_PROVIDER = ("retry_later_same_provider",
                                 "Retry later on the same provider (off-session only)")
    SOFT_DECLINE = "soft_decline", "Soft decline: may pass later (off-session retries)"
    HARD_DECLINE = "hard_decline", "Hard decline: never retried"
    DO_NOT_RETRY = "do_not_retry", "Not a card decline; never retried"


# Meanings whose off-session payments are tried again later, on the provider that declined.
RETRY_LATER = frozenset({DeclineMeaning.RETRY_LATER_SAME_PROVIDER, DeclineMeaning.SOFT_DECLINE})


class DeclineRule(models.Model):
    """One decline code's meaning. `provider` blank is the default for every provider; a row
    naming a provider overrides it for that provider. Seeded from the codes adapters map their
    providers' answers onto (providers.errors); changed only through an approved back-office
    request (backoffice.services.decline_rule_change_*), each change audited."""

    provider = models.CharField(max_length=32, blank=True, default="",
                                help_text="Blank: every provider without its own row.")
    code = models.CharField(max_length=64, help_text="The normalised code (providers.errors).")
    meaning = models.CharField(max_length=32, choices=DeclineMeaning.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "code"], name="decline_rule_unique"),
            models.CheckConstraint(condition=models.Q(meaning__in=DeclineMeaning.values),
                                   name="decline_rule_meaning_known"),
        ]

    def __str__(self) -> str:
        return f"{self.provider or 'any provider'}: {self.code} → {self.meaning}"
