"""Reads for payments and refunds: the API's (scoped to one merchant) and the refund rules
every app reads (`refundable_amount`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum

from core.metrics import oldest_age_seconds
from core.models import Merchant
from core.selectors import narrowed, one_or_404
from payments.models import (
    ACTION_STATUSES,
    OPERATION_KINDS,
    AttemptKind,
    AttemptStatus,
    Customer,
    Dispute,
    DisputeStatus,
    EvidenceFile,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)


def payment_get(*, merchant: Merchant, payment_id: str) -> Payment:
    return one_or_404(payment_list(merchant=merchant), payment_id, noun="payment")


def payment_list(
    *, merchant: Merchant, status: str | None = None, created_gte: datetime | None = None,
    created_lt: datetime | None = None,
) -> QuerySet[Payment]:
    return narrowed(Payment.objects.select_related("merchant").filter(merchant=merchant),
                    status=status, created_at__gte=created_gte, created_at__lt=created_lt)


def refund_get(*, merchant: Merchant, refund_id: str) -> Refund:
    return one_or_404(refund_list(merchant=merchant), refund_id, noun="refund")


def refund_list(*, merchant: Merchant, payment_id: str | None = None) -> QuerySet[Refund]:
    return narrowed(Refund.objects.filter(merchant=merchant), payment_id=payment_id)


def dispute_get(*, merchant: Merchant, dispute_id: str) -> Dispute:
    return one_or_404(dispute_list(merchant=merchant), dispute_id, noun="dispute")


def dispute_list(*, merchant: Merchant, payment_id: str | None = None,
                 status: str | None = None) -> QuerySet[Dispute]:
    return narrowed(Dispute.objects.filter(merchant=merchant), payment_id=payment_id,
                    status=status)


def file_get(*, merchant: Merchant, file_id: str) -> EvidenceFile:
    """One of this merchant's files, or 404 (another merchant's file is as missing as none)."""
    return one_or_404(file_list(merchant=merchant), file_id, noun="file")


def file_list(*, merchant: Merchant) -> QuerySet[EvidenceFile]:
    return EvidenceFile.objects.filter(merchant=merchant)


def dispute_files(dispute: Dispute) -> list[EvidenceFile]:
    """The files a dispute's evidence names, in field order."""
    named = [value for value in dispute.evidence.values()
             if isinstance(value, str) and value.startswith("file_")]
    rows = {row.pk: row for row in EvidenceFile.objects.filter(merchant_id=dispute.merchant_id,
                                                                pk__in=named)}
    return [rows[file_id] for file_id in named if file_id in rows]


OPEN_DISPUTE_STATUSES = (DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW)
# An evidence attempt in one of these may have reached the provider: the case is its to decide.
SENT_TO_PROVIDER = (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN, AttemptStatus.APPROVED)


def disputes_due_for_lookup(*, now: datetime, limit: int) -> list[str]:
    """Open disputes the provider knows (a case reference), not asked about for
    DISPUTE_LOOKUP_MINUTES, never asked first, then least recently asked."""
    cutoff = now - timedelta(minutes=settings.DISPUTE_LOOKUP_MINUTES)
    rows = (Dispute.objects.filter(status__in=OPEN_DISPUTE_STATUSES)
            .exclude(provider_reference="").exclude(provider="")
            .filter(Q(provider_checked_at__isnull=True) | Q(provider_checked_at__lt=cutoff))
            .order_by(F("provider_checked_at").asc(nulls_first=True), "id"))
    return list(rows.values_list("id", flat=True)[:limit])


def disputes_due_soon(*, now: datetime, merchant_id: str | None = None) -> QuerySet[Dispute]:
    """Disputes still waiting for evidence whose deadline falls within
    DISPUTE_REMINDER_HOURS (or has passed), soonest first: the back-office's queue."""
    rows = Dispute.objects.filter(
        status=DisputeStatus.NEEDS_RESPONSE,
        due_by__lte=now + timedelta(hours=settings.DISPUTE_REMINDER_HOURS))
    if merchant_id:
        rows = rows.filter(merchant_id=merchant_id)
    return rows.order_by("due_by", "id")


def disputes_due_soon_unreminded(*, now: datetime) -> list[str]:
    return list(disputes_due_soon(now=now).filter(reminded_at__isnull=True, due_by__gt=now)
                .values_list("id", flat=True)[:1000])
def customer_get(*, merchant: Merchant, customer_id: str) -> Customer:
    return one_or_404(Customer.objects.select_related("merchant").filter(merchant=merchant),
                      customer_id, noun="customer")


def customer_list(*, merchant: Merchant, email: str | None = None) -> QuerySet[Customer]:
    rows = Customer.objects.select_related("merchant").filter(merchant=merchant)
    return rows.filter(email=email) if email else rows


def payment_method_get(*, merchant: Merchant, payment_method_id: str) -> PaymentMethod:
    return one_or_404(PaymentMethod.objects.select_related("merchant").prefetch_related("tokens")
                      .filter(merchant=merchant), payment_method_id, noun="payment method")


def payment_method_list(*, merchant: Merchant, customer: str | None = None
                        ) -> QuerySet[PaymentMethod]:
    """A merchant's saved methods, or one customer's (detached ones have no customer)."""
    rows = (PaymentMethod.objects.select_related("merchant").prefetch_related("tokens")
            .filter(merchant=merchant))
    return rows.filter(customer_id=customer) if customer else rows


# Refunds that hold part of the captured amount: a pending one may still succeed.
RESERVING_REFUND_STATUSES = (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


def refunds_reserved(payment: Payment) -> int:
    """Pending + succeeded refunds of a payment, in minor units."""
    return payment.refunds.filter(status__in=RESERVING_REFUND_STATUSES).aggregate(
        total=Sum("amount"))["total"] or 0


def refundable_amount(payment: Payment) -> int:
    """What a refund may still take: captured, less disputes and pending or succeeded refunds.
    `refund_create` reads it under the payment's row lock and decides; pages only show it."""
    return max(0, payment.amount_captured - payment.amount_disputed - refunds_reserved(payment))


# -- for /metrics ----------------------------------------------------------------------------
def payment_counts() -> list[tuple[str, str, int]]:
    """(status, provider, count) over every payment."""
    return list(Payment.objects.order_by().values("status", "provider")
                .annotate(count=Count("id")).values_list("status", "provider", "count"))


def payments_with_unknown_answer_count() -> int:
    """Payments with an attempt whose answer was lost (only a status lookup may resolve it)."""
    return (PaymentAttempt.objects.filter(status=AttemptStatus.UNKNOWN).order_by()
            .values("payment_id").distinct().count())


def oldest_unsent_attempt_seconds() -> float:
    """Age of the oldest attempt still `requested` (committed, answer not yet recorded)."""
    return oldest_age_seconds(PaymentAttempt.objects.filter(status=AttemptStatus.REQUESTED),
                              "created_at")


# -- for reconciliation (the janitor and settlement matching) ---------------------------------
PAYMENT_FIELDS = ("id", "merchant_id", "status", "currency", "amount", "amount_captured",
                  "amount_refunded", "provider", "provider_reference")
REFUND_FIELDS = ("id", "payment_id", "status", "currency", "amount", "provider_reference",
                 "payment__provider", "payment__provider_reference")


def _awaiting_answer(rows: QuerySet, kind: str, owner: str, *, requested_before: datetime
                     ) -> QuerySet:
    """`rows` whose latest `kind` attempt has no answer: `unknown`, or `requested` before the
    cutoff; as (pk, attempt id, attempt created_at, attempt status), oldest first."""
    latest = (PaymentAttempt.objects.filter(kind=kind, **{owner: OuterRef("pk")})
              .order_by("-created_at", "-id"))
    return (rows.annotate(attempt_id=Subquery(latest.values("id")[:1]),
                          attempt_status=Subquery(latest.values("status")[:1]),
                          attempt_created_at=Subquery(latest.values("created_at")[:1]))
            .filter(Q(attempt_status=AttemptStatus.UNKNOWN)
                    | Q(attempt_status=AttemptStatus.REQUESTED,
                        attempt_created_at__lt=requested_before))
            .order_by("attempt_created_at")
            .values_list("pk", "attempt_id", "attempt_created_at", "attempt_status"))


def payments_awaiting_answer(*, requested_before: datetime) -> QuerySet:
    """Payments still waiting for an authorization answer (see `_awaiting_answer`)."""
    return _awaiting_answer(Payment.objects.filter(status=PaymentStatus.AUTHORIZATION_REQUESTED),
                            AttemptKind.AUTHORIZE, "payment", requested_before=requested_before)


def refunds_awaiting_answer(*, requested_before: datetime) -> QuerySet:
    """Pending refunds still waiting for the provider's answer (see `_awaiting_answer`)."""
    return _awaiting_answer(Refund.objects.filter(status=RefundStatus.PENDING),
                            AttemptKind.REFUND, "refund", requested_before=requested_before)


def operations_awaiting_answer(*, requested_before: datetime) -> QuerySet:
    """The latest capture, void or increment attempt of an authorized payment without an answer
    (`unknown`, or `requested` before the cutoff): (attempt id, attempt id, created_at,
    status), oldest first."""
    later = PaymentAttempt.objects.filter(
        payment=OuterRef("payment"), kind__in=OPERATION_KINDS,
        created_at__gt=OuterRef("created_at"))
    return (PaymentAttempt.objects
            .filter(kind__in=OPERATION_KINDS,
                    payment__status=PaymentStatus.AUTHORIZED)
            .filter(Q(status=AttemptStatus.UNKNOWN)
                    | Q(status=AttemptStatus.REQUESTED, created_at__lt=requested_before))
            .filter(~Exists(later))
            .order_by("created_at")
            .values_list("pk", "pk", "created_at", "status"))


def captures_unsettled(*, provider: str, captured_before: datetime) -> QuerySet[Payment]:
    """Payments of `provider` with captured funds not yet settled, captured before the cutoff,
    annotated with `captured_at` (when the approving authorize or capture attempt completed)."""
    captured_at = (PaymentAttempt.objects
                   .filter(payment=OuterRef("pk"), status=AttemptStatus.APPROVED,
                           kind__in=[AttemptKind.AUTHORIZE, AttemptKind.CAPTURE])
                   .order_by("-completed_at").values("completed_at")[:1])
    return (Payment.objects
            .filter(provider=provider,
                    status__in=sorted(ACTION_STATUSES["settle"] - {PaymentStatus.SETTLED}))
            .annotate(captured_at=Subquery(captured_at))
            .filter(captured_at__lt=captured_before))


def latest_authorize_attempt(*, payment_id: str) -> PaymentAttempt | None:
    return (PaymentAttempt.objects.select_related("payment")
            .filter(payment_id=payment_id, kind=AttemptKind.AUTHORIZE)
            .order_by("-created_at", "-id").first())


def operation_attempt(*, attempt_id: str) -> PaymentAttempt | None:
    """A capture, void or increment attempt with its payment."""
    return (PaymentAttempt.objects.select_related("payment")
            .filter(pk=attempt_id, kind__in=OPERATION_KINDS).first())


def latest_refund_attempt(*, refund_id: str) -> PaymentAttempt | None:
    return (PaymentAttempt.objects.select_related("refund", "payment__merchant")
            .filter(refund_id=refund_id, kind=AttemptKind.REFUND)
            .order_by("-created_at", "-id").first())


def pending_refunds_total(*, payment_id: str) -> int:
    """The sum of a payment's pending refunds (a fully refunded charge at the provider proves
    they all went through only when succeeded + pending is exactly what was captured)."""
    rows = Refund.objects.filter(payment_id=payment_id, status=RefundStatus.PENDING)
    return sum(rows.values_list("amount", flat=True))


def payment_snapshot(*, payment_id: str) -> dict[str, Any] | None:
    return Payment.objects.filter(pk=payment_id).values(*PAYMENT_FIELDS).first()


def refund_snapshot(*, refund_id: str) -> dict[str, Any] | None:
    return Refund.objects.filter(pk=refund_id).values(*REFUND_FIELDS).first()
