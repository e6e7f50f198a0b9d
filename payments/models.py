"""Payments, refunds, provider attempts, and the customers and saved payment methods they charge.

Status fields are django-fsm-2 fields with `protected=True`: only the transition methods below
change them, and only services call those methods. PostgreSQL enforces the same table of
transitions with a trigger (migration 0002), and CHECK constraints keep amounts in range.
"""

from datetime import datetime

from django.db import models
from django.db.models import F, Q
from django_fsm import FSMField, FSMModelMixin, transition

from core.ids import PublicIdField
from core.models import (
    Merchant,
    MerchantObject,
    ProviderAttempt,
    merchant_object_constraints,
    merchant_object_indexes,
    money_object_constraints,
    money_object_indexes,
)
from core.money import MAX_AMOUNT


class Customer(MerchantObject):
    """A merchant's customer (`cus_…`): who saved payment methods belong to."""

    id = PublicIdField(prefix="cus")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="customers")
    email = models.CharField(max_length=254, blank=True, default="")
    name = models.CharField(max_length=200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = merchant_object_constraints("customer")
        indexes = [
            *merchant_object_indexes("customer"),
            models.Index(fields=["merchant", "email"], name="customer_merchant_email"),
        ]


class PaymentMethod(MerchantObject):
    """A card saved at an acquirer's vault (`pm_…`). We never see the card: only the tokens
    each acquirer issued for it (`PaymentMethodToken`, one per acquirer it is enrolled with) and
    what the first acquirer told us about it (brand, last four digits, expiry, and the scheme's
    card-on-file token that lets another acquirer enrol the same card)."""

    id = PublicIdField(prefix="pm")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT,
                                 related_name="payment_methods")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="payment_methods")
    brand = models.CharField(max_length=32, blank=True, default="")
    last4 = models.CharField(max_length=4, blank=True, default="")
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    # The scheme's card-on-file token, encrypted (core.crypto): what enrols the card at a
    # further acquirer. Never a card number.
    network_token = models.TextField(blank=True, default="", editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    detached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            *merchant_object_constraints("paymentmethod"),
            # A detached method belongs to nobody and is never charged again.
            models.CheckConstraint(condition=Q(detached_at__isnull=True)
                                   | Q(customer__isnull=True),
                                   name="payment_method_detached_has_no_customer"),
        ]
        indexes = [
            *merchant_object_indexes("paymentmethod"),
            models.Index(fields=["customer", "-created_at", "-id"], name="pm_customer_recent"),
        ]

    @property
    def is_detached(self) -> bool:
        return self.detached_at is not None


class PaymentMethodToken(models.Model):
    """The token one acquirer issued for a saved payment method: sent only to that acquirer."""

    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT,
                                       related_name="tokens")
    provider = models.CharField(max_length=32)
    token = models.CharField(max_length=128)
    # Where it came from: the merchant's front-end tokenized the card there ("saved"), or we
    # enrolled the card's network token there when routing needed it ("enrolled").
    origin = models.CharField(max_length=16, default="saved")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["payment_method", "provider"],
                                    name="payment_method_token_one_per_provider"),
            models.UniqueConstraint(fields=["provider", "token"],
                                    name="payment_method_token_unique"),
            models.CheckConstraint(condition=Q(origin__in=["saved", "enrolled"]),
                                   name="payment_method_token_origin_known"),
        ]

    def __str__(self) -> str:
        return f"{self.payment_method_id} at {self.provider}"


class PaymentStatus(models.TextChoices):
    CREATED = "created"
    AUTHORIZATION_REQUESTED = "authorization_requested"
    # The provider wants the customer authenticated first (3-D Secure): `next_action` says where.
    REQUIRES_ACTION = "requires_action"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    SETTLED = "settled"
    REFUNDED = "refunded"
    CHARGED_BACK = "charged_back"
    FAILED = "failed"
    CANCELED = "canceled"


# The contract's table, used by the FSM below and by the PostgreSQL trigger (migration 0002,
# replaced by each migration that changes the table).
PAYMENT_TRANSITIONS: list[tuple[str, str]] = [
    (PaymentStatus.CREATED, PaymentStatus.AUTHORIZATION_REQUESTED),
    (PaymentStatus.AUTHORIZATION_REQUESTED, PaymentStatus.AUTHORIZED),
    (PaymentStatus.AUTHORIZATION_REQUESTED, PaymentStatus.CAPTURED),
    (PaymentStatus.AUTHORIZATION_REQUESTED, PaymentStatus.FAILED),
    (PaymentStatus.AUTHORIZATION_REQUESTED, PaymentStatus.REQUIRES_ACTION),
    (PaymentStatus.REQUIRES_ACTION, PaymentStatus.AUTHORIZED),
    (PaymentStatus.REQUIRES_ACTION, PaymentStatus.CAPTURED),
    (PaymentStatus.REQUIRES_ACTION, PaymentStatus.FAILED),
    (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED),
    (PaymentStatus.CREATED, PaymentStatus.CANCELED),
    (PaymentStatus.AUTHORIZED, PaymentStatus.CANCELED),
    (PaymentStatus.CAPTURED, PaymentStatus.SETTLED),
    (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED),
    (PaymentStatus.SETTLED, PaymentStatus.REFUNDED),
    (PaymentStatus.CAPTURED, PaymentStatus.CHARGED_BACK),
    (PaymentStatus.SETTLED, PaymentStatus.CHARGED_BACK),
    (PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK),
]

# A provider's challenge page fit for a customer's browser (the CHECK
# `payment_next_action_url_http` and payments.services): http(s), a host, and nothing browsers and
# we would read differently (userinfo, backslash, whitespace, quotes). PostgreSQL and Python read it
# alike.
CHALLENGE_PAGE_SQL = r'^https?://[^\s/?#@\\"<>]+([/?#][^\s\\"<>]*)?$'

# Statuses of a payment waiting for its authorization's answer (from the provider, or from the
# customer's authentication at the provider): an answer may still move it.
AWAITING_AUTHORIZATION = frozenset({PaymentStatus.AUTHORIZATION_REQUESTED,
                                    PaymentStatus.REQUIRES_ACTION})

# Statuses of a payment whose funds were captured (whatever happened to them since).
FUNDS_CAPTURED = frozenset({PaymentStatus.CAPTURED, PaymentStatus.SETTLED,
                            PaymentStatus.REFUNDED, PaymentStatus.CHARGED_BACK})

# The statuses each action accepts. The services refuse the others; the admin and the
# back-office read the same sets to offer an action, so the three never disagree.
ACTION_STATUSES: dict[str, frozenset[str]] = {
    "capture": frozenset({PaymentStatus.AUTHORIZED}),
    "cancel": frozenset({PaymentStatus.CREATED, PaymentStatus.AUTHORIZED}),
    "refund": frozenset({PaymentStatus.CAPTURED, PaymentStatus.SETTLED}),
    # A payment with captured funds: a second partial chargeback may follow a lost one.
    "dispute": FUNDS_CAPTURED,
    "settle": FUNDS_CAPTURED,
}


# The most delayed retries a payment may ever get (settings.PAYMENT_RETRY_DELAYS is at most this
# long; a CHECK constraint holds it).
MAX_RETRIES = 8


class CancellationReason(models.TextChoices):
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    ABANDONED = "abandoned"
    EXPIRED = "expired"  # only the janitor: the authorization outlived its provider's validity


class CaptureMethod(models.TextChoices):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Payment(FSMModelMixin, MerchantObject):
    id = PublicIdField(prefix="pay")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="payments")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    capture_method = models.CharField(max_length=16, choices=CaptureMethod.choices,
                                      default=CaptureMethod.AUTOMATIC)
    payment_method = models.CharField(max_length=64)
    # A saved payment method (its id is also `payment_method`), and whose it is.
    saved_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, null=True,
                                     blank=True, related_name="payments")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="payments")
    # A merchant-initiated charge of a stored credential (the customer is not present).
    off_session = models.BooleanField(default=False, db_default=False)
    # Delayed retries of an off-session soft decline: how many were made, and when the next is
    # due (set only while the payment waits for it, authorization_requested).
    retry_count = models.PositiveSmallIntegerField(default=0, db_default=0)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    # When the provider lets an authorization lapse (its own validity from the approval); the
    # janitor voids it then (cancellation_reason `expired`).
    authorization_expires_at = models.DateTimeField(null=True, blank=True)
    cancellation_reason = models.CharField(max_length=32, choices=CancellationReason.choices,
                                           blank=True, default="", db_default="")
    # Strong customer authentication (3-D Secure): where the merchant wants the customer sent
    # back, and while `requires_action`, the provider's challenge page and when an unfinished
    # challenge counts as abandoned (the janitor fails the payment then).
    return_url = models.CharField(max_length=2048, blank=True, default="", db_default="")
    next_action_url = models.CharField(max_length=2048, blank=True, default="", db_default="")
    action_expires_at = models.DateTimeField(null=True, blank=True)
    description = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    status = FSMField(max_length=32, choices=PaymentStatus.choices, default=PaymentStatus.CREATED,
                      protected=True)
    amount_authorized = models.BigIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    amount_disputed = models.BigIntegerField(default=0)
    provider = models.CharField(max_length=32, blank=True, default="")
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        constraints = [
            *money_object_constraints("payment", PaymentStatus.values, sent_to_provider=True),
            models.CheckConstraint(
                condition=Q(amount_authorized__gte=0, amount_authorized__lte=F("amount")),
                name="payment_authorized_within_amount"),
            models.CheckConstraint(
                condition=Q(amount_captured__gte=0, amount_captured__lte=F("amount")),
                name="payment_captured_within_amount"),
            models.CheckConstraint(condition=Q(amount_captured__lte=F("amount_authorized")),
                                   name="payment_captured_within_authorized"),
            models.CheckConstraint(
                condition=Q(cancellation_reason__in=["", *CancellationReason.values]),
                name="payment_cancellation_reason_known"),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0, amount_refunded__lte=F("amount_captured")),
                name="payment_refunded_within_captured"),
            models.CheckConstraint(
                condition=Q(amount_disputed__gte=0, amount_disputed__lte=F("amount_captured")),
                name="payment_disputed_within_captured"),
            # Refunded + disputed may exceed captured: a chargeback on money already refunded is
            # a provider fact we record (with a break for staff to contest), never refuse. What
            # a merchant may *request* stays within captured − disputed (refund guard trigger).
            models.CheckConstraint(condition=Q(capture_method__in=CaptureMethod.values),
                                   name="payment_capture_method_known"),
            # Off-session means charging a credential the customer stored with us.
            models.CheckConstraint(condition=Q(off_session=False)
                                   | Q(saved_method__isnull=False),
                                   name="payment_off_session_needs_saved_method"),
            # Bounded in the database too, whatever the schedule setting says.
            models.CheckConstraint(condition=Q(retry_count__lte=MAX_RETRIES),
                                   name="payment_retries_bounded"),
            models.CheckConstraint(
                condition=Q(next_retry_at__isnull=True)
                | Q(status="authorization_requested", off_session=True),
                name="payment_retry_only_while_waiting"),
            # A challenge page exactly while the customer has one to complete.
            models.CheckConstraint(
                condition=Q(status="requires_action", next_action_url__gt="",
                            action_expires_at__isnull=False)
                | (~Q(status="requires_action") & Q(next_action_url="",
                                                    action_expires_at__isnull=True)),
                name="payment_next_action_iff_requires_action"),
            # The provider's challenge page goes to customers' browsers: a web address only.
            models.CheckConstraint(
                condition=Q(next_action_url="") | Q(next_action_url__regex=CHALLENGE_PAGE_SQL),
                name="payment_next_action_url_http"),
        ]
        indexes = [
            *money_object_indexes("payment"),
            models.Index(fields=["merchant", "status", "-created_at"],
                         name="payment_merchant_status"),
            models.Index(fields=["next_retry_at"], name="payment_retry_due",
                         condition=Q(next_retry_at__isnull=False)),
            models.Index(fields=["authorization_expires_at"], name="payment_authorization_expiry",
                         condition=Q(status="authorized")),
            models.Index(fields=["action_expires_at"], name="payment_action_expiry",
                         condition=Q(status="requires_action")),
        ]

    def __str__(self) -> str:
        return self.id

    def allows(self, action: str) -> bool:
        """Whether the payment's status accepts `action` (a key of ACTION_STATUSES)."""
        return self.status in ACTION_STATUSES[action]

    # -- transitions (called only from payments.services) ------------------------------------
    @transition(field=status, source=PaymentStatus.CREATED,
                target=PaymentStatus.AUTHORIZATION_REQUESTED)
    def request_authorization(self) -> None:
        pass

    @transition(field=status, source=PaymentStatus.AUTHORIZATION_REQUESTED,
                target=PaymentStatus.REQUIRES_ACTION)
    def mark_requires_action(self, url: str, expires_at: datetime) -> None:
        self.next_action_url, self.action_expires_at = url, expires_at

    def _action_done(self) -> None:
        self.next_action_url, self.action_expires_at = "", None

    @transition(field=status, source=list(AWAITING_AUTHORIZATION),
                target=PaymentStatus.AUTHORIZED)
    def mark_authorized(self, amount: int, expires_at: datetime | None = None) -> None:
        self._action_done()
        self.amount_authorized = amount
        self.authorization_expires_at = expires_at

    @transition(field=status, source=[*AWAITING_AUTHORIZATION, PaymentStatus.AUTHORIZED],
                target=PaymentStatus.CAPTURED)
    def mark_captured(self, amount: int) -> None:
        """The capture that ends the authorization: `amount` adds to what partial captures
        took before it (none for a single capture); the rest of the authorization is released."""
        self._action_done()
        self.amount_captured += amount
        self.amount_authorized = max(self.amount_authorized, self.amount_captured)

    @transition(field=status, source=list(AWAITING_AUTHORIZATION), target=PaymentStatus.FAILED)
    def mark_failed(self, code: str, message: str) -> None:
        self._action_done()
        self.failure_code, self.failure_message = code, message[:500]

    @transition(field=status, source=[PaymentStatus.CREATED, PaymentStatus.AUTHORIZED],
                target=PaymentStatus.CANCELED)
    def mark_canceled(self) -> None:
        pass

    @transition(field=status, source=PaymentStatus.CAPTURED, target=PaymentStatus.SETTLED)
    def mark_settled(self) -> None:
        pass

    @transition(field=status, source=[PaymentStatus.CAPTURED, PaymentStatus.SETTLED],
                target=PaymentStatus.REFUNDED)
    def mark_refunded(self) -> None:
        pass

    @transition(field=status,
                source=[PaymentStatus.CAPTURED, PaymentStatus.SETTLED, PaymentStatus.REFUNDED],
                target=PaymentStatus.CHARGED_BACK)
    def mark_charged_back(self) -> None:
        pass


class RefundStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundReason(models.TextChoices):
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"


class RefundOrigin(models.TextChoices):
    REQUEST = "request"  # asked for by the merchant (API) or staff (back-office)
    PROVIDER = "provider"  # reported by the provider (made in its dashboard, or its notice)


class Refund(FSMModelMixin, MerchantObject):
    id = PublicIdField(prefix="re")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="refunds")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=32, choices=RefundReason.choices, blank=True, default="")
    status = FSMField(max_length=16, choices=RefundStatus.choices, default=RefundStatus.PENDING,
                      protected=True)
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    origin = models.CharField(max_length=16, choices=RefundOrigin.choices,
                              default=RefundOrigin.REQUEST, db_default=RefundOrigin.REQUEST,
                              editable=False)

    class Meta:
        constraints = [
            *money_object_constraints("refund", RefundStatus.values, sent_to_provider=False),
            models.CheckConstraint(condition=Q(origin__in=RefundOrigin.values),
                                   name="refund_origin_known"),
        ]
        indexes = [
            *money_object_indexes("refund"),
            # Settlement matching and provider webhooks find refunds by the provider's reference.
            models.Index(fields=["provider_reference"], name="refund_provider_reference"),
        ]

    def __str__(self) -> str:
        return self.id

    @transition(field=status, source=RefundStatus.PENDING, target=RefundStatus.SUCCEEDED)
    def mark_succeeded(self, provider_reference: str) -> None:
        self.provider_reference = provider_reference

    @transition(field=status, source=RefundStatus.PENDING, target=RefundStatus.FAILED)
    def mark_failed(self, code: str, message: str) -> None:
        self.failure_code, self.failure_message = code, message[:500]


class AttemptKind(models.TextChoices):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    DISPUTE_EVIDENCE = "dispute_evidence"  # a dispute's evidence sent to the provider
    # A saved payment method's network token enrolled at this provider (no money moves).
    ENROLL = "enroll"
    # An open authorization raised to `amount`, its new total (incremental authorization).
    INCREMENT = "increment"


# The provider calls on an authorized payment: at most one without an answer at a time (the
# services and the trigger payments_paymentattempt_guard_operation), found by the janitor.
OPERATION_KINDS = (AttemptKind.CAPTURE, AttemptKind.VOID, AttemptKind.INCREMENT)


class AttemptStatus(models.TextChoices):
    REQUESTED = "requested"  # committed before the call; the call may or may not have happened
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"  # sent, answer lost: only a status lookup may resolve it


class PaymentAttempt(ProviderAttempt):
    """One call to a provider for a payment or a refund (core.models.ProviderAttempt)."""

    id = PublicIdField(prefix="att")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="attempts")
    refund = models.ForeignKey(Refund, on_delete=models.PROTECT, related_name="attempts",
                               null=True, blank=True)
    dispute = models.ForeignKey("Dispute", on_delete=models.PROTECT, related_name="attempts",
                                null=True, blank=True)
    kind = models.CharField(max_length=16, choices=AttemptKind.choices)
    status = models.CharField(max_length=16, choices=AttemptStatus.choices,
                              default=AttemptStatus.REQUESTED)
    # A capture: whether it is the last one (releasing the rest of the authorization) or a
    # partial capture leaving the rest open for more (`final_capture: false`).
    is_final = models.BooleanField(default=True, db_default=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AttemptStatus.values),
                                   name="attempt_status_known"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="attempt_amount_nonnegative"),
            # Evidence attempts, and only they, belong to a dispute.
            models.CheckConstraint(
                condition=Q(kind=AttemptKind.DISPUTE_EVIDENCE, dispute__isnull=False)
                | (~Q(kind=AttemptKind.DISPUTE_EVIDENCE) & Q(dispute__isnull=True)),
                name="attempt_dispute_iff_evidence"),
            # A dispute's evidence goes to the provider once: at most one submission that may
            # have reached it (sent, answer unknown or accepted); a refused one may be retried.
            models.UniqueConstraint(
                fields=["dispute"], condition=Q(kind=AttemptKind.DISPUTE_EVIDENCE) & Q(
                    status__in=[AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN,
                                AttemptStatus.APPROVED]),
                name="attempt_one_evidence_submission_per_dispute"),
        ]
        indexes = [
            models.Index(fields=["payment", "created_at"], name="attempt_payment"),
            models.Index(fields=["status", "created_at"], name="attempt_status_age"),
        ]


class DisputeStatus(models.TextChoices):
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


class DisputeReason(models.TextChoices):
    FRAUDULENT = "fraudulent"
    PRODUCT_NOT_RECEIVED = "product_not_received"
    PRODUCT_UNACCEPTABLE = "product_unacceptable"
    DUPLICATE = "duplicate"
    SUBSCRIPTION_CANCELED = "subscription_canceled"
    CREDIT_NOT_PROCESSED = "credit_not_processed"
    GENERAL = "general"


# What an evidence file shows (its field in the dispute's evidence), as at Stripe.
EVIDENCE_FILE_FIELDS: dict[str, str] = {
    "receipt": "Receipt",
    "customer_communication": "Customer communication",
    "shipping_documentation": "Shipping documentation",
    "service_documentation": "Service documentation",
    "refund_policy": "Refund policy",
    "cancellation_policy": "Cancellation policy",
    "uncategorized_file": "Other",
}


class DisputeDecider(models.TextChoices):
    """Who set a closed dispute's outcome."""

    PROVIDER = "provider"  # its notice or its lookup (the normal path)
    MERCHANT = "merchant"  # accepted the loss (API close, or an approved back-office request)
    STAFF = "staff"  # recorded from a provider letter outside the API (back-office)


class Dispute(FSMModelMixin, models.Model):
    """A chargeback. Opening it holds the amount (available → disputed); lost charges it back,
    won releases it. `payment.amount_disputed` is the sum of its open and lost disputes."""

    id = PublicIdField(prefix="dp")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="disputes")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="disputes")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=32, choices=DisputeReason.choices,
                              default=DisputeReason.GENERAL)
    status = FSMField(max_length=16, choices=DisputeStatus.choices,
                      default=DisputeStatus.NEEDS_RESPONSE, protected=True)
    evidence = models.JSONField(default=dict, blank=True)
    evidence_submitted_at = models.DateTimeField(null=True, blank=True)
    due_by = models.DateTimeField()
    provider = models.CharField(max_length=32, blank=True, default="")
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=16, choices=DisputeDecider.choices, blank=True,
                                  default="", db_default="")
    # When the "evidence due soon" reminder went out (once per dispute).
    reminded_at = models.DateTimeField(null=True, blank=True)
    # When the dispute job last asked the provider where this dispute stands.
    provider_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=1, amount__lte=MAX_AMOUNT),
                                   name="dispute_amount_range"),
            models.CheckConstraint(condition=Q(status__in=DisputeStatus.values),
                                   name="dispute_status_known"),
            # Closed exactly when decided, by someone we can name; under review only once
            # evidence went out.
            models.CheckConstraint(
                condition=(Q(status__in=[DisputeStatus.WON, DisputeStatus.LOST],
                             closed_at__isnull=False, decided_by__in=DisputeDecider.values)
                           | Q(status__in=[DisputeStatus.NEEDS_RESPONSE,
                                           DisputeStatus.UNDER_REVIEW],
                               closed_at__isnull=True, decided_by="")),
                name="dispute_closed_iff_decided"),
            models.CheckConstraint(
                condition=~Q(status=DisputeStatus.UNDER_REVIEW)
                | Q(evidence_submitted_at__isnull=False),
                name="dispute_under_review_has_evidence"),
            models.UniqueConstraint(fields=["provider", "provider_reference"],
                                    condition=~Q(provider_reference=""),
                                    name="dispute_provider_reference_unique"),
        ]
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="dispute_merchant_recent"),
            models.Index(fields=["status", "due_by"], name="dispute_status_due"),
            # The dispute job's lookups: open disputes, least recently asked first.
            models.Index(fields=["provider_checked_at"], name="dispute_open_lookup",
                         condition=Q(status__in=["needs_response", "under_review"])),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_open(self) -> bool:
        return self.status in (DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW)

    @transition(field=status, source=[DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW],
                target=DisputeStatus.UNDER_REVIEW)
    def mark_under_review(self) -> None:
        pass

    @transition(field=status, source=[DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW],
                target=DisputeStatus.WON)
    def mark_won(self) -> None:
        pass

    @transition(field=status, source=[DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW],
                target=DisputeStatus.LOST)
    def mark_lost(self) -> None:
        pass


class FilePurpose(models.TextChoices):
    DISPUTE_EVIDENCE = "dispute_evidence"


class FileType(models.TextChoices):
    """What an upload is, judged by its first bytes (never its name or declared type)."""

    PDF = "application/pdf", "PDF"
    PNG = "image/png", "PNG"
    JPEG = "image/jpeg", "JPEG"


# The database's own ceiling for one file; EVIDENCE_MAX_BYTES (default 5 MiB) is the real limit.
FILE_SIZE_CEILING = 50 * 1024 * 1024


class EvidenceFile(models.Model):
    """A file a merchant (API) or staff (back-office) uploaded as dispute evidence. The bytes
    live encrypted in EVIDENCE_STORAGE_DIR, outside anything the web server serves, under a
    random name with no extension; this row says what they are. Immutable once written."""

    id = PublicIdField(prefix="file")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="files")
    purpose = models.CharField(max_length=32, choices=FilePurpose.choices)
    content_type = models.CharField(max_length=32, choices=FileType.choices)
    filename = models.CharField(max_length=255, help_text="As uploaded, cleaned; display only.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_name = models.CharField(max_length=128, unique=True, editable=False)
    uploaded_by = models.CharField(max_length=160,
                                   help_text="'api' or 'staff:<username>'.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(size__gte=1, size__lte=FILE_SIZE_CEILING),
                                   name="file_size_range"),
            models.CheckConstraint(condition=Q(purpose__in=FilePurpose.values),
                                   name="file_purpose_known"),
            models.CheckConstraint(condition=Q(content_type__in=FileType.values),
                                   name="file_type_known"),
            models.CheckConstraint(condition=Q(sha256__regex=r"^[0-9a-f]{64}$"),
                                   name="file_sha256_hex"),
        ]
        indexes = [models.Index(fields=["merchant", "-created_at", "-id"],
                                name="file_merchant_recent")]

    def __str__(self) -> str:
        return self.id
