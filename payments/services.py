"""Every write to payments and refunds. Each service owns its transaction and its row locks,
writes its Events in the same transaction, and calls providers only outside any transaction:
an attempt row is committed first, the call runs, and the outcome is recorded in a new
transaction (two-phase, so a crash at any point leaves a trace the janitor can resolve)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import InvalidRequest, NotFound, ProviderError, StateError
from core.models import Merchant
from payments.models import (
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from payments.serializers import payment_to_dict, refund_to_dict
from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    Outcome,
    ProviderResult,
    RefundRequest,
    VoidRequest,
)
from providers.registry import default_provider_code, get_provider
from webhooks.services import event_record

logger = logging.getLogger(__name__)
S = PaymentStatus
R = TypeVar("R")


# -- helpers ---------------------------------------------------------------------------------
def _lock_payment(*, merchant: Merchant | None, payment_id: str) -> Payment:
    """Lock one payment row (never its merchant) or answer 404, one indexed query either way."""
    rows = Payment.objects.select_for_update(of=("self",)).select_related("merchant")
    if merchant is not None:
        rows = rows.filter(merchant=merchant)
    payment = rows.filter(pk=payment_id).first()
    if payment is None:
        raise NotFound(f"No such payment: '{payment_id}'.", param="id")
    return payment


def _payment_event(payment: Payment, type: str) -> None:
    event_record(merchant=payment.merchant, type=type, obj=payment_to_dict(payment))


def _refund_event(refund: Refund, type: str) -> None:
    event_record(merchant=refund.payment.merchant, type=type, obj=refund_to_dict(refund))


def _state_error(payment: Payment, action: str) -> StateError:
    return StateError(
        f"This payment is '{payment.status}'; it cannot be {action}.", param="status",
        code="payment_unexpected_state",
    )


def _call(provider_code: str, operation: str, request: Any) -> ProviderResult:
    """Call a provider outside any transaction. An exception here means we cannot know whether
    the provider acted, so it becomes an UNKNOWN outcome, never a retry with a new key."""
    try:
        method: Callable[[Any], ProviderResult] = getattr(get_provider(provider_code), operation)
        return method(request)
    except Exception:
        logger.exception("provider %s %s raised; treating the outcome as unknown",
                         provider_code, operation)
        return ProviderResult(
            outcome=Outcome.UNKNOWN, error_code="processing_error",
            error_message="The provider call failed unexpectedly; the outcome is unknown.",
        )


def _record_attempt(attempt: PaymentAttempt, result: ProviderResult) -> None:
    attempt.status = {
        Outcome.APPROVED: AttemptStatus.APPROVED,
        Outcome.DECLINED: AttemptStatus.DECLINED,
        Outcome.UNKNOWN: AttemptStatus.UNKNOWN,
        Outcome.PENDING: AttemptStatus.UNKNOWN,
    }[result.outcome]
    attempt.provider_reference = result.provider_reference or attempt.provider_reference
    attempt.error_code = result.error_code
    attempt.error_message = result.error_message[:500]
    attempt.exchange = result.exchange
    attempt.latency_ms = result.latency_ms
    attempt.completed_at = timezone.now()
    attempt.save()


def _enqueue_authorization(attempt_id: str) -> None:
    from payments.tasks import payment_authorize

    try:
        payment_authorize.delay(attempt_id)
    except Exception:
        # The payment is committed; the janitor finds attempts still `requested` and runs them.
        logger.exception("could not enqueue authorization attempt=%s; janitor will pick it up",
                         attempt_id)


# -- payments --------------------------------------------------------------------------------
def payment_create(
    *, merchant: Merchant, amount: int, currency: str, payment_method: str,
    capture_method: str = CaptureMethod.AUTOMATIC, description: str = "",
    metadata: dict[str, str] | None = None, confirm: bool = False, idempotency_key: str = "",
) -> Payment:
    try:
        with transaction.atomic():
            payment = Payment.objects.create(
                merchant=merchant, amount=amount, currency=currency,
                payment_method=payment_method, capture_method=capture_method,
                description=description, metadata=metadata or {},
                idempotency_key=idempotency_key,
            )
            _payment_event(payment, "payment.created")
            if confirm:
                _authorization_start(payment)
    except IntegrityError:
        # The unique (merchant, idempotency_key) caught a retry of a request that died after
        # committing (its idempotency row was taken over): answer with the payment it made.
        existing = Payment.objects.select_related("merchant").filter(
            merchant=merchant, idempotency_key=idempotency_key).first()
        if not idempotency_key or existing is None:
            raise
        return existing
    return payment


def payment_confirm(*, merchant: Merchant, payment_id: str) -> Payment:
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if payment.status != S.CREATED:
            raise _state_error(payment, "confirmed")
        _authorization_start(payment)
    return payment


def _authorization_start(payment: Payment) -> PaymentAttempt:
    provider_code = default_provider_code()
    payment.request_authorization()
    payment.provider = provider_code
    payment.save(update_fields=["status", "provider", "updated_at"])
    attempt = PaymentAttempt.objects.create(
        payment=payment, kind=AttemptKind.AUTHORIZE, provider=provider_code, amount=payment.amount,
    )
    _payment_event(payment, "payment.processing")
    transaction.on_commit(lambda: _enqueue_authorization(attempt.id))
    return attempt


def payment_authorization_execute(*, attempt_id: str) -> Payment | None:
    """Send an authorization attempt to its provider (the Celery task's body).

    Running it twice is safe: an attempt that already has an answer is not sent again, and a
    re-send of a `requested` attempt (worker killed mid-call) carries the same provider
    idempotency key, so the provider answers with the first outcome instead of charging again.
    """
    attempt = PaymentAttempt.objects.select_related("payment").filter(pk=attempt_id).first()
    if attempt is None or attempt.status != AttemptStatus.REQUESTED:
        return None
    payment = attempt.payment
    result = _call(attempt.provider, "authorize", AuthorizeRequest(
        idempotency_key=attempt.provider_idempotency_key, amount=attempt.amount,
        currency=payment.currency, payment_method=payment.payment_method,
        capture=payment.capture_method == CaptureMethod.AUTOMATIC,
        merchant_reference=payment.id, description=payment.description,
    ))
    return payment_authorization_record(attempt_id=attempt.id, result=result)


def payment_authorization_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    """Apply an authorization answer, whichever arrives first: the synchronous reply, a
    provider webhook or a status lookup. Later answers for the same attempt are no-ops."""
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
            return payment
        if result.outcome == Outcome.UNKNOWN and attempt.status == AttemptStatus.UNKNOWN:
            return payment
        _record_attempt(attempt, result)
        if payment.status != S.AUTHORIZATION_REQUESTED:
            logger.warning("late authorization answer for %s in status %s ignored",
                           payment.id, payment.status)
            return payment
        if result.outcome == Outcome.APPROVED:
            payment.provider = attempt.provider
            payment.provider_reference = result.provider_reference
            if payment.capture_method == CaptureMethod.AUTOMATIC:
                payment.mark_captured(attempt.amount)
                event = "payment.captured"
            else:
                payment.mark_authorized(attempt.amount)
                event = "payment.authorized"
            payment.save()
            _payment_event(payment, event)
        elif result.outcome == Outcome.DECLINED:
            payment.mark_failed(result.error_code or "card_declined", result.error_message)
            payment.save()
            _payment_event(payment, "payment.failed")
        # UNKNOWN / PENDING: the payment stays authorization_requested; reconciliation asks.
    return payment


def _open_attempt(payment: Payment, kind: str, amount: int, refund: Refund | None = None
                  ) -> PaymentAttempt:
    busy = payment.attempts.filter(
        kind__in=[AttemptKind.CAPTURE, AttemptKind.VOID],
        status__in=[AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN],
    )
    if kind != AttemptKind.REFUND and busy.exists():
        raise StateError("A capture or cancel of this payment is already in progress.",
                         code="payment_operation_in_progress")
    return PaymentAttempt.objects.create(
        payment=payment, refund=refund, kind=kind, provider=payment.provider, amount=amount,
    )


def _raise_for_failed_call(result: ProviderResult, action: str) -> None:
    if result.outcome == Outcome.DECLINED:
        raise ProviderError(
            f"The provider declined the {action}: {result.error_message or result.error_code}",
            code=result.error_code or "provider_declined",
        )
    if result.outcome in (Outcome.UNKNOWN, Outcome.PENDING):
        raise ProviderError(
            f"The provider did not confirm the {action}; its outcome is unknown and "
            "reconciliation will resolve it. Do not retry with a new Idempotency-Key.",
            code="provider_outcome_unknown",
        )


def payment_capture(*, merchant: Merchant, payment_id: str, amount: int | None = None
                    ) -> Payment:
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if payment.status != S.AUTHORIZED:
            raise _state_error(payment, "captured")
        amount = amount or payment.amount_authorized
        if amount > payment.amount_authorized:
            raise InvalidRequest(
                f"Amount {amount} exceeds the authorized amount {payment.amount_authorized}.",
                param="amount", code="amount_too_large",
            )
        attempt = _open_attempt(payment, AttemptKind.CAPTURE, amount)
    result = _call(attempt.provider, "capture", CaptureRequest(
        idempotency_key=attempt.provider_idempotency_key,
        provider_reference=payment.provider_reference, amount=amount, currency=payment.currency,
    ))
    payment = payment_capture_record(attempt_id=attempt.id, result=result)
    _raise_for_failed_call(result, "capture")
    return payment


def payment_capture_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
            return payment
        _record_attempt(attempt, result)
        if result.outcome == Outcome.APPROVED and payment.status == S.AUTHORIZED:
            payment.mark_captured(attempt.amount)
            payment.save()
            _payment_event(payment, "payment.captured")
    return payment


def payment_cancel(*, merchant: Merchant, payment_id: str) -> Payment:
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if payment.status == S.CREATED:
            payment.mark_canceled()
            payment.save()
            _payment_event(payment, "payment.canceled")
            return payment
        if payment.status != S.AUTHORIZED:
            raise _state_error(payment, "canceled")
        attempt = _open_attempt(payment, AttemptKind.VOID, payment.amount_authorized)
    result = _call(attempt.provider, "void", VoidRequest(
        idempotency_key=attempt.provider_idempotency_key,
        provider_reference=payment.provider_reference,
    ))
    payment = payment_void_record(attempt_id=attempt.id, result=result)
    _raise_for_failed_call(result, "cancel")
    return payment


def payment_void_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
            return payment
        _record_attempt(attempt, result)
        if result.outcome == Outcome.APPROVED and payment.status == S.AUTHORIZED:
            payment.mark_canceled()
            payment.save()
            _payment_event(payment, "payment.canceled")
    return payment


# -- refunds ---------------------------------------------------------------------------------
def refund_create(
    *, merchant: Merchant, payment_id: str, amount: int | None = None, reason: str = "",
    metadata: dict[str, str] | None = None, idempotency_key: str = "",
) -> Refund:
    """Reserve the amount under the payment's row lock, then ask the provider.

    The sum of pending and succeeded refunds never exceeds the captured amount: checked here
    under `SELECT … FOR UPDATE` and again by a PostgreSQL trigger (migration 0002)."""
    if idempotency_key:
        existing = Refund.objects.filter(merchant=merchant, idempotency_key=idempotency_key)
        if (refund := existing.select_related("payment__merchant").first()) is not None:
            return _refund_resume(refund)
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if payment.status not in (S.CAPTURED, S.SETTLED):
            raise _state_error(payment, "refunded")
        reserved = payment.refunds.filter(
            status__in=[RefundStatus.PENDING, RefundStatus.SUCCEEDED]
        ).aggregate(total=Sum("amount"))["total"] or 0
        remaining = payment.amount_captured - reserved
        if remaining <= 0:
            raise StateError("This payment has already been refunded in full (including "
                             "refunds still pending).", code="charge_already_refunded")
        amount = amount or remaining
        if amount > remaining:
            raise StateError(
                f"Refund amount {amount} is more than the {remaining} {payment.currency} that "
                "remains refundable.", param="amount", code="amount_too_large",
            )
        refund = Refund.objects.create(
            merchant=merchant, payment=payment, amount=amount, currency=payment.currency,
            reason=reason, metadata=metadata or {}, idempotency_key=idempotency_key,
        )
        attempt = _open_attempt(payment, AttemptKind.REFUND, amount, refund=refund)
        _refund_event(refund, "refund.created")
    return _refund_send(refund, attempt)


def _refund_send(refund: Refund, attempt: PaymentAttempt) -> Refund:
    result = _call(attempt.provider, "refund", RefundRequest(
        idempotency_key=attempt.provider_idempotency_key,
        provider_reference=refund.payment.provider_reference, amount=refund.amount,
        currency=refund.currency,
    ))
    return refund_record(attempt_id=attempt.id, result=result)


def _refund_resume(refund: Refund) -> Refund:
    """A retried request finds its refund: re-send a never-answered attempt (same key)."""
    attempt = refund.attempts.filter(status=AttemptStatus.REQUESTED).first()
    if refund.status == RefundStatus.PENDING and attempt is not None:
        return _refund_send(refund, attempt)
    return refund


def refund_record(*, attempt_id: str, result: ProviderResult) -> Refund:
    attempt_row = PaymentAttempt.objects.values("payment_id", "refund_id").get(pk=attempt_id)
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=attempt_row["payment_id"])
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        refund = Refund.objects.select_for_update().get(pk=attempt_row["refund_id"])
        refund.payment = payment
        if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
            return refund
        _record_attempt(attempt, result)
        if refund.status != RefundStatus.PENDING:
            return refund
        if result.outcome == Outcome.APPROVED:
            refund.mark_succeeded(result.provider_reference)
            refund.save()
            payment.amount_refunded += refund.amount
            fully = payment.amount_refunded == payment.amount_captured
            if fully and payment.status in (S.CAPTURED, S.SETTLED):
                payment.mark_refunded()
            payment.save()
            _refund_event(refund, "refund.succeeded")
            if fully:
                _payment_event(payment, "payment.refunded")
        elif result.outcome == Outcome.DECLINED:
            refund.mark_failed(result.error_code, result.error_message)
            refund.save()
            _refund_event(refund, "refund.failed")
    return refund
