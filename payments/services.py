"""Every write to payments and refunds. Each service owns its transaction and its row locks,
writes its Events in the same transaction, and calls providers only outside any transaction:
an attempt row is committed first, the call runs, and the outcome is recorded in a new
transaction (two-phase, so a crash at any point leaves a trace the janitor can resolve)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from core import crypto, ratelimit
from core.breaks import BreakSpec, break_report
from core.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ProviderError,
    StateError,
    violated_constraint,
)
from core.idempotency import same_request_or_422
from core.models import OPEN_ATTEMPT_STATUSES, Merchant
from core.selectors import one_or_404
from core.transactions import create_or_existing, task_send
from ledger import flows as ledger
from payments import files
from payments.models import (
    AWAITING_AUTHORIZATION,
    CHALLENGE_PAGE_SQL,
    FUNDS_CAPTURED,
    MAX_RETRIES,
    OPERATION_KINDS,
    AttemptKind,
    AttemptStatus,
    CancellationReason,
    CaptureMethod,
    Customer,
    Dispute,
    DisputeDecider,
    DisputeReason,
    DisputeStatus,
    EvidenceFile,
    FilePurpose,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentMethodToken,
    PaymentStatus,
    Refund,
    RefundOrigin,
    RefundStatus,
)
from payments.payloads import (
    customer_to_dict,
    dispute_to_dict,
    payment_method_to_dict,
    payment_to_dict,
    refund_to_dict,
)
from payments.selectors import (
    SENT_TO_PROVIDER,
    disputes_due_for_lookup,
    disputes_due_soon_unreminded,
    latest_authorize_attempt,
    refundable_amount,
    refunds_reserved,
)
from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    DisputeEvidenceRequest,
    DisputeResult,
    DisputeRetrieveRequest,
    DisputeState,
    EvidenceDocument,
    IncrementRequest,
    Outcome,
    ProviderResult,
    ProviderStatus,
    RefundRequest,
    RetrieveRequest,
    StoredCredential,
    TokenEnrollRequest,
    TokenResult,
    TokenRetrieveRequest,
    VoidRequest,
)
from providers.calls import attempt_record, provider_call, supports
from providers.declines import decline_meaning
from providers.errors import error as error_code_meaning
from providers.models import RETRY_LATER, DeclineMeaning
from providers.registry import authorization_validity, codes_of_mode, provider_is_live
from providers.routing import route
from webhooks.inbound import provider_events_release
from webhooks.services import event_record

logger = logging.getLogger(__name__)
_BEFORE_AN_ANSWER = AWAITING_AUTHORIZATION | {PaymentStatus.CREATED}
_NO_PROVIDER = {
    True: "No live provider can take this payment right now (none is routed for it, or every "
          "routed one's circuit breaker is open); retry later.",
    False: "No payment provider is available right now (every routed provider's circuit "
           "breaker is open); retry later.",
}
R = TypeVar("R")
# `audit=` of refund_create / payment_capture / payment_cancel: called with the locked payment
# inside the transaction that reserves the operation (before its writes), so a caller's audit
# row commits together with the reservation or not at all. It must not call out of the database.
AuditHook = Callable[[Payment], object]


# -- helpers ---------------------------------------------------------------------------------
def _lock_payment(*, merchant: Merchant | None, payment_id: str) -> Payment:
    """Lock one payment row (never its merchant) or answer 404, one indexed query either way."""
    rows = Payment.objects.select_for_update(of=("self",)).select_related("merchant")
    if merchant is not None:
        rows = rows.filter(merchant=merchant)
    return one_or_404(rows, payment_id, noun="payment")


def _payment_event(payment: Payment, type: str) -> None:
    """Every payment state change: its Event in this transaction, and after commit the provider
    events held for this payment are re-evaluated (they wait for it to move, by any path)."""
    event_record(merchant=payment.merchant, type=type, obj=payment_to_dict(payment))
    if payment.status not in _BEFORE_AN_ANSWER:
        provider, reference, payment_id = payment.provider, payment.provider_reference, payment.id
        transaction.on_commit(lambda: _release_held_events(provider, reference, payment_id))


def _release_held_events(provider: str, provider_reference: str, payment_id: str) -> None:
    try:
        provider_events_release(provider=provider, provider_reference=provider_reference,
                                merchant_reference=payment_id)
    except Exception:  # the sweeper re-checks held events on its own schedule
        logger.exception("re-evaluating held provider events of %s failed", payment_id)


def _refund_event(refund: Refund, type: str) -> None:
    event_record(merchant=refund.payment.merchant, type=type, obj=refund_to_dict(refund))


def _state_error(payment: Payment, action: str) -> StateError:
    return StateError(
        f"This payment is '{payment.status}'; it cannot be {action}.", param="status",
        code="payment_unexpected_state",
    )


def _report_overlap(payment: Payment, *, key: str, fact: str) -> None:
    """Refunds (pending or paid) and disputes together exceed what was captured: both are
    provider facts and both stay recorded; a person contests the chargeback with the refund as
    evidence. Opens one break per fact, in the caller's transaction."""
    refunded = refunds_reserved(payment)
    if refunded + payment.amount_disputed <= payment.amount_captured:
        return
    break_report(BreakSpec(
        type="provider_conflict", key=key, provider=payment.provider, payment_id=payment.id,
        provider_reference=payment.provider_reference, currency=payment.currency,
        our_amount=payment.amount_captured, provider_amount=refunded + payment.amount_disputed,
        our_data={"captured": payment.amount_captured, "refunded_or_pending": refunded,
                  "disputed": payment.amount_disputed, "status": payment.status},
        provider_data={"fact": fact}))


def _mismatch(payment: Payment, attempt: PaymentAttempt, result: ProviderResult) -> bool:
    """An approval whose amount or currency differs from what we asked is evidence, not money:
    the attempt stays without an answer, a break holds both sides, nothing is posted."""
    wrong_amount = result.amount is not None and result.amount != attempt.amount
    wrong_currency = bool(result.currency) and result.currency.lower() != payment.currency
    if result.outcome != Outcome.APPROVED or not (wrong_amount or wrong_currency):
        return False
    break_report(BreakSpec(
        type="currency_mismatch" if wrong_currency else "amount_mismatch",
        key=f"{attempt.kind}:{attempt.id}", provider=attempt.provider, payment_id=payment.id,
        refund_id=attempt.refund_id or "", provider_reference=result.provider_reference,
        currency=payment.currency, our_amount=attempt.amount, provider_amount=result.amount,
        our_data={"attempt": attempt.id, "kind": attempt.kind, "currency": payment.currency},
        provider_data={"status": str(result.status), "amount": result.amount,
                       "currency": result.currency, "reference": result.provider_reference}))
    _left_unanswered(attempt, result, "provider_amount_mismatch",
                     f"The provider confirmed {result.amount} {result.currency or '?'} for "
                     f"{attempt.amount} {payment.currency}; a reconciliation break holds both.")
    return True


def _left_unanswered(attempt: PaymentAttempt, result: ProviderResult, code: str, message: str
                     ) -> None:
    """Keep an approval that cannot be applied as evidence: the attempt stays without an
    answer (`unknown`, `code`), so nothing moves and the janitor's checks keep seeing it."""
    _record_attempt(attempt, ProviderResult(
        outcome=Outcome.UNKNOWN, provider_reference=result.provider_reference, error_code=code,
        error_message=message, exchange=result.exchange, latency_ms=result.latency_ms))


def _void_contradicted(payment: Payment, attempt: PaymentAttempt, result: ProviderResult
                       ) -> bool:
    """A void approved with a charge that contradicts it: `voided` (the whole charge released,
    nothing taken) after partial captures the provider approved; `captured`, or showing money
    taken, when we took none or another total; or in any state but voided or captured (still
    authorized, say). Canceling would drop money the provider took from our books, ending
    captured would book money it says it never took: a `status_mismatch` break holds both
    sides, the captures stay booked, the attempt stays without an answer and the payment does
    not move. (A notice saying only 'voided' carries no status: nothing to contradict.)"""
    if (attempt.kind != AttemptKind.VOID or result.outcome != Outcome.APPROVED
            or payment.status != PaymentStatus.AUTHORIZED):
        return False
    ours = payment.amount_captured
    agrees = {ProviderStatus.UNKNOWN: True, ProviderStatus.VOIDED: not ours,
              ProviderStatus.CAPTURED: bool(ours)}.get(result.status, False)
    if agrees and result.amount_captured in (None, ours):
        return False
    break_report(BreakSpec(
        type="status_mismatch", key=f"void:{attempt.id}", provider=attempt.provider,
        payment_id=payment.id, provider_reference=result.provider_reference,
        currency=payment.currency, our_amount=ours,
        provider_amount=result.amount_captured or 0,
        our_data={"attempt": attempt.id, "captured": ours, "status": payment.status},
        provider_data={"status": str(result.status), "amount": result.amount,
                       "amount_captured": result.amount_captured}))
    _left_unanswered(attempt, result, "provider_status_conflict",
                     f"The provider approved the void yet shows the charge {result.status} "
                     f"with {result.amount_captured or 0} captured, where our captures took "
                     f"{ours} {payment.currency}; a reconciliation break holds both.")
    return True


def _report_collision(payment: Payment, attempt: PaymentAttempt, result: ProviderResult
                      ) -> None:
    """An approval whose provider reference another of our payments already holds (a provider,
    or a simulator restarted without its books, handing a reference out twice): recording it
    would break the unique (provider, reference) rule on every retry. Kept as evidence: a
    `reference_collision` break with both sides, the attempt left without an answer, no money."""
    reference = result.provider_reference
    holder = (Payment.objects.filter(provider=attempt.provider, provider_reference=reference)
              .exclude(pk=payment.pk).values_list("pk", flat=True).first())
    break_report(BreakSpec(
        type="reference_collision", key=f"{attempt.provider}:{reference}:{payment.id}",
        provider=attempt.provider, payment_id=payment.id, provider_reference=reference,
        currency=payment.currency, our_amount=attempt.amount, provider_amount=result.amount,
        our_data={"attempt": attempt.id, "reference_already_held_by": holder},
        provider_data={"reference": reference, "status": str(result.status),
                       "amount": result.amount}))
    _record_attempt(attempt, ProviderResult(
        outcome=Outcome.UNKNOWN, provider_reference=reference,
        error_code="provider_reference_collision",
        error_message=f"The provider answered with reference {reference}, which payment "
                      f"{holder} already holds; a reconciliation break holds both.",
        exchange=result.exchange, latency_ms=result.latency_ms))


def _next_provider(payment: Payment, *, tried: Collection[str] | None = None) -> str | None:
    """The best routed provider this payment has not tried yet, or None. `tried` defaults to
    the providers of its authorization attempts (one query)."""
    if tried is None:
        tried = set(payment.attempts.filter(kind=AttemptKind.AUTHORIZE)
                    .values_list("provider", flat=True))
    # A saved card routes by its brand, as the test aliases do (pm_card_<brand>).
    method = payment.saved_method
    routed_as = payment.payment_method if method is None else f"pm_card_{method.brand}"
    candidates = route(merchant_id=payment.merchant_id, currency=payment.currency,
                       amount=payment.amount, payment_method=routed_as,
                       livemode=payment.merchant.is_live)
    return next((code for code in candidates if code not in tried), None)


_ATTEMPT_STATUS = {
    Outcome.APPROVED: AttemptStatus.APPROVED,
    Outcome.DECLINED: AttemptStatus.DECLINED,
    Outcome.UNKNOWN: AttemptStatus.UNKNOWN,
    Outcome.PENDING: AttemptStatus.UNKNOWN,
    # Sent and waiting for the customer's challenge: only a notice or a lookup answers it.
    Outcome.ACTION_REQUIRED: AttemptStatus.UNKNOWN,
}


def _record_attempt(attempt: PaymentAttempt, result: ProviderResult) -> None:
    attempt_record(attempt, result, statuses=_ATTEMPT_STATUS)


def _capture(payment: Payment, amount: int, *, final: bool = True, capture_id: str = ""
             ) -> None:
    """Record one capture and post provider_clearing → pending for it, in the same
    transaction. The final one (or one that reaches the authorized amount) moves the payment to
    captured; a partial one leaves it authorized with `amount_captured` grown. `capture_id`
    (the capture attempt) names the journal entry of a second or later capture."""
    first = payment.amount_captured == 0
    if final or payment.amount_captured + amount >= payment.amount_authorized:
        payment.mark_captured(amount)
        event = "payment.captured"
    else:
        payment.amount_captured += amount
        event = "payment.partially_captured"
    payment.save()
    ledger.post_capture(merchant=payment.merchant, payment_id=payment.id,
                        provider=payment.provider, currency=payment.currency, amount=amount,
                        capture_id="" if first else capture_id)
    _payment_event(payment, event)


def _enqueue_authorization(attempt_id: str) -> None:
    task_send("payments.tasks.payment_authorize", attempt_id,
              what=f"authorization attempt={attempt_id}",
              fallback="the janitor finds attempts still requested and runs them")


# -- payments --------------------------------------------------------------------------------
def payment_create(
    *, merchant: Merchant, amount: int, currency: str, payment_method: str,
    capture_method: str = CaptureMethod.AUTOMATIC, description: str = "",
    metadata: dict[str, str] | None = None, confirm: bool = False, idempotency_key: str = "",
    idempotency_fingerprint: str = "", customer: str | None = None, off_session: bool = False,
    return_url: str = "",
) -> Payment:
    def create() -> Payment:
        with transaction.atomic():
            saved, owner = _payment_method_for_charge(
                merchant=merchant, payment_method=payment_method, customer_id=customer,
                off_session=off_session)
            payment = Payment.objects.create(
                merchant=merchant, amount=amount, currency=currency,
                payment_method=payment_method, capture_method=capture_method,
                description=description, metadata=metadata or {},
                idempotency_key=idempotency_key, idempotency_fingerprint=idempotency_fingerprint,
                saved_method=saved, customer=owner, off_session=off_session,
                return_url=return_url,
            )
            _payment_event(payment, "payment.created")
            if confirm:
                _authorization_start(payment)
        return payment

    def existing() -> Payment | None:
        # The unique (merchant, idempotency_key) caught a retry of a request that died after
        # committing (its idempotency row was taken over): answer with the payment it made.
        found = idempotency_key and Payment.objects.select_related("merchant").filter(
            merchant=merchant, idempotency_key=idempotency_key).first()
        return same_request_or_422(found, idempotency_fingerprint) if found else None

    return create_or_existing(create, existing)


def payment_confirm(*, merchant: Merchant, payment_id: str, return_url: str = "") -> Payment:
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if payment.status != PaymentStatus.CREATED:
            raise _state_error(payment, "confirmed")
        if return_url:
            payment.return_url = return_url
            payment.save(update_fields=["return_url", "updated_at"])
        _authorization_start(payment)
    return payment


def _method_detached(payment: Payment) -> bool:
    """Whether the payment's saved card was detached since (read fresh: the customer may have
    removed it while a retry waited). The trigger on payments_paymentattempt repeats this."""
    return payment.saved_method_id is not None and PaymentMethod.objects.filter(
        pk=payment.saved_method_id, detached_at__isnull=False).exists()


def _authorization_start(payment: Payment) -> PaymentAttempt | None:
    if _method_detached(payment):
        raise StateError(f"Payment method {payment.saved_method_id} was detached and can no "
                         "longer be charged; create a payment with another one.",
                         param="payment_method", code="payment_method_detached")
    payment.request_authorization()
    # The payment was `created` until now and no transition leads back there, so it has no
    # authorization attempt yet: nothing to read.
    provider_code = _next_provider(payment, tried=())
    if provider_code is None:
        payment.save(update_fields=["status", "updated_at"])  # each step is its own UPDATE
        # Every routed provider's circuit breaker is open: fail fast and say so.
        payment.mark_failed("provider_unavailable", _NO_PROVIDER[payment.merchant.is_live])
        payment.save()
        _payment_event(payment, "payment.failed")
        return None
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
    payment = None
    while attempt_id:  # one pass per provider tried: failover creates the next attempt
        attempt = (PaymentAttempt.objects.select_related("payment__saved_method")
                   .filter(pk=attempt_id).first())
        if attempt is None or attempt.status != AttemptStatus.REQUESTED:
            return payment
        payment = attempt.payment
        if _method_detached(payment):
            return _detached_before_sending(attempt)
        token, refused = _token_at(payment, attempt.provider)
        result = refused or provider_call(attempt.provider, "authorize", AuthorizeRequest(
            idempotency_key=attempt.provider_idempotency_key, amount=attempt.amount,
            currency=payment.currency, payment_method=token,
            capture=payment.capture_method == CaptureMethod.AUTOMATIC,
            merchant_reference=payment.id, description=payment.description,
            stored_credential=_stored_credential(payment),
            return_url=authentication_return_url(attempt.id),
        ), gate=True)
        payment, attempt_id = _authorization_record(attempt_id=attempt.id, result=result)
    return payment


def _detached_before_sending(attempt: PaymentAttempt) -> Payment:
    """The card was detached after this attempt was opened and before it was sent (a late task,
    or the janitor sending one whose task was lost). It is never sent. The provider is asked
    whether an earlier send of the attempt charged: with no charge of it there, the attempt
    ends declined `payment_method_detached` and the payment fails; any other answer is applied
    as usual or left for the janitor to ask again."""
    payment, said = payment_authorization_lookup(attempt_id=attempt.id)
    if said != ProviderStatus.NOT_FOUND:
        return payment
    return payment_authorization_record(attempt_id=attempt.id, result=ProviderResult(
        outcome=Outcome.DECLINED, error_code="payment_method_detached",
        error_message=f"{payment.saved_method_id} was detached before this authorization was "
                      "sent; it was not charged."))


def payment_authorization_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    """Apply an authorization answer, whichever arrives first: the synchronous reply, a
    provider webhook or a status lookup. Later answers for the same attempt are no-ops."""
    payment, next_attempt_id = _authorization_record(attempt_id=attempt_id, result=result)
    if next_attempt_id:
        transaction.on_commit(lambda: _enqueue_authorization(next_attempt_id))
    return payment


def _authorization_record(*, attempt_id: str, result: ProviderResult
                          ) -> tuple[Payment, str | None]:
    """Record the answer; on a retryable failure before any charge, open an attempt on the next
    routed provider (failover) and return its id. Never fails over after an unknown outcome.
    A provider reference that collides with one we hold becomes a break (no extra query on the
    normal path: the unique constraint detects it)."""
    try:
        return _authorization_apply(attempt_id=attempt_id, result=result)
    except IntegrityError as exc:
        if violated_constraint(exc) != "payment_provider_reference_unique":
            raise
    with transaction.atomic():
        payment, attempt = _lock_attempt(attempt_id)
        if attempt.is_open:
            _report_collision(payment, attempt, result)
    return payment, None


def _lock_attempt(attempt_id: str) -> tuple[Payment, PaymentAttempt]:
    """Lock an attempt's payment, then the attempt: payment first, the order every writer of a
    payment takes."""
    payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    payment = _lock_payment(merchant=None, payment_id=payment_id)
    return payment, PaymentAttempt.objects.select_for_update().get(pk=attempt_id)


def _authorization_apply(*, attempt_id: str, result: ProviderResult
                         ) -> tuple[Payment, str | None]:
    with transaction.atomic():
        payment, attempt = _lock_attempt(attempt_id)
        if not attempt.is_open:
            return payment, None
        if result.outcome == Outcome.UNKNOWN and attempt.status == AttemptStatus.UNKNOWN:
            return payment, None
        if (result.outcome == Outcome.ACTION_REQUIRED
                and payment.status == PaymentStatus.REQUIRES_ACTION):
            return payment, None  # the challenge we already sent the customer to
        if _mismatch(payment, attempt, result):
            return payment, None
        _record_attempt(attempt, result)
        if payment.status not in AWAITING_AUTHORIZATION:
            logger.warning("late authorization answer for %s in status %s ignored",
                           payment.id, payment.status)
            return payment, None
        # After a challenge the customer took part in, a decline is final: no retry, no
        # failover (another acquirer would challenge the customer again, or worse, not).
        meaning = (decline_meaning(provider=attempt.provider,
                                   code=result.error_code or "card_declined")
                   if attempt.status == AttemptStatus.DECLINED
                   and payment.status == PaymentStatus.AUTHORIZATION_REQUESTED else None)
        if meaning in RETRY_LATER and _retry_schedule(payment):
            return payment, None
        if meaning == DeclineMeaning.RETRY_OTHER_PROVIDER and not _method_detached(payment):
            next_provider = _next_provider(payment)
            if next_provider is not None:
                logger.warning("failing over %s from %s to %s after %s", payment.id,
                               attempt.provider, next_provider, result.error_code)
                payment.provider = next_provider
                payment.save(update_fields=["provider", "updated_at"])
                following = PaymentAttempt.objects.create(
                    payment=payment, kind=AttemptKind.AUTHORIZE, provider=next_provider,
                    amount=payment.amount)
                return payment, following.id
        if result.outcome == Outcome.APPROVED:
            payment.provider = attempt.provider
            payment.provider_reference = result.provider_reference
            if payment.capture_method == CaptureMethod.AUTOMATIC:
                _capture(payment, attempt.amount)
            else:
                payment.mark_authorized(
                    attempt.amount, expires_at=attempt.created_at + authorization_validity(
                        attempt.provider))
                payment.save()
                _payment_event(payment, "payment.authorized")
        elif result.outcome == Outcome.DECLINED:
            payment.mark_failed(result.error_code or "card_declined", result.error_message)
            payment.save()
            _payment_event(payment, "payment.failed")
        elif (result.outcome == Outcome.ACTION_REQUIRED
              and _challenge_page(result.action_url, attempt.provider)):
            payment.provider = attempt.provider
            payment.provider_reference = result.provider_reference
            payment.mark_requires_action(result.action_url, timezone.now() + timedelta(
                seconds=settings.PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS))
            payment.save()
            _payment_event(payment, "payment.requires_action")
        # UNKNOWN / PENDING, or a challenge page that is no web address (the provider's word is
        # evidence: it never reaches a customer's browser): the payment stays
        # authorization_requested and reconciliation asks.
    return payment, None


def _retry_schedule(payment: Payment) -> bool:
    """Under the payment's lock, after a decline the rules say may pass later: an off-session
    payment with retries left waits for the next one (`payment_retries_run` opens it when
    due); True when one was scheduled. Only a recorded decline gets here, never an unknown
    outcome, and the database bounds the count."""
    delays = settings.PAYMENT_RETRY_DELAYS[:MAX_RETRIES]
    if not payment.off_session or payment.retry_count >= len(delays):
        return False
    payment.next_retry_at = timezone.now() + timedelta(seconds=delays[payment.retry_count])
    payment.save(update_fields=["next_retry_at", "updated_at"])
    _payment_event(payment, "payment.retry_scheduled")
    return True


def _retry_dropped(payment: Payment, code: str, message: str) -> None:
    """Under the payment's lock: its waiting retry is not sent, and the payment fails."""
    payment.next_retry_at = None
    payment.save(update_fields=["next_retry_at", "updated_at"])
    payment.mark_failed(code, message)
    payment.save()
    _payment_event(payment, "payment.failed")


def payment_retries_run(*, now: datetime | None = None, limit: int = 100) -> int:
    """Open the authorization attempts of delayed retries that are due (the janitor calls
    this): same provider as the decline, a new attempt and so a new provider idempotency key
    (the declined one has its answer). Returns how many were opened. Safe in several processes:
    each payment is locked and re-checked, and a payment already retried is skipped."""
    due = list(Payment.objects.filter(next_retry_at__lte=now or timezone.now())
               .order_by("next_retry_at").values_list("pk", flat=True)[:limit])
    opened = 0
    for payment_id in due:
        with transaction.atomic():
            payment = _lock_payment(merchant=None, payment_id=payment_id)
            if payment.next_retry_at is None or payment.next_retry_at > (now or timezone.now()):
                continue
            previous = (payment.attempts.filter(kind=AttemptKind.AUTHORIZE)
                        .order_by("-created_at", "-id").first())
            payment.next_retry_at = None
            if previous is None or previous.status != AttemptStatus.DECLINED:
                # Only a decline is retried; anything else (an answer still unknown) waits for
                # the janitor's lookup. The database refuses a second open attempt anyway.
                payment.save(update_fields=["next_retry_at", "updated_at"])
                continue
            if _method_detached(payment):
                _retry_dropped(payment, "payment_method_detached", f"{payment.saved_method_id} "
                               "was detached before its retry; it is not charged again.")
                continue
            code = previous.error_code or "card_declined"
            if decline_meaning(provider=previous.provider, code=code) not in RETRY_LATER:
                # The decline rules changed while the retry waited (a person made this code
                # final): the rules in force now decide, so the card is not charged again.
                _retry_dropped(payment, code, previous.error_message)
                continue
            payment.retry_count += 1
            payment.save(update_fields=["next_retry_at", "retry_count", "updated_at"])
            attempt = PaymentAttempt.objects.create(
                payment=payment, kind=AttemptKind.AUTHORIZE, provider=previous.provider,
                amount=payment.amount)
            transaction.on_commit(lambda attempt_id=attempt.id: _enqueue_authorization(
                attempt_id))
            opened += 1
    return opened


LOOKUP_OUTCOMES = {
    ProviderStatus.AUTHORIZED: Outcome.APPROVED,
    ProviderStatus.CAPTURED: Outcome.APPROVED,
    ProviderStatus.REFUNDED: Outcome.APPROVED,
    ProviderStatus.DECLINED: Outcome.DECLINED,
    ProviderStatus.VOIDED: Outcome.DECLINED,
    ProviderStatus.ACTION_REQUIRED: Outcome.ACTION_REQUIRED,
}


def payment_authorization_lookup(*, attempt_id: str) -> tuple[Payment, ProviderStatus]:
    """Ask the provider what became of an authorization we have no answer for (by its
    reference, else by our payment id as merchant order id) and apply a definite answer through
    the normal path. Never re-sends the charge. Returns the payment and what the provider said,
    so the janitor can decide what to do with `not_found` / `unknown`."""
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
    payment = attempt.payment
    if not attempt.is_open:
        return payment, ProviderStatus.UNKNOWN
    found = provider_call(attempt.provider, "retrieve", RetrieveRequest(
        provider_reference=attempt.provider_reference, merchant_reference=payment.id))
    void = _challenge_void_of(payment) if found.status == ProviderStatus.VOIDED else None
    if void is not None:
        # Our void of the abandoned challenge, shown done before its answer reached us (this is
        # the customer's return, say): recorded as its answer, so the path changes nothing.
        return _challenge_void_record(attempt_id=void.id, result=ProviderResult(
            outcome=Outcome.APPROVED, provider_reference=found.provider_reference,
            status=found.status)), found.status
    if _earlier_try_named(payment, attempt, attempt.provider, found.provider_reference):
        # Asked by order id, the provider showed an earlier try's charge (a declined one before
        # this delayed retry): it shows none of this attempt's. The attempt keeps no answer; one
        # never sent (its task lost) is sent by the janitor with its own idempotency key.
        logger.warning("lookup of %s (%s) answered with an earlier try's charge %s: not this "
                       "attempt's", attempt.id, payment.id, found.provider_reference)
        return payment, ProviderStatus.NOT_FOUND
    outcome = LOOKUP_OUTCOMES.get(found.status)
    if outcome is None:
        return payment, found.status
    amount = found.amount or attempt.amount
    answer = ProviderResult(
        outcome=outcome, provider_reference=found.provider_reference, status=found.status,
        amount=amount, currency=found.currency,
        error_code=found.error_code or ("card_declined" if outcome == Outcome.DECLINED else ""),
        error_message=found.error_message, exchange=found.exchange,
        latency_ms=found.latency_ms, action_url=found.action_url)
    return payment_authorization_record(attempt_id=attempt.id, result=answer), found.status


# -- strong customer authentication (3-D Secure) ------------------------------------------------
def authentication_token(attempt_id: str) -> str:
    """The unguessable token of one authorization attempt's return address: only the provider
    we sent it to (and through it, the customer's browser) knows it. Derived, never stored."""
    return salted_hmac("payments.authentication-return", attempt_id,
                       algorithm="sha256").hexdigest()


def authentication_return_url(attempt_id: str) -> str:
    """Where the provider sends the customer back after a challenge (no API key: the token)."""
    path = reverse("payment-authentication-return", kwargs={
        "attempt_id": attempt_id, "token": authentication_token(attempt_id)})
    return settings.PUBLIC_URL.rstrip("/") + path


def authentication_back_url(payment: Payment) -> str:
    """The merchant's `return_url` with `payment=<id>` in its query (replacing one it carried,
    before any #fragment, which the merchant's server would never see)."""
    parts = urlsplit(payment.return_url)
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
             if name != "payment"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("payment", payment.id)])))


_CHALLENGE_PAGE = re.compile(CHALLENGE_PAGE_SQL)


def _challenge_page(url: str, provider: str) -> bool:
    """The provider's challenge page is evidence: only a web address (CHALLENGE_PAGE_SQL) short
    enough to keep is ever handed to a customer's browser, and a live provider's only over
    https (plain http is for test providers, such as the simulator)."""
    return (len(url) <= 2048 and _CHALLENGE_PAGE.fullmatch(url) is not None
            and (url.startswith("https://") or not provider_is_live(provider)))


def _return_closed(attempt: PaymentAttempt, payment: Payment) -> bool:
    """The return address of a payment past its challenge stops working a bounded time
    (PAYMENT_AUTHENTICATION_RETURN_TTL_HOURS) after the challenge's deadline (counted from the
    attempt, or from its answer when that came later)."""
    if payment.status in AWAITING_AUTHORIZATION:
        return False
    deadline = attempt.created_at + timedelta(
        seconds=settings.PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS)
    if attempt.completed_at is not None:
        deadline = max(deadline, attempt.completed_at)
    return timezone.now() > deadline + timedelta(
        hours=settings.PAYMENT_AUTHENTICATION_RETURN_TTL_HOURS)


def _return_may_ask(attempt: PaymentAttempt) -> bool:
    """A hostile browser hammering the public return address makes at most a few provider
    lookups per attempt and minute; past that the visit answers from our state."""
    allowed = ratelimit.hit(key=f"3ds-return:{attempt.id}",
                            limit=settings.PAYMENT_AUTHENTICATION_RETURN_LOOKUPS_PER_MINUTE)
    if not allowed:
        logger.warning("3-D Secure return of %s over its lookup limit; answered from our state",
                       attempt.id)
    return allowed


def payment_authentication_return(*, attempt_id: str, token: str) -> Payment:
    """The customer's browser is back from the provider's challenge. Its arrival proves nothing
    about the outcome (anyone can follow a redirect): we ask the provider, through the normal
    lookup path, and apply what it says, at most a few times a minute per attempt. 404 for an
    unknown attempt, a wrong token, or a link closed since (no provider call either way)."""
    # The token first: an address we never signed (a guessed, garbled or NUL-bearing id) is
    # refused without touching the database.
    if not constant_time_compare(token, authentication_token(attempt_id)):
        raise NotFound("No such authentication.", param="attempt")
    attempt = (PaymentAttempt.objects.filter(pk=attempt_id, kind=AttemptKind.AUTHORIZE)
               .select_related("payment").first())
    if attempt is None or _return_closed(attempt, attempt.payment):
        raise NotFound("No such authentication.", param="attempt")
    payment = attempt.payment
    awaiting = attempt.is_open and payment.status in AWAITING_AUTHORIZATION
    abandoned = (payment.status == PaymentStatus.FAILED
                 and payment.failure_code == "authentication_abandoned")
    if not (awaiting or abandoned) or not _return_may_ask(attempt):
        return payment
    if awaiting:
        return payment_authorization_lookup(attempt_id=attempt.id)[0]
    # We failed it abandoned after voiding the challenge at the provider: a charge there now
    # (a provider that kept it, or lies) is kept as a break.
    found = provider_call(attempt.provider, "retrieve", RetrieveRequest(
        provider_reference=attempt.provider_reference, merchant_reference=payment.id))
    if found.status in (ProviderStatus.AUTHORIZED, ProviderStatus.CAPTURED):
        with transaction.atomic():
            _approved_after_failure(payment, attempt.provider, found.provider_reference,
                                    found.amount, found.currency, said=str(found.status))
    return payment


def _approved_after_failure(payment: Payment, provider: str, reference: str, amount: int | None,
                            currency: str, *, said: str) -> None:
    """The provider says it took (or holds) money on a payment that failed here (or on a try of
    it that was declined here): e.g. a challenge the janitor voided there and failed abandoned,
    which the provider now shows approved (it kept the charge, or lies). Nothing moves;
    the charge is kept as a break for a person to refund or void at the provider."""
    break_report(BreakSpec(
        type="status_mismatch", key=f"approved_after_failure:{provider}:{payment.id}",
        provider=provider, payment_id=payment.id, provider_reference=reference,
        currency=payment.currency, our_amount=payment.amount_captured, provider_amount=amount,
        our_data={"status": payment.status, "failure_code": payment.failure_code},
        provider_data={"said": said, "amount": amount, "currency": currency}))


def payment_authentications_expire(*, now: datetime | None = None, limit: int = 100) -> int:
    """End the challenges the customer left unfinished past their time (the janitor calls
    this). The provider is asked first (a result may be on its way: a completed challenge is
    applied, never overridden); a challenge still open there is voided at the provider (a VOID
    attempt with its own idempotency key, sent outside any transaction), so a customer who
    finishes it later is charged nothing, and only then does the payment end `failed` with
    `authentication_abandoned`. A void the provider refuses because the charge went through
    meanwhile is followed by a lookup that applies the approval; a void whose outcome is unknown
    keeps the payment `requires_action` and is sent again, same key, on a later run. Returns
    how many were failed."""
    failed = 0
    # Least recently asked first: a payment the provider cannot answer for goes to the back
    # (its `updated_at` is touched), never holding the batch against the ones after it.
    due = _lapsed(PaymentStatus.REQUIRES_ACTION, "action_expires_at", now, limit,
                  order="updated_at")
    for payment_id in due:
        failed += _abandoned_challenge_end(payment_id)
    return failed


_CHALLENGE_STILL_OPEN = (ProviderStatus.ACTION_REQUIRED, ProviderStatus.PENDING,
                         ProviderStatus.NOT_FOUND)


def _abandoned_challenge_end(payment_id: str) -> bool:
    """One lapsed challenge: void it at the provider, then fail the payment (True when failed)."""
    attempt = latest_authorize_attempt(payment_id=payment_id)
    if attempt is None:
        return False
    void = (PaymentAttempt.objects.filter(payment_id=payment_id, kind=AttemptKind.VOID,
                                          status__in=OPEN_ATTEMPT_STATUSES).first())
    if void is None:
        _, said = payment_authorization_lookup(attempt_id=attempt.id)
        if said in _CHALLENGE_STILL_OPEN:
            with transaction.atomic():
                payment, attempt = _lock_attempt(attempt.id)
                if payment.status == PaymentStatus.REQUIRES_ACTION and attempt.is_open:
                    # Another run may have opened it since our read: send that one (its key),
                    # never a second void beside it.
                    void = _open_attempt_of(payment, payment.provider, AttemptKind.VOID)
                    refused = _void_refusal(payment)
                    if void is None and refused is not None:
                        # The provider refused our void yet shows the challenge open: never a
                        # new key each run; people decide.
                        _challenge_void_refused(payment, refused)
                    elif void is None:
                        void = _open_attempt(payment, AttemptKind.VOID, attempt.amount)
    if void is not None:
        # A first send, or the re-send of one whose outcome is unknown (same provider key: the
        # provider voids once); recorded, with the payment failed on success, under the lock.
        payment, result = _operation_send(void.payment, void, record=_challenge_void_record)
        if _charge_moved_on(result):
            # Refused because the customer finished the challenge meanwhile: the lookup applies
            # the approval through the normal path.
            payment_authorization_lookup(attempt_id=attempt.id)
        if payment.status == PaymentStatus.FAILED and _challenge_voided(result):
            return True
    # Still waiting (the provider could not say, or the void's outcome is unknown): asked again
    # on a later run, after the others.
    Payment.objects.filter(pk=payment_id, status=PaymentStatus.REQUIRES_ACTION).update(
        updated_at=timezone.now())
    return False


# Voids of one authorization (an abandoned challenge, an expired authorization) refused as
# "nothing done, try again" (the provider down for a moment) before we stop and open a break.
VOID_TRIES = 5


def _void_refusal(payment: Payment) -> PaymentAttempt | None:
    """The refusal that ends our voids of this payment's authorization: a definite one (the
    provider will not void it, or has nothing to void), or the last of VOID_TRIES refused as
    retryable, which did nothing there and may be sent again under a new key. None while
    another void may go."""
    refused = list(payment.attempts.filter(kind=AttemptKind.VOID, status=AttemptStatus.DECLINED)
                   .order_by("-created_at"))
    for void in refused:
        if not error_code_meaning(void.error_code).retryable:
            return void
    return refused[0] if len(refused) >= VOID_TRIES else None


def _challenge_voided(result: ProviderResult) -> bool:
    """The provider ended the open challenge, or holds nothing to end (no such charge)."""
    return result.outcome == Outcome.APPROVED or (
        result.outcome == Outcome.DECLINED and result.error_code == "not_found")


def _charge_moved_on(result: ProviderResult) -> bool:
    """A void refused because the charge is in another state now (authorized, captured, or
    declined by the provider's own timeout): only a lookup says which."""
    return result.outcome == Outcome.DECLINED and not _challenge_voided(result)


def _challenge_void_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    """Record the void of an abandoned challenge (its answer, a lookup or a notice showing the
    charge voided) and, when the provider ended it, fail the payment `authentication_abandoned`
    with its authorization attempt declined, in one transaction under the payment's lock. An
    answer naming another charge is no answer (the void stays open, sent again later). An
    approval that reached us while the void was in flight: an authorization the provider then
    voided is canceled; a capture it says it voided is a conflict kept as a break."""
    with transaction.atomic():
        payment, void = _lock_attempt(attempt_id)
        if payment.provider_reference and result.provider_reference not in (
                "", payment.provider_reference):
            logger.warning("void of %s answered for another charge %r; not recorded",
                           payment.id, result.provider_reference)
            return payment
        if void.is_open and _void_contradicted(payment, void, result):
            # The customer's approval reached us while the void was in flight and the void's
            # answer shows the charge still held or taken: a break, as for any void.
            return payment
        if void.is_open:
            _record_attempt(void, result)
        elif void.status == AttemptStatus.APPROVED:
            return payment  # recorded before: a duplicate answer, a replayed notice
        if payment.status == PaymentStatus.AUTHORIZED and result.outcome == Outcome.APPROVED:
            _released(payment)
            return payment
        if payment.status in FUNDS_CAPTURED and result.outcome == Outcome.APPROVED:
            _voided_after_approval(payment, void, result)
            return payment
        authorize = (payment.attempts.select_for_update().filter(kind=AttemptKind.AUTHORIZE)
                     .order_by("-created_at", "-id").first())
        if (payment.status != PaymentStatus.REQUIRES_ACTION or authorize is None
                or not authorize.is_open or not _challenge_voided(result)):
            return payment
        message = ("The customer did not complete the authentication challenge within "
                   f"{settings.PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS} seconds; it was voided "
                   "at the provider.")
        _record_attempt(authorize, ProviderResult(
            outcome=Outcome.DECLINED, provider_reference=authorize.provider_reference,
            error_code="authentication_abandoned", error_message=message))
        payment.mark_failed("authentication_abandoned", message)
        payment.save()
        _payment_event(payment, "payment.failed")
    return payment


def _voided_after_approval(payment: Payment, void: PaymentAttempt, result: ProviderResult
                           ) -> None:
    """The provider confirms our void of a challenge whose capture it had notified: both
    cannot be true. The payment never moves back; a person finds out which side is right."""
    break_report(BreakSpec(
        type="status_mismatch", key=f"voided_after_approval:{void.provider}:{payment.id}",
        provider=void.provider, payment_id=payment.id,
        provider_reference=result.provider_reference or payment.provider_reference,
        currency=payment.currency, our_amount=payment.amount_captured, provider_amount=0,
        our_data={"status": payment.status}, provider_data={"said": "voided", "void": void.id}))


def _challenge_void_refused(payment: Payment, void: PaymentAttempt) -> None:
    """The provider refused to void an abandoned challenge it still shows open."""
    break_report(BreakSpec(
        type="status_mismatch", key=f"challenge_void_refused:{void.provider}:{payment.id}",
        provider=void.provider, payment_id=payment.id,
        provider_reference=payment.provider_reference, currency=payment.currency,
        our_amount=payment.amount_captured, provider_amount=None,
        our_data={"status": payment.status},
        provider_data={"said": "action_required", "void": void.id,
                       "void_error": void.error_code}))


def _challenge_void_of(payment: Payment) -> PaymentAttempt | None:
    """The void the janitor sent for this payment's challenge, not yet recorded as done."""
    if payment.status != PaymentStatus.REQUIRES_ACTION:
        return None
    return (payment.attempts.filter(kind=AttemptKind.VOID, provider=payment.provider)
            .exclude(status=AttemptStatus.APPROVED).order_by("-created_at", "-id").first())


def _operation_open(payment: Payment) -> bool:
    """A capture, void or increment of the payment is under way (sent, no answer yet)."""
    return payment.attempts.filter(kind__in=OPERATION_KINDS,
                                   status__in=OPEN_ATTEMPT_STATUSES).exists()


def _open_attempt(payment: Payment, kind: str, amount: int, refund: Refund | None = None,
                  *, is_final: bool = True) -> PaymentAttempt:
    if kind != AttemptKind.REFUND and _operation_open(payment):
        raise StateError("A capture, cancel or authorization increment of this payment is "
                         "already in progress.", code="payment_operation_in_progress")
    return PaymentAttempt.objects.create(
        payment=payment, refund=refund, kind=kind, provider=payment.provider, amount=amount,
        is_final=is_final,
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


def _operation_send(payment: Payment, attempt: PaymentAttempt, *,
                    record: Callable[..., Payment] | None = None
                    ) -> tuple[Payment, ProviderResult]:
    """Send a capture, void or increment attempt with its own provider idempotency key
    (outside any transaction) and record the answer (a void: with `record`, default
    payment_void_record). A re-send of the same attempt is de-duplicated by the provider, so
    the original request and the janitor's re-send end in one operation."""
    if attempt.kind == AttemptKind.CAPTURE:
        result = provider_call(attempt.provider, "capture", CaptureRequest(
            idempotency_key=attempt.provider_idempotency_key,
            provider_reference=payment.provider_reference, amount=attempt.amount,
            currency=payment.currency, final=attempt.is_final,
        ))
        return payment_capture_record(attempt_id=attempt.id, result=result), result
    if attempt.kind == AttemptKind.INCREMENT:
        result = provider_call(attempt.provider, "increment_authorization", IncrementRequest(
            idempotency_key=attempt.provider_idempotency_key,
            provider_reference=payment.provider_reference, amount=attempt.amount,
            currency=payment.currency,
        ))
        return payment_increment_record(attempt_id=attempt.id, result=result), result
    result = provider_call(attempt.provider, "void", VoidRequest(
        idempotency_key=attempt.provider_idempotency_key,
        provider_reference=payment.provider_reference,
    ))
    return (record or payment_void_record)(attempt_id=attempt.id, result=result), result


def _lock_open_authorization(merchant: Merchant, payment_id: str, action: str) -> Payment:
    """Lock a payment whose authorization is open and unexpired (capture, increment), or
    refuse with 409."""
    payment = _lock_payment(merchant=merchant, payment_id=payment_id)
    if not payment.allows("capture"):
        raise _state_error(payment, action)
    expires_at = payment.authorization_expires_at
    if expires_at is not None and expires_at <= timezone.now():
        raise StateError(f"The authorization of {payment.id} expired at "
                         f"{expires_at.isoformat()}; it can no longer be {action} (it is "
                         "being voided). Create a new payment.",
                         code="payment_unexpected_state")
    return payment


def payment_capture(*, merchant: Merchant, payment_id: str, amount: int | None = None,
                    final_capture: bool = True, audit: AuditHook | None = None) -> Payment:
    """Capture `amount` (default: all that is still uncaptured). `final_capture` (the default)
    ends the authorization, releasing the rest; False leaves the rest open for further
    captures (multicapture, where the provider offers it) until they reach the authorized
    amount or a final one is made. Each capture is its own provider call and ledger entry."""
    with transaction.atomic():
        payment = _lock_open_authorization(merchant, payment_id, "captured")
        uncaptured = payment.amount_authorized - payment.amount_captured
        amount = amount or uncaptured
        if amount > uncaptured:
            already = (f" ({payment.amount_captured} of it already captured)"
                       if payment.amount_captured else "")
            raise InvalidRequest(
                f"Amount {amount} exceeds the {uncaptured} left of the authorized amount "
                f"{payment.amount_authorized}{already}.", param="amount", code="amount_too_large",
            )
        if not final_capture and not supports(payment.provider, "multicapture"):
            raise InvalidRequest(
                f"Provider {payment.provider} takes one capture per authorization; capture "
                "with final_capture true.", param="final_capture",
                code="multicapture_unsupported")
        if audit is not None:
            audit(payment)
        attempt = _open_attempt(payment, AttemptKind.CAPTURE, amount, is_final=final_capture)
    payment, result = _operation_send(payment, attempt)
    _raise_for_failed_call(result, "capture")
    return payment


def payment_capture_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    # A capture answered with the charge captured (or refunded since) ended the authorization
    # at the provider, the rest released, whatever `final_capture` asked.
    final = result.status in OPERATION_DONE[AttemptKind.CAPTURE]
    return _operation_record(attempt_id, result, check_amounts=True,
                             approved=lambda payment, attempt: _capture(
                                 payment, attempt.amount, final=attempt.is_final or final,
                                 capture_id=attempt.id))


def payment_increment_authorization(*, merchant: Merchant, payment_id: str, amount: int,
                                    audit: AuditHook | None = None) -> Payment:
    """Raise an open authorization to `amount`, its new total (incremental authorization,
    where the provider offers it). The provider's approval of exactly that amount raises the
    payment's amount and authorized amount once; any other answer moves nothing."""
    with transaction.atomic():
        payment = _lock_open_authorization(merchant, payment_id, "incremented")
        if not supports(payment.provider, "increment_authorization"):
            raise StateError(f"Provider {payment.provider} does not offer incremental "
                             "authorization; create a further payment instead.",
                             code="incremental_authorization_unsupported")
        if payment.amount_captured:
            raise StateError(f"{payment.id} is partially captured; an authorization is raised "
                             "only before its first capture.", code="payment_unexpected_state")
        if amount <= payment.amount_authorized:
            raise InvalidRequest(
                f"Amount {amount} is the new total and must exceed the authorized amount "
                f"{payment.amount_authorized}.", param="amount", code="amount_too_small")
        if audit is not None:
            audit(payment)
        attempt = _open_attempt(payment, AttemptKind.INCREMENT, amount)
    payment, result = _operation_send(payment, attempt)
    _raise_for_failed_call(result, "authorization increment")
    return payment


def payment_increment_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    return _operation_record(attempt_id, result, check_amounts=True,
                             approved=_authorization_raised)


def _authorization_raised(payment: Payment, attempt: PaymentAttempt) -> None:
    payment.amount = payment.amount_authorized = attempt.amount
    payment.save(update_fields=["amount", "amount_authorized", "updated_at"])
    _payment_event(payment, "payment.authorization_incremented")


def _operation_record(attempt_id: str, result: ProviderResult, *, check_amounts: bool,
                      approved: Callable[[Payment, PaymentAttempt], None],
                      refused: Callable[[Payment], None] | None = None) -> Payment:
    """Record the answer to a capture, void or increment attempt still open; an approval applies
    (`approved`) only to a payment still authorized, and so does a refusal (`refused`). A
    capture's answer must also agree with what was asked (`check_amounts`: a mismatch is a
    break, not money)."""
    with transaction.atomic():
        payment, attempt = _lock_attempt(attempt_id)
        if (not attempt.is_open or (check_amounts and _mismatch(payment, attempt, result))
                or _void_contradicted(payment, attempt, result)):
            return payment
        _record_attempt(attempt, result)
        if payment.status != PaymentStatus.AUTHORIZED:
            return payment
        if result.outcome == Outcome.APPROVED:
            approved(payment, attempt)
        elif result.outcome == Outcome.DECLINED and refused is not None:
            refused(payment)
    return payment


def payment_cancel(*, merchant: Merchant, payment_id: str, audit: AuditHook | None = None,
                   cancellation_reason: str = "") -> Payment:
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if audit is not None and payment.allows("cancel"):
            audit(payment)
        # A partially captured payment is not canceled: the void releases the rest and the
        # payment ends captured (as Stripe's multicapture does).
        if payment.allows("cancel") and not payment.amount_captured:
            payment.cancellation_reason = cancellation_reason
        if payment.status == PaymentStatus.CREATED:
            _cancel(payment)
            return payment
        if not payment.allows("cancel"):
            raise _state_error(payment, "canceled")
        attempt = _open_attempt(payment, AttemptKind.VOID, payment.amount_authorized)
    payment, result = _operation_send(payment, attempt)
    _raise_for_failed_call(result, "cancel")
    return payment


def payment_void_record(*, attempt_id: str, result: ProviderResult) -> Payment:
    return _operation_record(attempt_id, result, check_amounts=False,
                             approved=lambda payment, attempt: _released(payment),
                             refused=_not_canceled)


def _released(payment: Payment) -> None:
    """A void approved: the payment is canceled, or, once partially captured, it ends
    captured with what its captures took (the void released only the rest)."""
    if not payment.amount_captured:
        _cancel(payment)
        return
    payment.mark_captured(0)
    payment.save()
    _payment_event(payment, "payment.captured")


def _cancel(payment: Payment) -> None:
    payment.mark_canceled()
    payment.save()
    _payment_event(payment, "payment.canceled")


def _not_canceled(payment: Payment) -> None:
    """The provider refused the void: the payment stays authorized, with no cancellation reason."""
    payment.cancellation_reason = ""
    payment.save(update_fields=["cancellation_reason", "updated_at"])


def _lapsed(status: str, deadline: str, now: datetime | None, limit: int,
            order: str = "") -> list[str]:
    """Ids of payments in `status` whose `deadline` (a datetime field) has passed, oldest
    deadline first, or by `order` (the janitor's expiry jobs; each re-checks under the row
    lock)."""
    return list(Payment.objects.filter(status=status, **{f"{deadline}__lte": now or timezone.now()})
                .order_by(order or deadline).values_list("pk", flat=True)[:limit])


# How often the janitor asks a provider that refused to void an expired authorization what it
# holds (a break is open for people meanwhile; the answer may change when the provider lets it
# lapse late).
REFUSED_VOID_LOOKUP_EVERY = timedelta(hours=1)


def payment_authorizations_expire(*, now: datetime | None = None, limit: int = 100) -> int:
    """Void the authorizations their provider lets lapse (the janitor calls this): each
    payment is voided at the provider with its own void attempt's idempotency key, and
    becomes `canceled` with cancellation_reason `expired` (event payment.canceled); a partially
    captured one has only its rest released and ends `captured` with what its captures took
    (event payment.captured), as Stripe's multicapture does. A payment with a capture, void or
    increment under way is left to the janitor's operation checks; a refused capture or
    increment is no reason to keep the rest held. A void refused as retryable (nothing done
    there) is sent again under a new key, up to VOID_TRIES; after a definite refusal the
    provider is asked (_expired_void_refused), at most once per REFUSED_VOID_LOOKUP_EVERY.
    Returns how many were released."""
    # Least recently handled first: a payment the provider will not release goes to the back
    # (its `updated_at` is touched), never holding the batch against the ones after it.
    due = _lapsed(PaymentStatus.AUTHORIZED, "authorization_expires_at", now, limit,
                  order="updated_at")
    canceled = 0
    for payment_id in due:
        refusal = attempt = None
        with transaction.atomic():
            payment = _lock_payment(merchant=None, payment_id=payment_id)
            if payment.status != PaymentStatus.AUTHORIZED or _operation_open(payment):
                if payment.status == PaymentStatus.AUTHORIZED:
                    logger.warning("authorization of %s expired with a capture, void or "
                                   "increment under way; the janitor's checks finish it",
                                   payment.id)
                    _touch(payment)
                continue
            refusal = _void_refusal(payment)
            if refusal is not None and payment.updated_at > (
                    (now or timezone.now()) - REFUSED_VOID_LOOKUP_EVERY):
                continue  # asked within the hour: the provider is not asked every 5 minutes
            if refusal is None:
                if not payment.amount_captured:
                    payment.cancellation_reason = CancellationReason.EXPIRED
                    payment.save(update_fields=["cancellation_reason", "updated_at"])
                attempt = _open_attempt(payment, AttemptKind.VOID, payment.amount_authorized)
        if attempt is not None:
            payment, result = _operation_send(payment, attempt)
            if (payment.status == PaymentStatus.AUTHORIZED and result.outcome == Outcome.DECLINED
                    and not error_code_meaning(result.error_code).retryable):
                refusal = PaymentAttempt.objects.get(pk=attempt.pk)
        if refusal is not None:
            payment = _expired_void_refused(payment, refusal)
        if payment.status == PaymentStatus.AUTHORIZED:
            _touch(payment)
        else:
            canceled += 1
    return canceled


def _touch(payment: Payment) -> None:
    Payment.objects.filter(pk=payment.pk).update(updated_at=timezone.now())


def _released_there(payment: Payment, found: ProviderResult) -> bool:
    """Whether a lookup (an answer, for this charge and our order) shows the authorization
    released with exactly what we captured taken: voided with nothing captured, or, once
    partially captured, captured with our captured total (the rest lapsed or voided). A charge
    the provider took money from without us, or that denies our captures, is not released:
    people decide."""
    if (found.outcome != Outcome.APPROVED
            or found.provider_reference not in ("", payment.provider_reference)
            or found.merchant_reference not in ("", payment.id)):
        return False
    if not payment.amount_captured:
        return found.status == ProviderStatus.VOIDED and not found.amount_captured
    return (found.status == ProviderStatus.CAPTURED
            and found.amount_captured == payment.amount_captured)


def _expired_void_refused(payment: Payment, refusal: PaymentAttempt) -> Payment:
    """The provider refused to void an expired authorization: ask it what it holds. Released
    there already (it let the authorization lapse, or voided it; _released_there): recorded as
    a void of ours whose answer is that lookup (never sent: nothing is left to void), and the
    payment ends as a void ends it (canceled, or captured with what its captures took). Still
    held, or anything else: one `status_mismatch` break (`authorization_void_refused`) for
    people, and the payment stays authorized."""
    found = provider_call(refusal.provider, "retrieve", RetrieveRequest(
        provider_reference=payment.provider_reference, merchant_reference=payment.id))
    if found.outcome == Outcome.UNKNOWN:
        return payment  # asked again on a later run
    if _released_there(payment, found):
        with transaction.atomic():
            payment = _lock_payment(merchant=None, payment_id=payment.pk)
            if payment.status != PaymentStatus.AUTHORIZED or _operation_open(payment):
                return payment
            if not payment.amount_captured:
                payment.cancellation_reason = CancellationReason.EXPIRED
                payment.save(update_fields=["cancellation_reason", "updated_at"])
            void = _open_attempt(payment, AttemptKind.VOID, payment.amount_authorized)
        return payment_void_record(attempt_id=void.id, result=ProviderResult(
            outcome=Outcome.APPROVED, provider_reference=payment.provider_reference,
            status=found.status, amount=found.amount, currency=found.currency,
            amount_captured=found.amount_captured, exchange=found.exchange,
            latency_ms=found.latency_ms))
    with transaction.atomic():
        break_report(BreakSpec(
            type="status_mismatch",
            key=f"authorization_void_refused:{refusal.provider}:{payment.id}",
            provider=refusal.provider, payment_id=payment.id,
            provider_reference=payment.provider_reference, currency=payment.currency,
            our_amount=payment.amount_authorized, provider_amount=found.amount,
            our_data={"status": payment.status, "expired_at": str(
                payment.authorization_expires_at)},
            provider_data={"said": str(found.status), "void": refusal.id,
                           "void_error": refusal.error_code}))
    return payment


# What a status lookup may say once a capture, void or increment attempt has happened. A charge
# refunded since (in full, from the provider's dashboard, say) was captured first; a partially
# captured charge is captured once voided (its rest released).
OPERATION_DONE = {AttemptKind.CAPTURE: (ProviderStatus.CAPTURED, ProviderStatus.REFUNDED),
                  AttemptKind.VOID: (ProviderStatus.VOIDED,),
                  AttemptKind.INCREMENT: ()}


def _operation_shown(payment: Payment, attempt: PaymentAttempt, found: ProviderResult
                     ) -> int | None:
    """Whether a lookup shows the attempt done, and then the amount it shows for it (None:
    not shown). A partial capture leaves the charge authorized: its running captured total
    grown past ours shows it. An increment shows as the charge's amount (raised only before
    any capture, so a lookup's amount is its authorization)."""
    total = found.amount_captured if found.amount_captured is not None else found.amount
    taken = None if total is None else total - payment.amount_captured
    if attempt.kind == AttemptKind.CAPTURE:
        partial = (found.status == ProviderStatus.AUTHORIZED
                   and found.amount_captured is not None and bool(taken))
        shown = found.status in OPERATION_DONE[attempt.kind] or partial
        return (taken if taken is not None else attempt.amount) if shown else None
    if attempt.kind == AttemptKind.INCREMENT:
        raised = found.status == ProviderStatus.AUTHORIZED and found.amount not in (
            None, payment.amount_authorized)
        return found.amount if raised else None
    voided = found.status in OPERATION_DONE[attempt.kind] or (
        payment.amount_captured and found.status == ProviderStatus.CAPTURED)
    return (found.amount or 0) if voided else None


def payment_operation_lookup(*, attempt_id: str) -> tuple[Payment, ProviderStatus]:
    """Ask the provider about the charge of an operation attempt left without an answer."""
    # Records it only when the charge shows it done; never re-sends (the janitor decides that
    # from the status returned: `authorized` means the provider never applied it).
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
    payment = attempt.payment
    if (attempt.kind not in OPERATION_DONE
            or not attempt.is_open):
        return payment, ProviderStatus.UNKNOWN
    found = provider_call(attempt.provider, "retrieve", RetrieveRequest(
        provider_reference=payment.provider_reference, merchant_reference=payment.id))
    amount = _operation_shown(payment, attempt, found)
    if amount is None:
        return payment, found.status
    answer = ProviderResult(
        outcome=Outcome.APPROVED, provider_reference=found.provider_reference,
        status=found.status, amount=amount if attempt.kind != AttemptKind.VOID else found.amount,
        currency=found.currency, exchange=found.exchange, latency_ms=found.latency_ms,
        # What the charge shows taken: a void shown done with money we did not take is a
        # break (_void_contradicted), as it is when the void's own answer says so.
        amount_captured=found.amount_captured if attempt.kind == AttemptKind.VOID else None)
    record = {AttemptKind.CAPTURE: payment_capture_record, AttemptKind.VOID: payment_void_record,
              AttemptKind.INCREMENT: payment_increment_record}[attempt.kind]
    # A partial capture or an increment leaves the charge `authorized`: shown done, it must not
    # read as never applied (a re-send), even when its amount disagrees and a break holds it.
    said = ProviderStatus.UNKNOWN if found.status == ProviderStatus.AUTHORIZED else found.status
    return record(attempt_id=attempt.id, result=answer), said


def payment_operation_execute(*, attempt_id: str) -> Payment:
    """Send an operation attempt that has no answer again, with its own provider key."""
    attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
    if (attempt.kind not in OPERATION_DONE or attempt.payment.status != PaymentStatus.AUTHORIZED
            or not attempt.is_open):
        return attempt.payment
    if _challenge_completed_since(attempt):
        return _challenge_void_close(attempt.id)
    return _operation_send(attempt.payment, attempt)[0]


def _challenge_completed_since(attempt: PaymentAttempt) -> bool:
    """A void opened for the payment's abandoned challenge (before its authorization was
    approved: every other void is opened on an authorized payment) whose customer completed
    the challenge since."""
    return attempt.kind == AttemptKind.VOID and attempt.payment.attempts.filter(
        kind=AttemptKind.AUTHORIZE, status=AttemptStatus.APPROVED,
        completed_at__gt=attempt.created_at).exists()


def _challenge_void_close(attempt_id: str) -> Payment:
    """The charge shows the authorization, not our void: the challenge the void was meant to
    end was completed, so it is closed unsent, never canceling what the customer approved."""
    with transaction.atomic():
        payment, void = _lock_attempt(attempt_id)
        if void.is_open:
            _record_attempt(void, ProviderResult(
                outcome=Outcome.DECLINED, provider_reference=payment.provider_reference,
                error_code="authentication_completed",
                error_message="The customer completed the challenge this void was to end."))
    return payment


# -- saved payment methods at authorization ----------------------------------------------------
def _stored_credential(payment: Payment) -> StoredCredential:
    if payment.saved_method_id is None:
        return StoredCredential.NONE
    return StoredCredential.MERCHANT if payment.off_session else StoredCredential.CUSTOMER


def _token_at(payment: Payment, provider: str) -> tuple[str, ProviderResult | None]:
    """What to send `provider` as the card: a test alias as it is; for a saved method, that
    provider's own token, enrolling the card there first when it has none. Without a token
    the authorization is not sent: the answer is a retryable decline (nothing can have been
    charged), so failover moves on to the next provider."""
    method = payment.saved_method
    if method is None:
        return payment.payment_method, None
    token = (PaymentMethodToken.objects.filter(payment_method=method, provider=provider)
             .values_list("token", flat=True).first())
    if token is None:
        token, failure = _enroll(payment, method, provider)
        if token is None:
            return "", ProviderResult(
                outcome=Outcome.DECLINED, error_code="payment_method_not_enrolled",
                error_message=f"{method.id} could not be enrolled at {provider}: {failure}",
                retryable=True)
    return token, None


def _enroll(payment: Payment, method: PaymentMethod, provider: str) -> tuple[str | None, str]:
    """Enrol a saved card at `provider` from its network token, two-phase like every provider
    call: an `enroll` attempt is committed first (a re-run reuses an open one, so the provider
    sees the same idempotency key), the call runs outside any transaction, and the answer is
    recorded with the new token (unique per method and provider). Returns (token, why not)."""
    if not supports(provider, "token_enroll") or not method.network_token:
        return None, "this provider has no card vault we can enrol in"
    attempt = (payment.attempts.filter(kind=AttemptKind.ENROLL, provider=provider,
                                       status=AttemptStatus.REQUESTED).first()
               or PaymentAttempt.objects.create(payment=payment, kind=AttemptKind.ENROLL,
                                                provider=provider, amount=0))
    answer: TokenResult = provider_call(provider, "token_enroll", TokenEnrollRequest(
        idempotency_key=attempt.provider_idempotency_key,
        network_token=crypto.decrypt(method.network_token)), gate=True)
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        if attempt.status == AttemptStatus.REQUESTED:
            _record_attempt(attempt, ProviderResult(
                outcome=answer.outcome, error_code=answer.error_code,
                error_message=answer.error_message, exchange=answer.exchange,
                latency_ms=answer.latency_ms))
        if answer.outcome != Outcome.APPROVED:
            return None, answer.error_message or answer.error_code or "no answer"
        try:
            with transaction.atomic():
                PaymentMethodToken.objects.get_or_create(
                    payment_method=method, provider=provider,
                    defaults={"token": answer.token, "origin": "enrolled"})
        except IntegrityError:
            # The vault keeps one token per card and this one is another payment method's
            # (the same card saved by another shop): never attached to this one. The
            # authorization is declined as not enrolled, so failover moves on.
            return None, f"{provider}'s vault answered a token saved as another payment method"
        method = PaymentMethod.objects.select_related("merchant").get(pk=method.pk)
        event_record(merchant=method.merchant, type="payment_method.updated",
                     obj=payment_method_to_dict(method))
    token = (PaymentMethodToken.objects.filter(payment_method=method, provider=provider)
             .values_list("token", flat=True).get())
    return token, ""


def _payment_method_for_charge(*, merchant: Merchant, payment_method: str,
                               customer_id: str | None, off_session: bool
                               ) -> tuple[PaymentMethod | None, Customer | None]:
    """The saved method and customer a new payment names (inside its transaction): both the
    merchant's, the method not detached and, when it belongs to a customer, that customer's.
    Off-session charges need a saved method. The trigger on payments_payment repeats this."""
    owner = one_or_404(Customer.objects.filter(merchant=merchant), customer_id,
                       noun="customer", param="customer") if customer_id else None
    if not SAVED_METHOD_ID.fullmatch(payment_method):
        if off_session:
            raise InvalidRequest("off_session needs a saved payment method (pm_… from "
                                 "/v1/payment_methods).", param="off_session")
        return None, owner
    method = one_or_404(PaymentMethod.objects.select_for_update().filter(merchant=merchant),
                        payment_method, noun="payment method", param="payment_method")
    if method.is_detached:
        raise StateError(f"Payment method {method.id} is detached and can no longer be "
                         "charged.", param="payment_method", code="payment_method_detached")
    if method.customer_id and owner is not None and owner.pk != method.customer_id:
        raise InvalidRequest(f"Payment method {method.id} belongs to another customer.",
                             param="customer")
    return method, owner or method.customer


# -- customers and payment methods -----------------------------------------------------------
SAVED_METHOD_ID = re.compile(r"pm_[A-Za-z0-9]{24}")


def _existing_by_key(model: type[Any], merchant: Merchant, idempotency_key: str,
                     fingerprint: str) -> Any:
    """The row an earlier request with this Idempotency-Key created (any age), or None."""
    found = idempotency_key and model.objects.select_related("merchant").filter(
        merchant=merchant, idempotency_key=idempotency_key).first()
    return same_request_or_422(found, fingerprint) if found else None


def customer_create(*, merchant: Merchant, email: str = "", name: str = "",
                    metadata: dict[str, str] | None = None, idempotency_key: str = "",
                    idempotency_fingerprint: str = "") -> Customer:
    def create() -> Customer:
        with transaction.atomic():
            customer = Customer.objects.create(
                merchant=merchant, email=email, name=name, metadata=metadata or {},
                idempotency_key=idempotency_key, idempotency_fingerprint=idempotency_fingerprint)
            event_record(merchant=merchant, type="customer.created",
                         obj=customer_to_dict(customer))
        return customer

    return create_or_existing(create, lambda: _existing_by_key(
        Customer, merchant, idempotency_key, idempotency_fingerprint))


def customer_update(*, merchant: Merchant, customer_id: str, email: str | None = None,
                    name: str | None = None, metadata: dict[str, str] | None = None
                    ) -> Customer:
    """Change what is given. Metadata merges key by key, and an empty value removes its key
    (as at Stripe)."""
    with transaction.atomic():
        customer = one_or_404(Customer.objects.select_for_update().filter(merchant=merchant),
                              customer_id, noun="customer")
        if email is not None:
            customer.email = email
        if name is not None:
            customer.name = name
        if metadata is not None:
            merged = {**customer.metadata, **metadata}
            customer.metadata = {key: value for key, value in merged.items() if value}
        customer.save()
        event_record(merchant=merchant, type="customer.updated", obj=customer_to_dict(customer))
    return customer


def payment_method_create(
    *, merchant: Merchant, provider: str, token: str, customer: str | None = None,
    metadata: dict[str, str] | None = None, idempotency_key: str = "",
    idempotency_fingerprint: str = "",
) -> PaymentMethod:
    """Save a card the merchant's front-end tokenized at `provider`'s vault. The vault is asked
    what the token is (outside any transaction) before anything is written: an unknown token is
    400 and a lost answer 502, both with nothing saved. One payment method per acquirer token."""
    existing = _existing_by_key(PaymentMethod, merchant, idempotency_key,
                                idempotency_fingerprint)
    if existing is not None:
        return existing
    if provider not in codes_of_mode(livemode=merchant.is_live) or not supports(
            provider, "token_retrieve"):
        raise InvalidRequest(f"'{provider}' is not a provider with a card vault for this "
                             "account's mode.", param="provider")
    owner = one_or_404(Customer.objects.filter(merchant=merchant), customer,
                       noun="customer", param="customer") if customer else None
    _token_not_saved(merchant, provider, token)
    card: TokenResult = provider_call(provider, "token_retrieve",
                                      TokenRetrieveRequest(token=token))
    if card.outcome == Outcome.DECLINED:
        raise _token_unknown(provider, card.error_code)
    if card.outcome != Outcome.APPROVED:
        raise ProviderError(f"{provider} did not answer whether this token is valid; nothing "
                            "was saved, retry.", code="provider_outcome_unknown")
    if _token_saved_elsewhere(merchant, provider, token):
        # Answered as the vault answers a token it does not know, after asking it as for any
        # token (the same calls, the same timing): another merchant's saved card is neither
        # charged by this one nor a way to learn which tokens other merchants hold.
        raise _token_unknown(provider, "not_found")

    def create() -> PaymentMethod:
        with transaction.atomic():
            method = PaymentMethod.objects.create(
                merchant=merchant, customer=owner, brand=card.brand, last4=card.last4,
                exp_month=card.exp_month, exp_year=card.exp_year,
                network_token=crypto.encrypt(card.network_token) if card.network_token else "",
                metadata=metadata or {}, idempotency_key=idempotency_key,
                idempotency_fingerprint=idempotency_fingerprint)
            PaymentMethodToken.objects.create(payment_method=method, provider=provider,
                                              token=token, origin="saved")
            event_record(merchant=merchant, type="payment_method.created",
                         obj=payment_method_to_dict(method))
        return method

    def twin() -> PaymentMethod | None:
        found = _existing_by_key(PaymentMethod, merchant, idempotency_key,
                                 idempotency_fingerprint)
        if found is None:
            _token_not_saved(merchant, provider, token)
            if _token_saved_elsewhere(merchant, provider, token):
                raise _token_unknown(provider, "not_found")
        return found

    return create_or_existing(create, twin)


def _token_not_saved(merchant: Merchant, provider: str, token: str) -> None:
    """409 when this merchant saved the token already (one payment method per acquirer
    token; the unique constraint holds it across merchants too)."""
    if PaymentMethodToken.objects.filter(provider=provider, token=token,
                                         payment_method__merchant=merchant).exists():
        raise StateError("This token is already saved as a payment method.", param="token",
                         code="payment_method_exists")


def _token_unknown(provider: str, code: str) -> InvalidRequest:
    return InvalidRequest(f"{provider} does not know this token ({code}).", param="token",
                          code="payment_method_token_invalid")


def _token_saved_elsewhere(merchant: Merchant, provider: str, token: str) -> bool:
    return PaymentMethodToken.objects.filter(provider=provider, token=token).exclude(
        payment_method__merchant=merchant).exists()


def payment_method_detach(*, merchant: Merchant, payment_method_id: str) -> PaymentMethod:
    """Detach a saved method from its customer for good: it can no longer be charged (payments
    already made keep their history). Detaching twice answers the detached method."""
    with transaction.atomic():
        method = one_or_404(PaymentMethod.objects.select_for_update().filter(merchant=merchant),
                            payment_method_id, noun="payment method")
        if method.is_detached:
            return method
        method.customer = None
        method.detached_at = timezone.now()
        method.save()
        event_record(merchant=merchant, type="payment_method.detached",
                     obj=payment_method_to_dict(method))
    return method


# -- refunds ---------------------------------------------------------------------------------
def refund_create(
    *, merchant: Merchant, payment_id: str, amount: int | None = None, reason: str = "",
    metadata: dict[str, str] | None = None, idempotency_key: str = "",
    idempotency_fingerprint: str = "", audit: AuditHook | None = None,
) -> Refund:
    """Reserve the amount under the payment's row lock, then ask the provider.

    The sum of pending and succeeded refunds never exceeds the captured amount: checked here
    under `SELECT … FOR UPDATE` and again by a PostgreSQL trigger (migration 0002). A retry
    that finds its refund by `idempotency_key` does not call `audit` (nothing new starts)."""
    if idempotency_key:
        existing = Refund.objects.filter(merchant=merchant, idempotency_key=idempotency_key)
        if (refund := existing.select_related("payment__merchant").first()) is not None:
            return _refund_resume(same_request_or_422(refund, idempotency_fingerprint))
    with transaction.atomic():
        payment = _lock_payment(merchant=merchant, payment_id=payment_id)
        if not payment.allows("refund"):
            raise _state_error(payment, "refunded")
        remaining = refundable_amount(payment)
        if remaining <= 0:
            raise StateError("This payment has already been refunded in full (including "
                             "refunds still pending).", code="charge_already_refunded")
        amount = amount or remaining
        if amount > remaining:
            raise StateError(
                f"Refund amount {amount} is more than the {remaining} {payment.currency} that "
                "remains refundable.", param="amount", code="amount_too_large",
            )
        if audit is not None:
            audit(payment)
        refund = Refund.objects.create(
            merchant=merchant, payment=payment, amount=amount, currency=payment.currency,
            reason=reason, metadata=metadata or {}, idempotency_key=idempotency_key,
            idempotency_fingerprint=idempotency_fingerprint,
        )
        attempt = _open_attempt(payment, AttemptKind.REFUND, amount, refund=refund)
        ledger.post_refund_created(merchant=merchant, refund_id=refund.id, payment_id=payment.id,
                                   currency=refund.currency, amount=amount)
        _refund_event(refund, "refund.created")
    return _refund_send(refund, attempt)


def _refund_send(refund: Refund, attempt: PaymentAttempt) -> Refund:
    result = provider_call(attempt.provider, "refund", RefundRequest(
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
        if not attempt.is_open:
            return refund
        if _mismatch(payment, attempt, result):
            return refund
        _record_attempt(attempt, result)
        if refund.status != RefundStatus.PENDING:
            return refund
        if result.outcome == Outcome.APPROVED:
            _refund_succeed(refund, payment, result.provider_reference)
        elif result.outcome == Outcome.DECLINED:
            refund.mark_failed(result.error_code, result.error_message)
            refund.save()
            ledger.post_refund_failed(merchant=payment.merchant, refund_id=refund.id,
                                      payment_id=payment.id, currency=refund.currency,
                                      amount=refund.amount)
            _refund_event(refund, "refund.failed")
    return refund


def _refund_succeed(refund: Refund, payment: Payment, provider_reference: str, *,
                    post: bool = True) -> None:
    """Under the payment's lock: the refund succeeded; keep amount_refunded and the ledger in
    step and move the payment to `refunded` once refunds reach the captured amount. `post=False`
    when the caller posts the ledger entries itself (in one batch)."""
    refund.mark_succeeded(provider_reference)
    refund.save()
    payment.amount_refunded += refund.amount
    fully = payment.amount_refunded == payment.amount_captured
    if fully and payment.allows("refund"):  # captured or settled: may become refunded
        payment.mark_refunded()
    payment.save()
    if post:
        ledger.post_refund_succeeded(
            merchant=payment.merchant, refund_id=refund.id, payment_id=payment.id,
            provider=payment.provider, currency=refund.currency, amount=refund.amount)
    _report_overlap(payment, key=f"refund:{refund.id}",
                    fact=f"refund {refund.id} succeeded while disputes hold "
                         f"{payment.amount_disputed}")
    _refund_event(refund, "refund.succeeded")
    if fully:
        _payment_event(payment, "payment.refunded")


def refund_record_external(*, payment_id: str, amount: int, provider_reference: str
                           ) -> Refund | None:
    """A refund made at the provider without us (its dashboard, or a webhook for a refund whose
    request we never recorded): record it as created and succeeded, once per reference. More
    than the captured amount not yet refunded is a mismatch: a break, nothing recorded (None)."""
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        existing = Refund.objects.filter(payment=payment,
                                         provider_reference=provider_reference).first()
        if existing is not None:
            return existing
        room = payment.amount_captured - refunds_reserved(payment)
        if amount > room:
            # More than was captured and not already refunded: not a fact our books can hold.
            break_report(BreakSpec(
                type="amount_mismatch", key=f"refund:{payment.provider}:{provider_reference}",
                provider=payment.provider, payment_id=payment.id,
                provider_reference=payment.provider_reference, refund_reference=provider_reference,
                currency=payment.currency, our_amount=room, provider_amount=amount,
                our_data={"captured": payment.amount_captured, "refundable": room},
                provider_data={"refund_reference": provider_reference, "amount": amount}))
            return None
        refund = Refund.objects.create(
            merchant=payment.merchant, payment=payment, amount=amount, currency=payment.currency,
            origin=RefundOrigin.PROVIDER, metadata={"source": "provider"})
        refund.payment = payment
        PaymentAttempt.objects.create(
            payment=payment, refund=refund, kind=AttemptKind.REFUND, provider=payment.provider,
            amount=amount, status=AttemptStatus.APPROVED, provider_reference=provider_reference,
            completed_at=timezone.now())
        _refund_event(refund, "refund.created")
        _refund_succeed(refund, payment, provider_reference, post=False)
        # Both entries in one batch: their accounts locked together, in one order.
        ledger.post_refund_recorded(merchant=payment.merchant, refund_id=refund.id,
                                    payment_id=payment.id, provider=payment.provider,
                                    currency=refund.currency, amount=amount)
    return refund


# -- provider webhooks -----------------------------------------------------------------------
APPLIED, HELD, IGNORED = "applied", "held", "ignored"


def _payment_for_event(provider: str, provider_reference: str, merchant_reference: str
                       ) -> Payment | None:
    """The payment a provider's notice is about: by (provider, provider reference), else by our
    id as its merchant reference, but only when that provider holds an attempt of the payment.
    A notice from one provider never acts on a payment another provider processed."""
    rows = Payment.objects.select_related("merchant")
    if provider_reference:
        found = rows.filter(provider=provider, provider_reference=provider_reference).first()
        if found is not None:
            return found
    if merchant_reference.startswith("pay_"):
        found = rows.filter(pk=merchant_reference).first()
        if found is not None and found.attempts.filter(provider=provider).exists():
            return found
        if found is not None:
            logger.warning("%s notice names %s, which it never processed: ignored", provider,
                           merchant_reference)
    return None


def _open_attempt_of(payment: Payment, provider: str, kind: str) -> PaymentAttempt | None:
    return (payment.attempts.filter(provider=provider, kind=kind,
                                    status__in=OPEN_ATTEMPT_STATUSES)
            .order_by("-created_at").first())


def _earlier_try_named(payment: Payment, attempt: PaymentAttempt | None, provider: str,
                       provider_reference: str) -> PaymentAttempt | None:
    """The answered authorization attempt (an earlier try: a declined one before its delayed
    retry) whose provider reference a notice names, when that is not the open `attempt`: the
    notice is about that charge, never the answer to the retry still waiting for its own."""
    if not provider_reference:
        return None
    tries = payment.attempts.filter(kind=AttemptKind.AUTHORIZE, provider=provider,
                                    provider_reference=provider_reference)
    if attempt is not None:
        tries = tries.exclude(pk=attempt.pk)
    return tries.first()


def _declined_try_named(payment: Payment, provider: str, provider_reference: str) -> bool:
    """Whether `provider_reference` is the charge of an authorization attempt we hold as
    declined."""
    return bool(provider_reference) and payment.attempts.filter(
        kind=AttemptKind.AUTHORIZE, provider=provider, provider_reference=provider_reference,
        status=AttemptStatus.DECLINED).exists()


def _notice_of_a_declined_try(payment: Payment, provider: str, reference: str,
                              amount: int | None, currency: str, *, said: str,
                              approved: bool) -> None:
    """A notice about a try we hold as declined, while its retry waits or is under way. A
    decline (a redelivery) changes nothing. An approval contradicts our record: a person gets
    a break, and a retry still waiting is not sent (it would charge the customer a second
    time); the payment fails with the decline it had."""
    if not approved:
        return
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment.id)
        if payment.next_retry_at is not None:
            declined = (payment.attempts.filter(kind=AttemptKind.AUTHORIZE,
                                                status=AttemptStatus.DECLINED)
                        .order_by("-created_at", "-id").first())
            _retry_dropped(
                payment, (declined.error_code if declined else "") or "card_declined",
                f"{provider} reported the declined try approved after its retry was scheduled; "
                "the retry was not sent. A reconciliation break holds both sides.")
        _approved_after_failure(payment, provider, reference, amount, currency, said=said)


def payment_provider_event_apply(
    *, provider: str, type: str, provider_reference: str, merchant_reference: str = "",
    amount: int | None = None, currency: str = "", status: str = "", error_code: str = "",
    refund_reference: str = "", dispute_reference: str = "", reason: str = "",
    confirmed_refunded: int | None = None, confirmed_disputed: int | None = None,
    give_up_holding: bool = False, evidence_due_by: datetime | None = None,
) -> str:
    """Apply one verified provider webhook about a payment, refund or dispute through the normal
    services. Returns `applied` (including "already applied": duplicates and late events are
    no-ops, so nothing moves backwards), `held` (it must wait for an earlier event, e.g. a refund
    before its capture) or `ignored` (about nothing we know)."""
    payment = _payment_for_event(provider, provider_reference, merchant_reference)
    if payment is None:
        return IGNORED
    if type in ("payment.authorized", "payment.captured", "payment.declined"):
        approved = type != "payment.declined"
        answer = ProviderResult(
            outcome=Outcome.APPROVED if approved else Outcome.DECLINED,
            provider_reference=provider_reference, amount=amount, currency=currency,
            status=ProviderStatus.CAPTURED if type == "payment.captured" else (
                ProviderStatus.AUTHORIZED if approved else ProviderStatus.DECLINED),
            error_code="" if approved else (error_code or "card_declined"))
        if payment.status in AWAITING_AUTHORIZATION:
            attempt = _open_attempt_of(payment, provider, AttemptKind.AUTHORIZE)
            earlier = _earlier_try_named(payment, attempt, provider, provider_reference)
            if earlier is not None or (attempt is None and payment.next_retry_at is not None):
                _notice_of_a_declined_try(payment, provider, provider_reference, amount,
                                          currency, said=type, approved=approved)
            elif attempt is not None:
                payment_authorization_record(attempt_id=attempt.id, result=answer)
        elif approved and _declined_try_named(payment, provider, provider_reference):
            # A try we hold as declined, approved after another one took the money (its
            # retry): the customer may have paid twice. Never this payment's capture.
            _approved_after_failure(payment, provider, provider_reference, amount, currency,
                                    said=type)
        elif type == "payment.captured" and payment.status == PaymentStatus.AUTHORIZED:
            attempt = _open_attempt_of(payment, provider, AttemptKind.CAPTURE)
            if attempt is not None:
                # The notice's amount is the charge's captured total; partial captures before
                # this one are ours already. Its type names every capture, partial or not: it
                # never says the charge ended (the attempt's final_capture does).
                taken = None if amount is None else amount - payment.amount_captured
                payment_capture_record(attempt_id=attempt.id, result=replace(
                    answer, amount=taken, status=ProviderStatus.UNKNOWN))
        elif approved and payment.status == PaymentStatus.FAILED:
            _approved_after_failure(payment, provider, provider_reference, amount, currency,
                                    said=type)
        return APPLIED
    if type == "payment.voided":
        attempt = _open_attempt_of(payment, provider, AttemptKind.VOID)
        if attempt is not None and payment.status == PaymentStatus.AUTHORIZED:
            payment_void_record(attempt_id=attempt.id, result=ProviderResult(
                outcome=Outcome.APPROVED, provider_reference=provider_reference))
        elif attempt is not None and payment.status == PaymentStatus.REQUIRES_ACTION:
            _challenge_void_record(attempt_id=attempt.id, result=ProviderResult(
                outcome=Outcome.APPROVED, provider_reference=provider_reference))
        return APPLIED
    if type in ("dispute.won", "dispute.lost"):
        return _dispute_decision_apply(payment, provider, type, dispute_reference, amount,
                                       currency, give_up_holding)
    if type not in ("refund.succeeded", "dispute.opened"):
        return IGNORED
    if payment.status in (PaymentStatus.FAILED, PaymentStatus.CANCELED):
        # The provider refunds or disputes money we hold as never taken: it has a capture we
        # do not. Nothing moves; a person finds out which side is right.
        break_report(BreakSpec(
            type="status_mismatch", key=f"{type}:{provider}:{payment.id}", provider=provider,
            payment_id=payment.id, provider_reference=provider_reference,
            currency=payment.currency, our_amount=payment.amount_captured, provider_amount=amount,
            our_data={"status": payment.status},
            provider_data={"type": type, "refund_reference": refund_reference,
                           "dispute_reference": dispute_reference}))
        return IGNORED
    if payment.status not in FUNDS_CAPTURED and not give_up_holding:
        return HELD  # the capture has not reached us yet; re-evaluated when the payment moves
    if payment.status not in FUNDS_CAPTURED:
        # Held past the janitor's whole schedule: the payment is not going to move by itself
        # (a break or a person holds it). The fact goes to staff instead of waiting forever.
        break_report(BreakSpec(
            type="status_mismatch",
            key=f"held:{type}:{provider}:{refund_reference or dispute_reference or payment.id}",
            provider=provider, payment_id=payment.id, provider_reference=provider_reference,
            refund_reference=refund_reference, currency=payment.currency,
            our_amount=payment.amount_captured, provider_amount=amount,
            our_data={"status": payment.status},
            provider_data={"type": type, "amount": amount, "refund_reference": refund_reference,
                           "dispute_reference": dispute_reference, "reason": reason}))
        return IGNORED
    if payment.provider != provider:
        # Only the provider that captured the money can refund it or take a chargeback on it.
        logger.warning("%s %s notice about %s, captured by %s: ignored", provider, type,
                       payment.id, payment.provider)
        return IGNORED
    if currency and currency.lower() != payment.currency:
        break_report(BreakSpec(
            type="currency_mismatch",
            key=f"{type}:{provider}:{refund_reference or dispute_reference or payment.id}",
            provider=provider, payment_id=payment.id, provider_reference=provider_reference,
            refund_reference=refund_reference, currency=payment.currency, provider_amount=amount,
            our_data={"currency": payment.currency}, provider_data={"currency": currency}))
        return IGNORED
    if not _covered_by_lookup(payment, type, amount, dispute_reference, confirmed_disputed):
        logger.warning("%s %s notice for %s (%s) not confirmed by the provider's lookup: "
                       "ignored", provider, type, payment.id, amount)
        return IGNORED
    if type == "refund.succeeded":
        return _refund_event_apply(payment, provider, amount, refund_reference,
                                   confirmed_refunded)
    if not dispute_reference:
        # Nothing to de-duplicate a redelivery by: it would dispute the money twice.
        logger.warning("%s dispute notice for %s without a dispute reference: ignored",
                       provider, payment.id)
        return IGNORED
    if not DISPUTE_REFERENCE.match(dispute_reference) or ".." in dispute_reference:
        logger.warning("%s dispute notice for %s with a case id that is not a plain token "
                       "(%r): ignored", provider, payment.id, dispute_reference[:200])
        return IGNORED
    if _names_another_payments_dispute(payment, provider, type, dispute_reference, amount):
        return IGNORED
    try:
        dispute_open(payment_id=payment.id, amount=amount, provider_reference=dispute_reference,
                     reason=reason if reason in DisputeReason.values else DisputeReason.GENERAL,
                     due_by=evidence_due_by)
    except StateError as exc:  # more than captured and not yet disputed: evidence, not money
        break_report(BreakSpec(
            type="amount_mismatch", key=f"dispute:{provider}:{dispute_reference or payment.id}",
            provider=provider, payment_id=payment.id, provider_reference=provider_reference,
            currency=payment.currency, our_amount=payment.amount_captured - payment.amount_disputed,
            provider_amount=amount, our_data={"reason": str(exc)},
            provider_data={"dispute_reference": dispute_reference, "amount": amount}))
    return APPLIED


def _dispute_decision_apply(payment: Payment, provider: str, type: str, dispute_reference: str,
                            amount: int | None, currency: str, give_up_holding: bool) -> str:
    """The provider decided one of its disputes. A decision about a dispute we have not heard
    of yet (its `dispute.opened` is late or reordered) waits for it; past the holding limit it
    goes to people, since a decision on a case we never recorded means a notice was lost."""
    status = DisputeState.WON if type == "dispute.won" else DisputeState.LOST
    if _names_another_payments_dispute(payment, provider, type, dispute_reference, amount):
        return IGNORED
    if dispute_provider_update(provider=provider, dispute_reference=dispute_reference,
                               status=status, amount=amount, currency=currency) is not None:
        return APPLIED
    if not give_up_holding:
        return HELD
    break_report(BreakSpec(
        type="status_mismatch", key=f"held:{type}:{provider}:{dispute_reference}",
        provider=provider, payment_id=payment.id, provider_reference=payment.provider_reference,
        currency=payment.currency, our_amount=payment.amount_disputed, provider_amount=amount,
        our_data={"status": payment.status, "disputes": list(
            payment.disputes.values_list("provider_reference", flat=True))},
        provider_data={"type": type, "dispute_reference": dispute_reference}))
    return IGNORED


def _names_another_payments_dispute(payment: Payment, provider: str, type: str,
                                    dispute_reference: str, amount: int | None) -> bool:
    """A notice about this payment naming a case we hold on another payment contradicts itself:
    nothing moves, and a `provider_conflict` break on the case's payment says so."""
    dispute = (Dispute.objects.select_related("payment")
               .filter(provider=provider, provider_reference=dispute_reference)
               .exclude(payment=payment).first()) if dispute_reference else None
    if dispute is None:
        return False
    _case_on_another_charge(dispute, key=f"{type}:{payment.id}", amount=amount,
                            provider_data={"type": type, "payment": payment.id,
                                           "provider_reference": payment.provider_reference})
    return True


def _case_on_another_charge(dispute: Dispute, *, key: str, amount: int | None,
                            provider_data: dict[str, object]) -> None:
    """The provider places our case on a charge it is not on: a `provider_conflict` break."""
    break_report(BreakSpec(
        type="provider_conflict",
        key=f"dispute:{dispute.provider}:{dispute.provider_reference}:{key}",
        provider=dispute.provider, payment_id=dispute.payment_id,
        provider_reference=dispute.payment.provider_reference, currency=dispute.currency,
        our_amount=dispute.amount, provider_amount=amount,
        our_data={"dispute": dispute.id, "payment": dispute.payment_id, "status": dispute.status},
        provider_data={"dispute_reference": dispute.provider_reference, **provider_data}))


def _covered_by_lookup(payment: Payment, type: str, amount: int | None,
                       dispute_reference: str, disputed: int | None) -> bool:
    """For a provider whose notices are hints, the charge's disputed total from its own lookup
    must cover our disputes plus this one (refunds: `_refund_event_apply`). Signature-trusted
    notices (total None) pass."""
    if type == "dispute.opened" and disputed is not None:
        if payment.disputes.filter(provider_reference=dispute_reference).exists():
            return True
        return payment.amount_disputed + (amount or 0) <= disputed
    return True


def _refund_event_apply(payment: Payment, provider: str, amount: int | None,
                        refund_reference: str, confirmed_refunded: int | None) -> str:
    """A refund the provider reports: the answer to one of ours whose reply was lost (the
    oldest open one of that amount), else one made without us. For a provider whose notices
    are hints, its lookup's refunded total must cover it: our succeeded refunds plus this one,
    and, for a refund made without us, every refund of ours still pending too (any of them may
    be what the provider counted)."""
    if not refund_reference or not amount:
        return IGNORED
    if payment.refunds.filter(provider_reference=refund_reference).exists():
        return APPLIED  # our own synchronous answer already recorded it
    # One of ours that the janitor settled from the charge's lookup, which names no refund:
    # this notice is that refund; it gains its reference instead of counting twice.
    resolved = (payment.refunds.filter(status=RefundStatus.SUCCEEDED, provider_reference="",
                                       amount=amount).order_by("created_at").first())
    if resolved is not None:
        Refund.objects.filter(pk=resolved.pk, provider_reference="").update(
            provider_reference=refund_reference)
        return APPLIED
    attempt = (payment.attempts.filter(kind=AttemptKind.REFUND, amount=amount, provider=provider,
                                       refund__status=RefundStatus.PENDING,
                                       status__in=OPEN_ATTEMPT_STATUSES)
               .order_by("created_at").first())
    if confirmed_refunded is not None:
        totals = {row["status"]: row["total"] for row in payment.refunds.filter(
            status__in=[RefundStatus.PENDING, RefundStatus.SUCCEEDED]).values("status")
            .annotate(total=Sum("amount"))}
        counted = totals.get(RefundStatus.SUCCEEDED, 0) + amount
        if attempt is None:
            counted += totals.get(RefundStatus.PENDING, 0)
        if counted > confirmed_refunded:
            logger.warning("%s refund notice %s of %s for %s not covered by the provider's "
                           "refunded total %s: ignored", provider, refund_reference, amount,
                           payment.id, confirmed_refunded)
            return IGNORED
    if attempt is not None:
        refund_record(attempt_id=attempt.id, result=ProviderResult(
            outcome=Outcome.APPROVED, provider_reference=refund_reference, amount=amount))
    else:
        refund_record_external(payment_id=payment.id, amount=amount,
                               provider_reference=refund_reference)
    return APPLIED


# -- settlement ------------------------------------------------------------------------------
def payment_settle(*, payment_id: str, amount: int, fee: int) -> Payment:
    """A provider settlement line matched this capture: captured → settled, and its funds move
    pending → available less `fee`. Idempotent: a settled payment is returned unchanged."""
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        if payment.status == PaymentStatus.SETTLED:
            return payment
        if not payment.allows("settle"):
            raise _state_error(payment, "settled")
        if payment.status == PaymentStatus.CAPTURED:
            payment.mark_settled()
            payment.save()
        ledger.post_settlement(merchant=payment.merchant, payment_id=payment.id,
                               currency=payment.currency, amount=amount, fee=fee)
        _payment_event(payment, "payment.settled")
    return payment


# -- disputes --------------------------------------------------------------------------------
DISPUTE_RESPONSE_DAYS = 7
# An evidence value that names a file: it must be one of this merchant's evidence files.
FILE_ID = re.compile(r"^file_[A-Za-z0-9]{1,40}$")
MAX_EVIDENCE_FIELDS = 20
# A provider's case id as we keep it and put it in its URLs: one plain token, never a path.
DISPUTE_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_DECIDED = {DisputeState.WON: True, DisputeState.LOST: False}


def _dispute_event(dispute: Dispute, type: str) -> None:
    event_record(merchant=dispute.payment.merchant, type=type, obj=dispute_to_dict(dispute))


def dispute_open(
    *, payment_id: str, amount: int | None = None, reason: str = "general",
    due_by: datetime | None = None, provider_reference: str = "",
) -> Dispute:
    """Open a chargeback (provider webhook, admin, simulator): the amount leaves available.
    `due_by` is the provider's deadline for evidence when it gave one.

    Up to the captured amount not yet disputed, whatever has been refunded: a chargeback on
    refunded money is what the provider did, so it is recorded and a `provider_conflict` break
    asks staff to contest it. Idempotent on (provider, provider_reference)."""
    with transaction.atomic():
        payment = _lock_payment(merchant=None, payment_id=payment_id)
        if provider_reference:
            existing = Dispute.objects.filter(provider=payment.provider,
                                              provider_reference=provider_reference).first()
            if existing is not None:
                return existing
        if not payment.allows("dispute"):
            raise _state_error(payment, "disputed")
        disputable = payment.amount_captured - payment.amount_disputed
        amount = amount or disputable
        if not 0 < amount <= disputable:
            raise StateError(
                f"Dispute amount {amount} is more than the {disputable} {payment.currency} "
                "captured and not yet disputed.", param="amount", code="amount_too_large")
        dispute = Dispute.objects.create(
            merchant=payment.merchant, payment=payment, amount=amount, currency=payment.currency,
            reason=reason, provider=payment.provider, provider_reference=provider_reference,
            due_by=due_by or timezone.now() + timedelta(days=DISPUTE_RESPONSE_DAYS),
        )
        payment.amount_disputed += amount
        payment.save()
        ledger.post_dispute_opened(merchant=payment.merchant, dispute_id=dispute.id,
                                   payment_id=payment.id, currency=dispute.currency,
                                   amount=amount)
        _report_overlap(payment, key=f"dispute:{dispute.id}",
                        fact=f"dispute {dispute.id} of {amount} opened on refunded money")
        _dispute_event(dispute, "dispute.created")
        # A decision about this case that arrived before it (reordered notices) waits for it.
        provider, reference = payment.provider, payment.provider_reference
        transaction.on_commit(lambda: _release_held_events(provider, reference, payment_id))
    return dispute


def _lock_dispute(*, merchant: Merchant | None, dispute_id: str) -> tuple[Dispute, Payment]:
    rows = Dispute.objects.all() if merchant is None else Dispute.objects.filter(merchant=merchant)
    payment_id = rows.filter(pk=dispute_id).values_list("payment_id", flat=True).first()
    if payment_id is None:
        raise NotFound(f"No such dispute: '{dispute_id}'.", param="id")
    payment = _lock_payment(merchant=None, payment_id=payment_id)  # payment first, always
    dispute = Dispute.objects.select_for_update().get(pk=dispute_id)
    dispute.payment = payment
    return dispute, payment


# -- evidence files --------------------------------------------------------------------------
def file_create(*, merchant: Merchant, content: bytes, filename: str, uploaded_by: str,
                purpose: str = FilePurpose.DISPUTE_EVIDENCE) -> EvidenceFile:
    """Keep one evidence file: its type judged by its bytes (PDF, PNG, JPEG; 400 otherwise),
    at most EVIDENCE_MAX_BYTES (413), encrypted at rest under a random name. The bytes are
    written first and removed again if the row is not committed, so nothing is half-kept."""
    if purpose not in FilePurpose.values:
        raise InvalidRequest(f"purpose must be one of {', '.join(FilePurpose.values)}.",
                             param="purpose")
    if len(content) > settings.EVIDENCE_MAX_BYTES:
        raise PayloadTooLarge(f"Evidence files are limited to {settings.EVIDENCE_MAX_BYTES} "
                              "bytes.", param="file", code="file_too_large")
    kind = files.file_type_of(content)
    storage_name = files.store(merchant.pk, content)
    try:
        return EvidenceFile.objects.create(
            merchant=merchant, purpose=purpose, content_type=kind, size=len(content),
            filename=files.clean_filename(filename), sha256=hashlib.sha256(content).hexdigest(),
            storage_name=storage_name, uploaded_by=uploaded_by[:160])
    except BaseException:
        files.discard(storage_name)
        raise


def _evidence_checked(merchant: Merchant, evidence: dict[str, str]) -> dict[str, str]:
    """Evidence values that name files must name this merchant's evidence files: another
    merchant's file, or none, answers like a missing one (400, nothing changed)."""
    named = {key: value for key, value in evidence.items() if FILE_ID.match(value or "")}
    found = set(EvidenceFile.objects.filter(
        merchant=merchant, purpose=FilePurpose.DISPUTE_EVIDENCE,
        pk__in=list(named.values())).values_list("pk", flat=True))
    for key, value in named.items():
        if value not in found:
            raise InvalidRequest(f"No such file: '{value}'. Upload it with POST /v1/files "
                                 "(purpose dispute_evidence) first.",
                                 param=f"evidence[{key}]", code="resource_missing")
    return evidence


def dispute_evidence_update(*, merchant: Merchant, dispute_id: str, evidence: dict[str, str],
                            submit: bool = True) -> Dispute:
    """Stage evidence (text, and files by id) on a dispute that still needs a response; with
    `submit` (the default, as at Stripe) send it to the provider at once."""
    evidence = _evidence_checked(merchant, evidence)
    with transaction.atomic():
        dispute, _ = _lock_dispute(merchant=merchant, dispute_id=dispute_id)
        _require_needs_response(dispute)
        merged = {**dispute.evidence, **evidence}
        if len(merged) > MAX_EVIDENCE_FIELDS:
            raise InvalidRequest(f"A dispute holds at most {MAX_EVIDENCE_FIELDS} evidence "
                                 "fields.", param="evidence")
        dispute.evidence = merged
        dispute.save()
        _dispute_event(dispute, "dispute.updated")
    if submit:
        return dispute_evidence_submit(merchant=merchant, dispute_id=dispute.id)
    return dispute


def _require_needs_response(dispute: Dispute) -> None:
    if dispute.status != DisputeStatus.NEEDS_RESPONSE:
        message = ("its evidence was already submitted; the provider is deciding"
                   if dispute.status == DisputeStatus.UNDER_REVIEW else "it is closed")
        raise StateError(f"This dispute is '{dispute.status}': {message}.",
                         code="dispute_closed" if not dispute.is_open
                         else "dispute_evidence_submitted", param="status")


def _evidence_attempt_open(dispute: Dispute, *, audit: AuditHook | None) -> PaymentAttempt:
    with transaction.atomic():
        dispute, payment = _lock_dispute(merchant=None, dispute_id=dispute.id)
        if dispute.attempts.filter(status__in=[AttemptStatus.REQUESTED,
                                               AttemptStatus.UNKNOWN]).exists():
            raise StateError("This dispute's evidence is already on its way to the provider; "
                             "its answer is awaited.", code="dispute_evidence_in_flight")
        _require_needs_response(dispute)
        if not dispute.evidence:
            raise InvalidRequest("Add evidence before submitting it (text, or files uploaded "
                                 "with purpose dispute_evidence).", param="evidence")
        if not dispute.provider_reference:
            raise StateError("This dispute has no provider case reference, so its evidence "
                             "cannot be sent through the provider; contest it in the "
                             "provider's portal.", code="dispute_not_at_provider")
        if audit is not None:
            audit(payment)
        return PaymentAttempt.objects.create(
            payment=payment, dispute=dispute, kind=AttemptKind.DISPUTE_EVIDENCE,
            provider=dispute.provider, amount=dispute.amount)


def _evidence_request(dispute: Dispute, attempt: PaymentAttempt) -> DisputeEvidenceRequest:
    """The evidence as the port takes it: text fields, and each named file's bytes."""
    named = {key: value for key, value in dispute.evidence.items() if FILE_ID.match(value)}
    rows = {row.pk: row for row in EvidenceFile.objects.filter(
        merchant_id=dispute.merchant_id, pk__in=list(named.values()))}
    return DisputeEvidenceRequest(
        idempotency_key=attempt.provider_idempotency_key,
        dispute_reference=dispute.provider_reference,
        provider_reference=dispute.payment.provider_reference,
        text={key: value for key, value in dispute.evidence.items() if key not in named},
        documents=tuple(EvidenceDocument(field=key, filename=rows[file_id].filename,
                                         content_type=rows[file_id].content_type,
                                         content=files.load(rows[file_id].storage_name))
                        for key, file_id in sorted(named.items()) if file_id in rows))


def dispute_evidence_submit(*, merchant: Merchant | None, dispute_id: str,
                            audit: AuditHook | None = None) -> Dispute:
    """Send the staged evidence to the provider, once: an evidence attempt is committed first
    (its id is the provider idempotency key), the call runs outside any transaction, and the
    answer is recorded after. Accepted: `under_review`. Refused (e.g. past the provider's
    deadline): the dispute stays `needs_response` and the refusal is a 502 with its reason.
    Unknown: the dispute job looks the dispute up until the provider says."""
    rows = Dispute.objects.select_related("payment", "merchant")
    if merchant is not None:
        rows = rows.filter(merchant=merchant)
    dispute = one_or_404(rows, dispute_id, noun="dispute")
    attempt = _evidence_attempt_open(dispute, audit=audit)
    result = provider_call(attempt.provider, "dispute_submit_evidence",
                           _evidence_request(dispute, attempt))
    dispute = dispute_evidence_record(attempt_id=attempt.id, result=result)
    if result.outcome == Outcome.DECLINED:
        raise ProviderError(f"The provider refused the evidence: "
                            f"{result.error_message or result.error_code}",
                            code=result.error_code or "provider_declined")
    return dispute


def dispute_evidence_record(*, attempt_id: str, result: DisputeResult) -> Dispute:
    """Record the provider's answer to an evidence attempt (reply or lookup); a no-op once the
    attempt has its answer. Accepted evidence moves the dispute to `under_review`; an answer
    that already carries the decision applies it too."""
    dispute_id = (PaymentAttempt.objects.filter(pk=attempt_id)
                  .values_list("dispute_id", flat=True).get())
    with transaction.atomic():
        dispute, _ = _lock_dispute(merchant=None, dispute_id=dispute_id)
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
            return dispute
        received = result.outcome == Outcome.APPROVED or result.status in (
            DisputeState.UNDER_REVIEW, DisputeState.WON, DisputeState.LOST)
        outcome = Outcome.APPROVED if received else result.outcome
        attempt_record(attempt, replace(result, outcome=outcome), statuses=_ATTEMPT_STATUS)
        if received and dispute.status == DisputeStatus.NEEDS_RESPONSE:
            _under_review(dispute)
    if result.status in _DECIDED:
        return dispute_provider_update(provider=dispute.provider,
                                       dispute_reference=dispute.provider_reference,
                                       status=result.status, amount=result.amount,
                                       currency=result.currency) or dispute
    return dispute


def _under_review(dispute: Dispute) -> None:
    dispute.mark_under_review()
    dispute.evidence_submitted_at = timezone.now()
    dispute.save()
    _dispute_event(dispute, "dispute.updated")


def dispute_close(*, merchant: Merchant | None, dispute_id: str) -> Dispute:
    """The merchant accepts the loss."""
    return dispute_resolve(merchant=merchant, dispute_id=dispute_id, won=False,
                           decided_by=DisputeDecider.MERCHANT)


def dispute_resolve(*, dispute_id: str, won: bool, merchant: Merchant | None = None,
                    decided_by: str = DisputeDecider.PROVIDER) -> Dispute:
    """The provider decided (or the merchant accepted): won releases the hold; lost charges it
    back and moves the payment to `charged_back`. Exactly once: a closed dispute is refused
    here (409), by the dispute trigger, and by the ledger's one entry per (dispute, kind)."""
    with transaction.atomic():
        dispute, payment = _lock_dispute(merchant=merchant, dispute_id=dispute_id)
        if not dispute.is_open:
            raise StateError(f"This dispute is already '{dispute.status}'.",
                             code="dispute_closed", param="status")
        if (decided_by != DisputeDecider.PROVIDER
                and dispute.attempts.filter(status__in=SENT_TO_PROVIDER).exists()):
            raise StateError("This dispute's evidence went to the provider through its API, so "
                             "only the provider's decision closes it (by notice or lookup).",
                             code="dispute_decided_by_provider", param="status")
        flow_args = {"merchant": payment.merchant, "dispute_id": dispute.id,
                     "payment_id": payment.id, "currency": dispute.currency,
                     "amount": dispute.amount}
        dispute.closed_at = timezone.now()
        dispute.decided_by = decided_by
        if won:
            dispute.mark_won()
            dispute.save()
            payment.amount_disputed -= dispute.amount
            payment.save()
            ledger.post_dispute_won(**flow_args)
        else:
            dispute.mark_lost()
            dispute.save()
            if payment.status != PaymentStatus.CHARGED_BACK:
                payment.mark_charged_back()
            payment.save()
            ledger.post_dispute_lost(provider=payment.provider, **flow_args)
            _payment_event(payment, "payment.charged_back")
        _dispute_event(dispute, "dispute.closed")
    return dispute


# -- what the provider says about a dispute (notice or lookup) --------------------------------
def dispute_provider_update(*, provider: str, dispute_reference: str, status: str,
                            amount: int | None = None, currency: str = "") -> Dispute | None:
    """Apply where the provider says one of its disputes stands, whether a notice or a lookup
    said it: the one home of that rule. Returns the dispute, or None when we hold no dispute of
    that provider under that reference (the caller decides whether to wait for it).

    The amount and currency it confirms must equal ours, else nothing moves and a break holds
    both sides. Won releases the hold and lost charges it back, exactly once; the same decision
    again (a duplicate or late notice, the next lookup) changes nothing; a different decision
    about a closed dispute moves no money and goes to people as a `provider_conflict` break.
    Under review records that the evidence arrived (any open evidence attempt is answered)."""
    dispute = (Dispute.objects.select_related("payment", "merchant")
               .filter(provider=provider, provider_reference=dispute_reference).first())
    if not dispute_reference or dispute is None:
        return None
    wrong_amount = amount is not None and amount != dispute.amount
    wrong_currency = bool(currency) and currency.lower() != dispute.currency
    if wrong_amount or wrong_currency:
        break_report(BreakSpec(
            type="amount_mismatch" if wrong_amount else "currency_mismatch",
            key=f"dispute:{provider}:{dispute_reference}:{status}", provider=provider,
            payment_id=dispute.payment_id, provider_reference=dispute.payment.provider_reference,
            currency=dispute.currency, our_amount=dispute.amount, provider_amount=amount,
            our_data={"dispute": dispute.id, "currency": dispute.currency},
            provider_data={"dispute_reference": dispute_reference, "status": status,
                           "currency": currency}))
        return dispute
    if status == DisputeState.UNDER_REVIEW:
        with transaction.atomic():
            dispute, _ = _lock_dispute(merchant=None, dispute_id=dispute.id)
            for attempt in dispute.attempts.select_for_update().filter(
                    status__in=[AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN]):
                attempt_record(attempt, DisputeResult(outcome=Outcome.APPROVED,
                                                      dispute_reference=dispute_reference),
                               statuses=_ATTEMPT_STATUS)
            if dispute.status == DisputeStatus.NEEDS_RESPONSE:
                _under_review(dispute)
        return dispute
    if status not in _DECIDED:
        return dispute
    won = _DECIDED[DisputeState(status)]
    if dispute.is_open:
        try:
            return dispute_resolve(dispute_id=dispute.id, won=won)
        except StateError:  # closed meanwhile (a concurrent notice or lookup): compare below
            dispute.refresh_from_db()
    if dispute.status != (DisputeStatus.WON if won else DisputeStatus.LOST):
        break_report(BreakSpec(
            type="provider_conflict", key=f"dispute:{provider}:{dispute_reference}:{status}",
            provider=provider, payment_id=dispute.payment_id,
            provider_reference=dispute.payment.provider_reference, currency=dispute.currency,
            our_amount=dispute.amount, provider_amount=amount,
            our_data={"dispute": dispute.id, "status": dispute.status,
                      "decided_by": dispute.decided_by},
            provider_data={"dispute_reference": dispute_reference, "status": status}))
    return dispute


def dispute_refresh(*, dispute_id: str) -> Dispute:
    """Ask the provider where a dispute stands (outside any transaction) and apply the answer
    through `dispute_provider_update`; an evidence attempt without an answer is resolved by
    it too. Used by the dispute job and the back-office's "ask the provider" button."""
    dispute = Dispute.objects.select_related("payment").get(pk=dispute_id)
    found: DisputeResult = provider_call(dispute.provider, "dispute_retrieve",
                                         DisputeRetrieveRequest(
                                             dispute_reference=dispute.provider_reference,
                                             provider_reference=dispute.payment.provider_reference))
    Dispute.objects.filter(pk=dispute.pk).update(provider_checked_at=timezone.now())
    if found.outcome != Outcome.APPROVED or found.status in (DisputeState.NOT_FOUND,
                                                             DisputeState.UNKNOWN):
        return dispute
    if found.dispute_reference and found.dispute_reference != dispute.provider_reference:
        logger.warning("%s answered a lookup of dispute %s with case %s: ignored",
                       dispute.provider, dispute.provider_reference, found.dispute_reference)
        return dispute
    if found.provider_reference and found.provider_reference != dispute.payment.provider_reference:
        _case_on_another_charge(dispute, key=f"lookup:{found.provider_reference}",
                                amount=found.amount,
                                provider_data={"status": found.status,
                                               "provider_reference": found.provider_reference})
        return dispute
    lost_answer = dispute.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).first()
    if found.status == DisputeState.NEEDS_RESPONSE and lost_answer is not None:
        # The evidence call's answer was lost and the provider never got it: send the same
        # evidence again under the same idempotency key (never a second submission).
        result = provider_call(dispute.provider, "dispute_submit_evidence",
                               _evidence_request(dispute, lost_answer))
        return dispute_evidence_record(attempt_id=lost_answer.id, result=result)
    return dispute_provider_update(provider=dispute.provider,
                                   dispute_reference=dispute.provider_reference,
                                   status=found.status, amount=found.amount,
                                   currency=found.currency) or dispute


def disputes_refresh_due(*, now: datetime | None = None, limit: int = 200) -> dict[str, int]:
    """The dispute job's lookups: open disputes the provider knows, not asked about within
    DISPUTE_LOOKUP_MINUTES, oldest answer first. A failed lookup is logged and retried on the
    next run. Returns counts by the dispute's status after the lookup."""
    counts: dict[str, int] = {}
    for dispute_id in disputes_due_for_lookup(now=now or timezone.now(), limit=limit):
        try:
            status = dispute_refresh(dispute_id=dispute_id).status
        except Exception:
            logger.exception("looking up dispute %s at its provider failed; the next run "
                             "tries again", dispute_id)
            status = "error"
        counts[status] = counts.get(status, 0) + 1
    return counts


def dispute_reminders_send(*, now: datetime | None = None) -> list[str]:
    """Once per dispute: an open dispute still waiting for evidence whose provider deadline
    falls within DISPUTE_REMINDER_HOURS gets a `dispute.evidence_due_soon` event (a webhook to
    the merchant) and is marked reminded in the same transaction. Returns the disputes
    reminded."""
    now = now or timezone.now()
    reminded = []
    for dispute_id in disputes_due_soon_unreminded(now=now):
        with transaction.atomic():
            dispute, _ = _lock_dispute(merchant=None, dispute_id=dispute_id)
            if dispute.reminded_at is not None or dispute.status != DisputeStatus.NEEDS_RESPONSE:
                continue
            dispute.reminded_at = now
            dispute.save(update_fields=["reminded_at", "updated_at"])
            _dispute_event(dispute, "dispute.evidence_due_soon")
        reminded.append(dispute_id)
    return reminded
