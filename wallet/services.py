"""Every write to deposits and payouts. Each service owns its transaction and row locks, posts its
ledger entry and writes its Event in the same transaction, and calls providers only outside any
transaction: the movement and its attempt are committed first, the call runs, and the answer is
recorded in a new transaction (two-phase, so a crash at any point leaves a row to resolve).

Answers arrive three ways and may race: the create call's own reply, a provider webhook
(`movement_provider_event_apply`), and the janitor's lookup (`payout_refresh`,
`deposit_refresh`). Each locks the movement row and only ever moves it forward, so whichever
comes first wins and the others are no-ops. Payouts and deposits share that machinery; a
`_Spec` says what differs (model, provider operations, how an answer moves the row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.breaks import BreakSpec, break_report
from core.errors import ProviderError, violated_constraint
from core.idempotency import same_request_or_422
from core.models import Merchant
from core.selectors import one_or_404
from core.transactions import create_or_existing
from ledger import flows as ledger
from providers.base import (
    DepositRequest,
    InboundEvent,
    MovementResult,
    MovementStatus,
    Outcome,
    PayoutRequest,
)
from providers.calls import attempt_record, provider_call, supports
from providers.routing import route
from wallet.models import (
    OPEN_ATTEMPT_STATUSES,
    AttemptStatus,
    Deposit,
    DepositStatus,
    Movement,
    MovementAttempt,
    MovementKind,
    Payout,
    PayoutStatus,
)
from wallet.payloads import deposit_to_dict, payout_to_dict
from webhooks.services import event_record

logger = logging.getLogger(__name__)
APPLIED, IGNORED = "applied", "ignored"

# Providers keep idempotency keys for about a day. Past that, sending an unanswered attempt again
# could create a second payout, so the janitor stops and leaves it to an operator.
PROVIDER_KEY_RETENTION = timedelta(hours=24)

_ATTEMPT_STATUS = {
    Outcome.APPROVED: AttemptStatus.ACCEPTED,
    Outcome.PENDING: AttemptStatus.ACCEPTED,
    Outcome.DECLINED: AttemptStatus.DECLINED,
    Outcome.UNKNOWN: AttemptStatus.UNKNOWN,
}


# -- what differs between payouts and deposits ----------------------------------------------
@dataclass(frozen=True)
class _Spec:
    kind: str  # MovementKind, also the attempt's foreign key and the merchant-reference prefix
    model: type[Movement]
    id_prefix: str
    create: str  # provider operations
    retrieve: str
    # Statuses a provider may report that we act on; anything else changes nothing.
    acted_on: tuple[MovementStatus, ...]
    request: Callable[[Any, MovementAttempt], Any]
    # Moves a locked row to what the provider says (never backwards), in the caller's
    # transaction, with its ledger entry and events.
    advance: Callable[..., None]
    event: Callable[[Any, str], None]  # records an event about the row (`<kind>.created`, …)


def _payout_request(payout: Payout, attempt: MovementAttempt) -> PayoutRequest:
    return PayoutRequest(idempotency_key=attempt.provider_idempotency_key, amount=attempt.amount,
                         currency=payout.currency, destination=payout.destination,
                         merchant_reference=payout.id)


def _deposit_request(deposit: Deposit, attempt: MovementAttempt) -> DepositRequest:
    return DepositRequest(idempotency_key=attempt.provider_idempotency_key,
                          amount=attempt.amount, currency=deposit.currency,
                          method=deposit.method, merchant_reference=deposit.id)


def _payout_event(payout: Payout, type: str) -> None:
    event_record(merchant=payout.merchant, type=type, obj=payout_to_dict(payout))


def _deposit_event(deposit: Deposit, type: str) -> None:
    event_record(merchant=deposit.merchant, type=type, obj=deposit_to_dict(deposit))


def _payout_advance(payout: Payout, *, status: MovementStatus, error_code: str = "",
                    error_message: str = "") -> None:
    """A payout that the provider reports paid before we saw it accepted passes through
    `in_transit` (both events) with one ledger entry straight from reserved (see ledger.flows),
    so no second entry has to lock accounts after the first took the ledger's chain lock."""
    if payout.is_final:
        if status in (MovementStatus.PAID, MovementStatus.FAILED) and status != payout.status:
            logger.warning("payout %s is %s; provider now says %s: ignored (never backwards)",
                           payout.id, payout.status, status)
        return
    flow = {"merchant": payout.merchant, "payout_id": payout.id, "currency": payout.currency,
            "amount": payout.amount}
    if status == MovementStatus.FAILED:
        payout.mark_failed(error_code or "payout_failed", error_message or "The payout failed.")
        payout.completed_at = timezone.now()
        payout.save()
        ledger.post_payout_failed(**flow)
        _payout_event(payout, "payout.failed")
        return
    if (payout.status == PayoutStatus.PENDING
            and status in (MovementStatus.PENDING, MovementStatus.PAID)):
        payout.mark_in_transit()
        payout.save()
        if status == MovementStatus.PENDING:
            ledger.post_payout_in_transit(**flow)
        _payout_event(payout, "payout.in_transit")
    if payout.status == PayoutStatus.IN_TRANSIT and status == MovementStatus.PAID:
        payout.mark_paid()
        payout.completed_at = timezone.now()
        payout.save()
        ledger.post_payout_paid(provider=payout.provider, **flow)
        _payout_event(payout, "payout.paid")


def _deposit_advance(deposit: Deposit, *, status: MovementStatus, error_code: str = "",
                     error_message: str = "") -> None:
    if deposit.is_final:
        if status in (MovementStatus.CONFIRMED, MovementStatus.FAILED) and (
                (status == MovementStatus.CONFIRMED)
                != (deposit.status == DepositStatus.SUCCEEDED)):
            logger.warning("deposit %s is %s; provider now says %s: ignored (never backwards)",
                           deposit.id, deposit.status, status)
        return
    if status == MovementStatus.CONFIRMED:
        deposit.mark_succeeded()
        deposit.completed_at = timezone.now()
        deposit.save()
        ledger.post_deposit_confirmed(merchant=deposit.merchant, deposit_id=deposit.id,
                                      currency=deposit.currency, amount=deposit.amount)
        _deposit_event(deposit, "deposit.succeeded")
    elif status == MovementStatus.FAILED:
        deposit.mark_failed(error_code or "deposit_failed", error_message or "The deposit failed.")
        deposit.completed_at = timezone.now()
        deposit.save()
        _deposit_event(deposit, "deposit.failed")


PAYOUT = _Spec(kind=MovementKind.PAYOUT, model=Payout, id_prefix="po_",
               create="payout_create", retrieve="payout_retrieve",
               acted_on=(MovementStatus.PENDING, MovementStatus.PAID, MovementStatus.FAILED),
               request=_payout_request,
               advance=_payout_advance, event=_payout_event)
DEPOSIT = _Spec(kind=MovementKind.DEPOSIT, model=Deposit, id_prefix="dep_",
                create="deposit_create", retrieve="deposit_retrieve",
                acted_on=(MovementStatus.PENDING, MovementStatus.CONFIRMED,
                          MovementStatus.FAILED),
                request=_deposit_request,
                advance=_deposit_advance, event=_deposit_event)


# -- provider calls --------------------------------------------------------------------------
def _providers_for(*, merchant: Merchant, currency: str, amount: int, operation: str,
                   tried: Collection[str] = ()) -> list[str]:
    """Routed providers of the merchant's mode that implement `operation`, best first, leaving
    out `tried`. Routing rules without a card-brand condition apply to movements too."""
    codes = route(merchant_id=merchant.pk, currency=currency, amount=amount, payment_method="",
                  livemode=merchant.is_live)
    return [code for code in codes if code not in tried and supports(code, operation)]


def _first_provider(spec: _Spec, *, merchant: Merchant, currency: str, amount: int) -> str:
    candidates = _providers_for(merchant=merchant, currency=currency, amount=amount,
                                operation=spec.create)
    if not candidates:
        mode = "live " if merchant.is_live else ""
        raise ProviderError(f"No {mode}{spec.kind} provider is available right now (none is "
                            "routed for it, or every routed one's circuit breaker is open); "
                            "retry later.",
                            code="provider_unavailable")
    return candidates[0]


def _record_attempt(attempt: MovementAttempt, result: MovementResult) -> None:
    attempt_record(attempt, result, statuses=_ATTEMPT_STATUS)


def _is_news(attempt: MovementAttempt, result: MovementResult, *, resend: bool) -> bool:
    """Whether an answer may change an attempt that is still open."""
    if not attempt.is_open:
        return False
    if result.outcome == Outcome.UNKNOWN and attempt.status == AttemptStatus.UNKNOWN:
        return False
    # "Not processed" (503, breaker open) about a *re*-send says nothing about the first send,
    # which may have gone through: keep waiting rather than fail or fail over.
    return not (resend and result.outcome == Outcome.DECLINED and result.retryable)


def _as_status(value: str | MovementStatus) -> MovementStatus:
    try:
        return MovementStatus(value)
    except ValueError:
        return MovementStatus.UNKNOWN


# -- the shared two-phase machinery ------------------------------------------------------------
def _lock(spec: _Spec, pk: str) -> Movement:
    return one_or_404(spec.model.objects.select_for_update(of=("self",))
                      .select_related("merchant"), pk, noun=spec.kind)


def _set_reference(row: Movement, provider_reference: str) -> None:
    if provider_reference and not row.provider_reference:
        row.provider_reference = provider_reference
        row.save(update_fields=["provider_reference", "updated_at"])


def _open_attempt(spec: _Spec, row: Movement) -> MovementAttempt:
    return MovementAttempt.objects.create(kind=spec.kind, provider=row.provider,
                                          amount=row.amount, **{spec.kind: row})


def _send(spec: _Spec, attempt: MovementAttempt, row: Movement) -> Movement:
    """Send a never-answered attempt; on a retryable refusal (nothing happened at the provider,
    or its breaker is open) fail over to the next routed provider, else record the answer."""
    while True:
        result = provider_call(attempt.provider, spec.create, spec.request(row, attempt),
                               gate=True)
        row, following = _record(spec, attempt_id=attempt.id, result=result, resend=False)
        if following is None:
            return row
        attempt = following


def _resend(spec: _Spec, attempt: MovementAttempt, row: Movement, *, gate: bool = False
            ) -> Movement:
    """Send an attempt that may already have reached the provider again, with the same key:
    the provider answers with its first outcome and never acts twice. With `gate`, an open
    breaker sends nothing, and its "not sent" changes nothing (see `_is_news`)."""
    result = provider_call(attempt.provider, spec.create, spec.request(row, attempt), gate=gate)
    row, _ = _record(spec, attempt_id=attempt.id, result=result, resend=True)
    return row


def _resume(spec: _Spec, row: Movement) -> Movement:
    """A retried request found its movement: send a never-answered attempt again (same key)."""
    attempt = row.attempts.filter(status=AttemptStatus.REQUESTED).first()
    if not row.is_final and attempt is not None:
        return _resend(spec, attempt, row)
    return row


def _disagrees(spec: _Spec, row: Movement, *, provider: str, status: MovementStatus,
               amount: int | None, currency: str, reference: str) -> bool:
    """The provider accepted, confirmed or paid another amount or currency than ours: nothing
    is credited beyond what it confirmed, so nothing moves; a break holds both sides."""
    wrong_amount = amount is not None and amount != row.amount
    wrong_currency = bool(currency) and currency.lower() != row.currency
    if status == MovementStatus.FAILED or not (wrong_amount or wrong_currency):
        return False
    break_report(BreakSpec(
        type="currency_mismatch" if wrong_currency else "amount_mismatch",
        key=f"{spec.kind}:{row.id}", provider=provider, provider_reference=reference,
        currency=row.currency, our_amount=row.amount, provider_amount=amount,
        our_data={spec.kind: row.id, "status": row.status, "currency": row.currency},
        provider_data={"status": status.value, "amount": amount, "currency": currency}))
    return True


def _held_elsewhere(spec: _Spec, exc: IntegrityError) -> bool:
    return violated_constraint(exc) == f"{spec.kind}_provider_reference_unique"


def _report_collision(spec: _Spec, row: Movement, *, provider: str, reference: str,
                      details: dict[str, Any]) -> None:
    """The provider named a reference another of our movements holds: kept as evidence in a
    `reference_collision` break; this movement stays as it was for a person to settle."""
    holder = (spec.model.objects.filter(provider=provider, provider_reference=reference)
              .exclude(pk=row.pk).values_list("pk", flat=True).first())
    break_report(BreakSpec(
        type="reference_collision", key=f"{provider}:{reference}:{row.id}", provider=provider,
        provider_reference=reference, currency=row.currency, our_amount=row.amount,
        provider_amount=details.get("amount"),
        our_data={spec.kind: row.id, "reference_already_held_by": holder},
        provider_data=details))


def _record(spec: _Spec, *, attempt_id: str, result: MovementResult, resend: bool
            ) -> tuple[Movement, MovementAttempt | None]:
    """Apply a create answer. Returns the row and, after a failover, the next attempt. A
    reference another movement holds becomes a break, never an error on every retry."""
    try:
        return _record_answer(spec, attempt_id=attempt_id, result=result, resend=resend)
    except IntegrityError as exc:
        if not _held_elsewhere(spec, exc):
            raise
    row_id = MovementAttempt.objects.values_list(f"{spec.kind}_id", flat=True).get(pk=attempt_id)
    with transaction.atomic():
        row = _lock(spec, row_id)
        attempt = MovementAttempt.objects.select_for_update().get(pk=attempt_id)
        if attempt.is_open:
            _report_collision(spec, row, provider=attempt.provider,
                              reference=result.provider_reference,
                              details={"status": result.status.value, "amount": result.amount})
            _record_attempt(attempt, MovementResult(
                outcome=Outcome.UNKNOWN, provider_reference=result.provider_reference,
                error_code="provider_reference_collision", exchange=result.exchange,
                error_message=f"The provider answered with reference "
                              f"{result.provider_reference}, which another {spec.kind} holds; "
                              "a reconciliation break holds both."))
    return row, None


def _record_answer(spec: _Spec, *, attempt_id: str, result: MovementResult, resend: bool
                   ) -> tuple[Movement, MovementAttempt | None]:
    row_id = MovementAttempt.objects.values_list(f"{spec.kind}_id", flat=True).get(pk=attempt_id)
    with transaction.atomic():
        row = _lock(spec, row_id)
        attempt = MovementAttempt.objects.select_for_update().get(pk=attempt_id)
        if not _is_news(attempt, result, resend=resend):
            return row, None
        if result.outcome != Outcome.DECLINED and _disagrees(
                spec, row, provider=attempt.provider, status=_as_status(result.status),
                amount=result.amount, currency=result.currency,
                reference=result.provider_reference):
            _record_attempt(attempt, MovementResult(
                outcome=Outcome.UNKNOWN, provider_reference=result.provider_reference,
                error_code="provider_amount_mismatch", exchange=result.exchange,
                error_message=f"The provider answered {result.amount} {result.currency} for "
                              f"{row.amount} {row.currency}; a reconciliation break holds both."))
            return row, None
        _record_attempt(attempt, result)
        if attempt.status == AttemptStatus.UNKNOWN:
            return row, None  # stays pending (a payout's funds stay reserved): the janitor asks
        if attempt.status == AttemptStatus.DECLINED:
            if result.retryable and not resend and not row.is_final:
                following = _providers_for(
                    merchant=row.merchant, currency=row.currency, amount=row.amount,
                    operation=spec.create, tried=set(row.attempts.values_list("provider",
                                                                              flat=True)))
                if following:
                    logger.warning("failing %s %s over from %s to %s after %s", spec.kind,
                                   row.id, attempt.provider, following[0], result.error_code)
                    row.provider = following[0]
                    row.save(update_fields=["provider", "updated_at"])
                    return row, _open_attempt(spec, row)
            _set_reference(row, result.provider_reference)
            spec.advance(row, status=MovementStatus.FAILED, error_code=result.error_code,
                         error_message=result.error_message)
        else:
            # Accepted. An odd status counts as pending, never as money having moved.
            _set_reference(row, result.provider_reference)
            is_known = result.status in spec.acted_on
            spec.advance(row, status=result.status if is_known else MovementStatus.PENDING)
    return row, None


def _locate(spec: _Spec, provider: str, provider_reference: str, merchant_reference: str
            ) -> str | None:
    rows = spec.model.objects.filter(provider=provider)
    if provider_reference:
        found = rows.filter(provider_reference=provider_reference).values_list("pk", flat=True)
        if (row_id := found.first()) is not None:
            return row_id
    if merchant_reference.startswith(spec.id_prefix):
        # Our id is the provider's merchant reference: this finds a movement whose create reply
        # (and with it the provider's reference) was lost.
        return rows.filter(pk=merchant_reference).values_list("pk", flat=True).first()
    return None


def _apply_status(spec: _Spec, *, provider: str, provider_reference: str,
                  status: str | MovementStatus, merchant_reference: str, error_code: str,
                  error_message: str, amount: int | None, currency: str) -> Movement | None:
    """What a provider says about a movement (webhook or lookup), applied forward only. A
    reference another movement holds becomes a break and changes nothing."""
    try:
        return _apply_status_now(
            spec, provider=provider, provider_reference=provider_reference, status=status,
            merchant_reference=merchant_reference, error_code=error_code,
            error_message=error_message, amount=amount, currency=currency)
    except IntegrityError as exc:
        if not _held_elsewhere(spec, exc):
            raise
    row_id = _locate(spec, provider, "", merchant_reference)
    if row_id is None:
        return None
    with transaction.atomic():
        row = _lock(spec, row_id)
        _report_collision(spec, row, provider=provider, reference=provider_reference,
                          details={"status": str(status), "amount": amount})
    return row


def _apply_status_now(spec: _Spec, *, provider: str, provider_reference: str,
                      status: str | MovementStatus, merchant_reference: str, error_code: str,
                      error_message: str, amount: int | None, currency: str
                      ) -> Movement | None:
    row_id = _locate(spec, provider, provider_reference, merchant_reference)
    if row_id is None:
        logger.warning("%s %s status for unknown reference %r / %r ignored", provider,
                       spec.kind, provider_reference, merchant_reference)
        return None
    status = _as_status(status)
    with transaction.atomic():
        row = _lock(spec, row_id)
        if provider_reference and row.provider_reference not in ("", provider_reference):
            logger.warning("%s %s has reference %s, not %s: status ignored", spec.kind, row.id,
                           row.provider_reference, provider_reference)
            return None
        if status not in spec.acted_on:
            return row
        if not row.is_final and _disagrees(spec, row, provider=provider, status=status,
                                           amount=amount, currency=currency,
                                           reference=provider_reference):
            return row
        attempt = row.attempts.select_for_update().filter(
            provider=provider, status__in=OPEN_ATTEMPT_STATUSES).first()
        if attempt is not None:  # the answer to an attempt whose own reply we never got
            failed = status == MovementStatus.FAILED
            _record_attempt(attempt, MovementResult(
                outcome=Outcome.DECLINED if failed else Outcome.APPROVED, status=status,
                provider_reference=provider_reference,
                error_code=(error_code or f"{spec.kind}_failed") if failed else "",
                error_message=error_message if failed else "",
                exchange={"resolved_by": "provider status", "status": status.value}))
        _set_reference(row, provider_reference)
        spec.advance(row, status=status, error_code=error_code, error_message=error_message)
    return row


def _refresh(spec: _Spec, row_id: str) -> Movement:
    row = one_or_404(spec.model.objects.select_related("merchant"), row_id, noun=spec.kind)
    if row.is_final:
        return row
    if row.provider_reference:
        found = provider_call(row.provider, spec.retrieve, row.provider_reference)
        return _apply_status(spec, provider=row.provider,
                             provider_reference=row.provider_reference, status=found.status,
                             merchant_reference="", error_code=found.error_code,
                             error_message=found.error_message, amount=found.amount,
                             currency=found.currency) or row
    attempt = row.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).first()
    if attempt is None:
        return row
    if timezone.now() - attempt.created_at > PROVIDER_KEY_RETENTION:
        logger.error("%s %s: attempt %s is past the provider's key retention; not sent again, "
                     "resolve it by hand", spec.kind, row.id, attempt.id)
        return row
    return _resend(spec, attempt, row, gate=True)


def _create(spec: _Spec, *, merchant: Merchant, currency: str, amount: int, description: str,
            metadata: dict[str, str] | None, idempotency_key: str, idempotency_fingerprint: str,
            own: dict[str, str], reserve: Callable[[Movement], object] | None = None
            ) -> Movement:
    """Insert a movement (with its `own` fields) and its attempt and `<kind>.created` event,
    then `reserve` (last: it takes the balance locks and the ledger's chain lock until COMMIT),
    in one transaction, and send it. A retry whose idempotency key already made one (found
    first, or caught by the unique (merchant, idempotency_key) after a request that died after
    committing) carries on with that one: a never-answered attempt is sent again with the same
    key."""
    def existing() -> tuple[Movement, None] | None:
        found = idempotency_key and spec.model.objects.select_related("merchant").filter(
            merchant=merchant, idempotency_key=idempotency_key).first()
        return (same_request_or_422(found, idempotency_fingerprint), None) if found else None

    made: tuple[Movement, MovementAttempt | None] | None = existing()
    if made is None:
        provider = _first_provider(spec, merchant=merchant, currency=currency, amount=amount)

        def create() -> tuple[Movement, MovementAttempt]:
            with transaction.atomic():
                row = spec.model.objects.create(
                    merchant=merchant, amount=amount, currency=currency, **own,
                    description=description, metadata=metadata or {}, provider=provider,
                    idempotency_key=idempotency_key,
                    idempotency_fingerprint=idempotency_fingerprint)
                attempt = _open_attempt(spec, row)
                spec.event(row, f"{spec.kind}.created")
                if reserve is not None:
                    reserve(row)
                return row, attempt

        made = create_or_existing(create, existing)
    row, attempt = made
    return _resume(spec, row) if attempt is None else _send(spec, attempt, row)


# -- payouts --------------------------------------------------------------------------------
def payout_create(
    *, merchant: Merchant, amount: int, currency: str, destination: str, description: str = "",
    metadata: dict[str, str] | None = None, idempotency_key: str = "",
    idempotency_fingerprint: str = "",
) -> Payout:
    """Reserve the funds and create the payout in one transaction, then send it.

    The reserve (available → reserved) runs under the merchant's balance row locks and refuses
    to overdraw: InsufficientFunds (409 `insufficient_funds`) rolls everything back, so a
    refused payout leaves no row, no event and no entry."""
    def reserve(payout: Movement) -> None:
        ledger.post_payout_created(merchant=merchant, payout_id=payout.id, currency=currency,
                                   amount=amount)

    return _create(PAYOUT, merchant=merchant, currency=currency, amount=amount,
                   description=description, metadata=metadata, idempotency_key=idempotency_key,
                   idempotency_fingerprint=idempotency_fingerprint,
                   own={"destination": destination}, reserve=reserve)


def payout_refresh(*, payout_id: str) -> Payout:
    """The janitor's lookup for a payout still pending or in transit: ask the provider by its
    reference, or, when the create reply was lost, send the same attempt again with the same
    provider idempotency key (the provider answers with its first outcome; never a new key)."""
    return _refresh(PAYOUT, payout_id)


# -- deposits --------------------------------------------------------------------------------
def deposit_create(
    *, merchant: Merchant, amount: int, currency: str, method: str, description: str = "",
    metadata: dict[str, str] | None = None, idempotency_key: str = "",
    idempotency_fingerprint: str = "",
) -> Deposit:
    """Create a pending deposit and ask the provider to collect it. Funds reach `available` only
    when the provider confirms (its reply, a webhook or the janitor's lookup)."""
    return _create(DEPOSIT, merchant=merchant, currency=currency, amount=amount,
                   description=description, metadata=metadata, own={"method": method},
                   idempotency_key=idempotency_key,
                   idempotency_fingerprint=idempotency_fingerprint)


def deposit_refresh(*, deposit_id: str) -> Deposit:
    """The janitor's lookup for a pending deposit (see `payout_refresh`)."""
    return _refresh(DEPOSIT, deposit_id)


# -- provider webhooks -----------------------------------------------------------------------
_EVENT_STATUS = {
    "payout.paid": MovementStatus.PAID,
    "payout.failed": MovementStatus.FAILED,
    "deposit.confirmed": MovementStatus.CONFIRMED,
    "deposit.failed": MovementStatus.FAILED,
}


def movement_provider_event_apply(*, event: InboundEvent) -> str:
    """Apply one verified provider webhook about a payout or deposit (the inbound processor's
    entry point). Returns `applied` (also for duplicates and late events, which change nothing)
    or `ignored` (about nothing we know). Never `held`: the movement row always exists before
    the provider hears of it, and the merchant reference finds it even without its reference."""
    status = _EVENT_STATUS.get(event.type)
    if status is None:
        return IGNORED
    spec = PAYOUT if event.type.startswith("payout.") else DEPOSIT
    found = _apply_status(spec, provider=event.provider,
                          provider_reference=event.provider_reference,
                          merchant_reference=event.merchant_reference, status=status,
                          error_code=event.error_code, error_message="", amount=event.amount,
                          currency=event.currency)
    return APPLIED if found is not None else IGNORED
