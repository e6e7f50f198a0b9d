"""The janitor: asks providers what became of payments, refunds, captures and voids, payouts and
deposits left without an answer, and applies definite answers through `payments.services` and
`wallet.services`, so Events, ledger and webhooks follow.

Schedule per object, counted from its unanswered attempt: 5 min, 1 h, then daily for 5 days;
after the last try a `stuck_unresolved` break goes to a human. Never re-sends a charge with a
new provider idempotency key: an attempt that was never sent (`requested`, the provider has no
record of it) is sent now with its own key; an `unknown` one is only ever looked up. A capture,
void or authorization increment whose charge the provider still shows as before (`authorized`,
and for a partial capture the same captured total, for an increment the same amount) never
happened there: it is sent again with the attempt's own key, whatever its status, so a late
original cannot apply it twice.
Claims are leases taken with SKIP LOCKED (services.checks_claim), and no lock or transaction is
held across a provider call.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from payments import selectors as payment_reads
from payments import services as payments
from payments.models import AttemptStatus, Payment, PaymentAttempt, PaymentStatus, RefundStatus
from providers.base import Outcome, ProviderResult, ProviderStatus, RetrieveRequest
from providers.calls import provider_call
from reconciliation import services
from reconciliation.conf import setting
from reconciliation.models import BreakType, CheckObjectType, ReconciliationCheck
from wallet import services as wallet
from wallet.models import Deposit, Payout

logger = logging.getLogger(__name__)

SCHEDULE: tuple[timedelta, ...] = (timedelta(minutes=5), timedelta(hours=1),
                                   *(timedelta(days=day) for day in range(1, 6)))
BATCH_SIZE = 10
DEFAULT_TIME_BUDGET_SECONDS = 240.0  # under the 5-minute beat interval


@dataclass
class JanitorResult:
    examined: int = 0
    fixed: int = 0
    broken: int = 0
    discovered: int = 0
    retries: int = 0  # delayed retries of soft declines opened (payments.services)
    expired: int = 0  # lapsed authorizations voided
    abandoned: int = 0  # authentication challenges left unfinished: payments failed
    answers: dict[str, int] = field(default_factory=dict)  # e.g. {"captured:captured": 3}


@dataclass(frozen=True)
class CheckOutcome:
    """What one check found: a label for the row, whether the object has its answer, and (for
    payouts and deposits) the object as it now stands, for a break."""

    label: str
    answered: bool
    ours: dict[str, Any] | None = None


def first_check_at(stuck_since: datetime, attempt_status: str) -> datetime:
    if attempt_status == AttemptStatus.REQUESTED:
        # Never sent (its task was lost): discovered only after the grace period, asked now.
        return stuck_since
    return stuck_since + SCHEDULE[0]


def next_check_at(*, stuck_since: datetime, now: datetime) -> datetime | None:
    """The next slot of the schedule after `now`, or None when the schedule is exhausted.
    Slots already past (a janitor that was down) are skipped, not run back to back."""
    age = now - stuck_since
    return next((stuck_since + offset for offset in SCHEDULE if offset > age), None)


# -- one check -------------------------------------------------------------------------------
def _before_asking(attempt: PaymentAttempt | None, waiting: bool, grace: timedelta
                   ) -> tuple[CheckOutcome, str] | None:
    """What a check of a payment or refund finds without asking the provider: answered already
    (no attempt, or the object no longer `waiting`), an answer in progress, or a request still
    inside its grace period. None: ask."""
    if attempt is None or not waiting:
        return CheckOutcome("already_answered", answered=True), ""
    if attempt.status not in (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN):
        # Failover opened a newer attempt, or an answer is being recorded: look again later.
        return CheckOutcome("in_progress", answered=False), attempt.id
    if (attempt.status == AttemptStatus.REQUESTED
            and attempt.created_at > timezone.now() - grace):
        return CheckOutcome("in_flight", answered=False), attempt.id
    return None


def _check_payment(payment_id: str, grace: timedelta) -> tuple[CheckOutcome, str]:
    """An authorization without an answer: ask the provider, and send it now (same key) if the
    provider never saw it."""
    attempt = payment_reads.latest_authorize_attempt(payment_id=payment_id)
    found = _before_asking(attempt, attempt is not None and _awaiting(attempt.payment), grace)
    if found is not None:
        return found
    payment, said = payments.payment_authorization_lookup(attempt_id=attempt.id)
    sent = said == ProviderStatus.NOT_FOUND and attempt.status == AttemptStatus.REQUESTED
    if sent:
        # The provider never saw it: its task was lost before the call. Send it now with the
        # attempt's own idempotency key; a concurrent late task re-sends the same key.
        payments.payment_authorization_execute(attempt_id=attempt.id)
    payment.refresh_from_db()
    label = f"sent:{payment.status}" if sent else f"{said}:{payment.status}"
    latest = payment_reads.latest_authorize_attempt(payment_id=payment_id)
    if latest is not None and latest.id != attempt.id:
        # Its answer opened another attempt (failover): this attempt's check is done, and
        # discovery re-arms it on the new attempt's schedule, which starts now. Waiting on this
        # one's schedule would end, on its last slot, in a stuck_unresolved break for an
        # attempt seconds old.
        return CheckOutcome(f"{label}:failover", answered=True), attempt.id
    return CheckOutcome(label, answered=not _awaiting(payment)), attempt.id


def _awaiting(payment: Payment) -> bool:
    """Still waiting for an authorization answer. A payment waiting for the delayed retry of a
    soft decline has its answer: the retry is a new attempt, tracked when it is sent."""
    return (payment.status == PaymentStatus.AUTHORIZATION_REQUESTED
            and payment.next_retry_at is None)


def _refund_answer(refund_id: str, attempt_status: str) -> ProviderResult | None:
    """Ask the provider about the refund's charge. Its lookup reports the charge, not each
    refund, so only a fully refunded charge that our pending refunds exactly complete proves
    this refund happened; anything else is not definite and waits for the next check."""
    refund = payment_reads.refund_snapshot(refund_id=refund_id)
    payment = payment_reads.payment_snapshot(payment_id=refund["payment_id"])
    found = provider_call(payment["provider"], "retrieve", RetrieveRequest(
        provider_reference=payment["provider_reference"], merchant_reference=payment["id"]))
    pending = payment_reads.pending_refunds_total(payment_id=payment["id"])
    if (found.status == ProviderStatus.REFUNDED
            and payment["amount_refunded"] + pending == payment["amount_captured"]):
        return ProviderResult(outcome=Outcome.APPROVED, status=found.status,
                              amount=refund["amount"], exchange=found.exchange,
                              latency_ms=found.latency_ms)
    logger.info("refund %s (%s): provider says %s; not definite", refund_id, attempt_status,
                found.status)
    return None


def _check_refund(refund_id: str, grace: timedelta) -> tuple[CheckOutcome, str]:
    """A refund without an answer: re-send a request that may never have left, else ask the
    provider whether the charge shows it."""
    attempt = payment_reads.latest_refund_attempt(refund_id=refund_id)
    found = _before_asking(attempt, attempt is not None and (
        attempt.refund.status == RefundStatus.PENDING), grace)
    if found is not None:
        return found
    refund = attempt.refund
    if attempt.status == AttemptStatus.REQUESTED and refund.idempotency_key:
        # Never answered, maybe never sent: the refund's own resume path sends the same
        # attempt (same provider key) again, which the provider de-duplicates.
        refund = payments.refund_create(
            merchant=attempt.payment.merchant, payment_id=attempt.payment_id,
            idempotency_key=refund.idempotency_key)
        return CheckOutcome(f"sent:{refund.status}",
                            answered=refund.status != RefundStatus.PENDING), attempt.id
    answer = _refund_answer(refund_id, attempt.status)
    if answer is None:
        return CheckOutcome("not_definite", answered=False), attempt.id
    refund = payments.refund_record(attempt_id=attempt.id, result=answer)
    return CheckOutcome(f"lookup:{refund.status}",
                        answered=refund.status != RefundStatus.PENDING), attempt.id


def _check_operation(attempt_id: str, grace: timedelta) -> tuple[CheckOutcome, str]:
    """A capture or void of an authorized payment: record it if the charge shows it done, send
    it again (same key) if the charge is still only authorized, else wait for the next slot."""
    attempt = payment_reads.operation_attempt(attempt_id=attempt_id)
    open_statuses = (AttemptStatus.REQUESTED, AttemptStatus.UNKNOWN)
    if (attempt is None or attempt.status not in open_statuses
            or attempt.payment.status != PaymentStatus.AUTHORIZED):
        return CheckOutcome("already_answered", answered=True), attempt_id
    if (attempt.status == AttemptStatus.REQUESTED
            and attempt.created_at > timezone.now() - grace):
        return CheckOutcome("in_flight", answered=False), attempt_id
    payment, said = payments.payment_operation_lookup(attempt_id=attempt_id)
    sent = said == ProviderStatus.AUTHORIZED
    if sent:
        payment = payments.payment_operation_execute(attempt_id=attempt_id)
    attempt.refresh_from_db(fields=["status"])
    label = f"sent:{payment.status}" if sent else f"{said}:{payment.status}"
    # A declined re-send is an answer too: the payment stays authorized, free for a new try.
    return CheckOutcome(label, answered=attempt.status not in open_statuses), attempt_id


def _movement_data(row: Payout | Deposit) -> dict[str, Any]:
    return {"id": row.id, "merchant_id": row.merchant_id, "status": row.status,
            "amount": row.amount, "currency": row.currency, "provider": row.provider,
            "provider_reference": row.provider_reference}


def _check_payout(payout_id: str, grace: timedelta) -> tuple[CheckOutcome, str]:
    """The wallet's refresh asks by reference, or re-sends a lost create with its own key."""
    payout = wallet.payout_refresh(payout_id=payout_id)
    return CheckOutcome(f"refresh:{payout.status}", answered=payout.is_final,
                        ours=_movement_data(payout)), ""


def _check_deposit(deposit_id: str, grace: timedelta) -> tuple[CheckOutcome, str]:
    deposit = wallet.deposit_refresh(deposit_id=deposit_id)
    return CheckOutcome(f"refresh:{deposit.status}", answered=deposit.is_final,
                        ours=_movement_data(deposit)), ""


CHECKERS = {CheckObjectType.PAYMENT: _check_payment, CheckObjectType.REFUND: _check_refund,
            CheckObjectType.CAPTURE_OR_VOID: _check_operation,
            CheckObjectType.PAYOUT: _check_payout, CheckObjectType.DEPOSIT: _check_deposit}


def _break_for(check: ReconciliationCheck, outcome: CheckOutcome) -> services.BreakSpec:
    label = outcome.label
    payment_id = refund_id = ""
    if check.object_type == CheckObjectType.PAYMENT:
        ours = payment_reads.payment_snapshot(payment_id=check.object_id) or {}
        payment_id = check.object_id
    elif check.object_type == CheckObjectType.REFUND:
        ours = payment_reads.refund_snapshot(refund_id=check.object_id) or {}
        payment_id, refund_id = ours.get("payment_id", ""), check.object_id
    elif check.object_type == CheckObjectType.CAPTURE_OR_VOID:
        attempt = payment_reads.operation_attempt(attempt_id=check.object_id)
        payment_id = attempt.payment_id if attempt is not None else ""
        ours = {**(payment_reads.payment_snapshot(payment_id=payment_id) or {}),
                "operation": attempt.kind if attempt is not None else ""}
    else:
        ours = outcome.ours or {"id": check.object_id}
    return services.BreakSpec(
        type=BreakType.STUCK_UNRESOLVED, key=f"{check.object_type}:{check.object_id}",
        provider=ours.get("provider") or ours.get("payment__provider") or "",
        payment_id=payment_id, refund_id=refund_id,
        provider_reference=ours.get("provider_reference") or "",
        currency=ours.get("currency", ""), our_amount=ours.get("amount"),
        our_data={**ours, "attempt_id": check.attempt_id, "checks": check.checks + 1,
                  "stuck_since": check.stuck_since},
        provider_data={"last_answer": label},
    )


def _superseded(check: ReconciliationCheck) -> bool:
    """A payment check whose payment has an authorization attempt newer than its schedule."""
    if check.object_type != CheckObjectType.PAYMENT:
        return False
    latest = payment_reads.latest_authorize_attempt(payment_id=check.object_id)
    return latest is not None and latest.created_at > check.stuck_since


def check_process(check: ReconciliationCheck, *, owner: str, grace: timedelta
                  ) -> tuple[str, str]:
    """Ask once about one claimed object and record it. Returns the verdict ('fixed',
    'waiting' or 'broken') and what was found (e.g. 'captured:captured', 'sent:failed')."""
    checker = CHECKERS[check.object_type]
    try:
        outcome, attempt_id = checker(check.object_id, grace)
    except Exception as exc:
        # One bad row must not stop the run; it is counted as a try like a provider outage.
        logger.exception("janitor check of %s %s failed", check.object_type, check.object_id)
        outcome, attempt_id = CheckOutcome(f"error:{type(exc).__name__}", answered=False), ""
    if outcome.answered:
        services.check_record(check_id=check.pk, owner=owner, result=outcome.label,
                              closed=True, next_check_at=None, attempt_id=attempt_id)
        return "fixed", outcome.label
    following = next_check_at(stuck_since=check.stuck_since, now=timezone.now())
    if following is None and _superseded(check):
        # The payment's attempt now without an answer is newer than this schedule (a delayed
        # retry or a failover opened on its last slot, still in flight): nothing is stuck yet.
        # Closed without a break; discovery re-arms the check on that attempt's schedule.
        services.check_record(check_id=check.pk, owner=owner, result=f"{outcome.label}:newer",
                              closed=True, next_check_at=None, attempt_id=attempt_id)
        return "waiting", outcome.label
    spec = _break_for(check, outcome) if following is None else None
    services.check_record(check_id=check.pk, owner=owner, result=outcome.label,
                          closed=following is None, next_check_at=following,
                          attempt_id=attempt_id, break_spec=spec)
    if spec is not None:
        logger.warning("janitor gave up on %s %s after its last check; break opened",
                       check.object_type, check.object_id)
        return "broken", outcome.label
    return "waiting", outcome.label


# -- a run -----------------------------------------------------------------------------------
def janitor_run(*, owner: str = "", batch_size: int = BATCH_SIZE,
                time_budget: float | None = DEFAULT_TIME_BUDGET_SECONDS) -> JanitorResult:
    """Discover newly stuck objects, then process due checks in leased batches until none is
    due or the time budget is spent. Safe to run in several processes at once."""
    owner = owner or f"janitor-{uuid.uuid4()}"
    grace = timedelta(seconds=setting("RECON_JANITOR_GRACE_SECONDS"))
    lease = timedelta(seconds=setting("RECON_JANITOR_LEASE_SECONDS"))
    result = JanitorResult()
    # Off-session soft declines whose retry is due: a new attempt each, sent by the task.
    result.retries = payments.payment_retries_run()
    # Authorizations their provider lets lapse: voided there once, canceled `expired`.
    result.expired = payments.payment_authorizations_expire()
    # 3-D Secure challenges never finished: asked at the provider, then failed `abandoned`.
    result.abandoned = payments.payment_authentications_expire()
    result.discovered = services.checks_discover(
        first_check_at=first_check_at, now=timezone.now(), grace=grace,
        movements_unchanged_for=SCHEDULE[0])
    started = time.monotonic()
    while True:
        claimed = services.checks_claim(owner=owner, now=timezone.now(), lease=lease,
                                        limit=batch_size)
        if not claimed:
            break
        for index, check in enumerate(claimed):
            if time_budget is not None and time.monotonic() - started > time_budget:
                for unprocessed in claimed[index:]:
                    services.check_release(check_id=unprocessed.pk, owner=owner)
                return result
            verdict, label = check_process(check, owner=owner, grace=grace)
            result.examined += 1
            result.fixed += verdict == "fixed"
            result.broken += verdict == "broken"
            result.answers[label] = result.answers.get(label, 0) + 1
    return result
