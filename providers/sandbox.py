"""Sandbox provider driven by test tokens: no network, deterministic, idempotent on its key.

`pm_card_visa` (and any other `pm_card_*` brand) approves, `pm_card_declined` declines with
`card_declined`, `pm_card_insufficient_funds` with `insufficient_funds`, `pm_card_timeout`
charges but answers `unknown` (as if the connection dropped after sending). The sandbox keeps its
own books (`SandboxCharge`), so a status lookup can later tell what really happened and tests can
count charges.

Payouts and deposits (`SandboxMovement`) follow the simulator's rules. A payout to any `ba_…`
token is accepted `pending` and finishes when `complete("payout", reference)` is called: paid,
or failed (`account_closed`) when the destination contains `fail` (`ba_fail`); `ba_rejected` is
refused at once. A deposit is confirmed at once, except a method containing `pending` (waits for
`complete`) or `fail` (refused, `payer_rejected`). A token containing `timeout` is carried out
but its answer is lost (UNKNOWN), as for `pm_card_timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, replace
from datetime import date
from typing import TypeVar

from django.db import IntegrityError, transaction

from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    DepositRequest,
    DisputeEvidenceRequest,
    DisputeResult,
    DisputeRetrieveRequest,
    DisputeState,
    InboundEvent,
    IncrementRequest,
    MalformedLine,
    MovementResult,
    MovementStatus,
    Outcome,
    PayoutRequest,
    ProviderResult,
    ProviderStatus,
    RefundRequest,
    RetrieveRequest,
    SettlementRow,
    VoidRequest,
    WebhookPayloadError,
)
from providers.errors import error
from providers.models import SandboxCharge, SandboxMovement, SandboxOperation

Answer = TypeVar("Answer", ProviderResult, MovementResult)

DECLINES = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_card_do_not_honor": "do_not_honor",
    "pm_card_expired": "expired_card",
}


def _declined(code: str, reference: str = "") -> ProviderResult:
    err = error(code)
    return ProviderResult(
        outcome=Outcome.DECLINED, provider_reference=reference, status=ProviderStatus.DECLINED,
        error_code=err.code, error_message=err.message, retryable=err.retryable,
    )


def _approved(charge: SandboxCharge, amount: int, reference: str = "") -> ProviderResult:
    ref = reference or charge.reference
    return ProviderResult(
        outcome=Outcome.APPROVED, provider_reference=ref, status=ProviderStatus(charge.status),
        amount=amount, currency=charge.currency, amount_captured=charge.captured,
        exchange={"request": {"reference": charge.reference},
                  "response": {"reference": ref, "status": charge.status, "amount": amount}},
    )


def _from_json(data: dict) -> ProviderResult:
    return ProviderResult(**{**data, "outcome": Outcome(data["outcome"]),
                             "status": ProviderStatus(data["status"])})


PAYOUT_REJECTED = "ba_rejected"
FAILURE_REASONS = {"payout": "account_closed", "deposit": "payer_rejected"}
FAILURE_MESSAGES = {
    "account_closed": "The destination bank account is closed.",
    "account_invalid": "The destination bank account was rejected.",
    "payer_rejected": "The payer's bank rejected the deposit.",
}
_MOVEMENT_ANSWERS = {
    "pending": (Outcome.PENDING, MovementStatus.PENDING),
    "paid": (Outcome.APPROVED, MovementStatus.PAID),
    "confirmed": (Outcome.APPROVED, MovementStatus.CONFIRMED),
    "failed": (Outcome.DECLINED, MovementStatus.FAILED),
}


def _movement_answer(movement: SandboxMovement) -> MovementResult:
    outcome, status = _MOVEMENT_ANSWERS[movement.status]
    reason = movement.failure_reason
    return MovementResult(
        outcome=outcome, provider_reference=movement.reference, status=status,
        amount=movement.amount, currency=movement.currency, error_code=reason,
        error_message=FAILURE_MESSAGES.get(reason, ""),
        exchange={"response": {"reference": movement.reference, "status": movement.status,
                               "amount": movement.amount}},
    )


def _movement_from_json(data: dict) -> MovementResult:
    return MovementResult(**{**data, "outcome": Outcome(data["outcome"]),
                             "status": MovementStatus(data["status"])})


class SandboxProvider:
    code = "sandbox"
    notices_need_lookup = False
    # Several partial captures of one authorization, and raising an open authorization.
    multicapture = True

    def _replayed(self, key: str, operation: str, build: Callable[[], tuple[Answer, Answer]],
                  decode: Callable[[dict], Answer]) -> Answer:
        """Run `build` once per idempotency key; later calls replay its answer. `build` returns
        what this caller sees and what really happened, which is what is stored: an answer lost
        on the way (a `timeout` token) is learnt by sending the same key again."""
        started = time.monotonic()
        existing = SandboxOperation.objects.filter(pk=key).first()
        if existing is not None:
            return decode(existing.result)
        try:
            with transaction.atomic():
                seen, true = build()
                SandboxOperation.objects.create(
                    idempotency_key=key, operation=operation,
                    result={**asdict(true), "outcome": true.outcome.value,
                            "status": true.status.value})
        except IntegrityError:  # a concurrent call with the same key won; replay its answer
            return decode(SandboxOperation.objects.get(pk=key).result)
        return replace(seen, latency_ms=int((time.monotonic() - started) * 1000))

    def _once(self, key: str, operation: str, build: Callable[[], ProviderResult]
              ) -> ProviderResult:
        def seen_and_true() -> tuple[ProviderResult, ProviderResult]:
            result = build()
            if result.outcome != Outcome.UNKNOWN:
                return result, result
            # A timeout is what the *caller* sees; the sandbox itself did charge, so it
            # remembers an approval and a retry with the same key learns the truth.
            true = result
            if result.provider_reference:
                true = replace(result, outcome=Outcome.APPROVED, error_code="", error_message="")
            return replace(result, provider_reference="", status=ProviderStatus.UNKNOWN), true

        return self._replayed(key, operation, seen_and_true, _from_json)

    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        def build() -> ProviderResult:
            if request.payment_method in DECLINES:
                return _declined(DECLINES[request.payment_method])
            charge = SandboxCharge.objects.create(
                reference=f"sbx_{request.idempotency_key[-24:]}",
                merchant_reference=request.merchant_reference,
                amount=request.amount, currency=request.currency,
                status=ProviderStatus.CAPTURED if request.capture else ProviderStatus.AUTHORIZED,
                captured=request.amount if request.capture else 0,
            )
            result = _approved(charge, request.amount)
            if request.payment_method == "pm_card_timeout":
                err = error("timeout")
                return replace(result, outcome=Outcome.UNKNOWN, error_code=err.code,
                               error_message=err.message)
            return result

        return self._once(request.idempotency_key, "authorize", build)

    def _change_charge(self, request: CaptureRequest | VoidRequest | RefundRequest
                       | IncrementRequest,
                       operation: str, allowed: Callable[[SandboxCharge], bool],
                       change: Callable[[SandboxCharge], ProviderResult]) -> ProviderResult:
        """Once per key: lock the charge `request` names and `change` it when it is `allowed`
        (else `invalid_request`; `not_found` when there is no such charge)."""
        def build() -> ProviderResult:
            charge = (SandboxCharge.objects.select_for_update()
                      .filter(pk=request.provider_reference).first())
            if charge is None:
                return _declined("not_found", request.provider_reference)
            if not allowed(charge):
                return _declined("invalid_request", charge.reference)
            return change(charge)

        return self._once(request.idempotency_key, operation, build)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        def change(charge: SandboxCharge) -> ProviderResult:
            # A partial capture (not final) keeps the rest authorized for the next one.
            charge.captured += request.amount
            if request.final or charge.captured == charge.amount:
                charge.status = ProviderStatus.CAPTURED
            charge.save(update_fields=["status", "captured"])
            return _approved(charge, request.amount)

        return self._change_charge(request, "capture", lambda charge: (
            charge.status == ProviderStatus.AUTHORIZED
            and charge.captured + request.amount <= charge.amount), change)

    def void(self, request: VoidRequest) -> ProviderResult:
        def change(charge: SandboxCharge) -> ProviderResult:
            # After partial captures a void releases only the rest: the charge is captured.
            charge.status = (ProviderStatus.CAPTURED if charge.captured
                             else ProviderStatus.VOIDED)
            charge.save(update_fields=["status"])
            return _approved(charge, charge.amount)

        return self._change_charge(
            request, "void", lambda charge: charge.status == ProviderStatus.AUTHORIZED, change)

    def increment_authorization(self, request: IncrementRequest) -> ProviderResult:
        def change(charge: SandboxCharge) -> ProviderResult:
            charge.amount = request.amount
            charge.save(update_fields=["amount"])
            return _approved(charge, request.amount)

        return self._change_charge(request, "increment", lambda charge: (
            charge.status == ProviderStatus.AUTHORIZED and request.amount > charge.amount),
            change)

    def refund(self, request: RefundRequest) -> ProviderResult:
        def change(charge: SandboxCharge) -> ProviderResult:
            charge.refunded += request.amount
            if charge.refunded == charge.captured:
                charge.status = ProviderStatus.REFUNDED
            charge.save(update_fields=["refunded", "status"])
            return _approved(charge, request.amount, f"sbxr_{request.idempotency_key[-24:]}")

        return self._change_charge(request, "refund", lambda charge: (
            charge.refunded + request.amount <= charge.captured), change)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        charges = SandboxCharge.objects.all()
        if request.provider_reference:
            charge = charges.filter(pk=request.provider_reference).first()
        else:
            charge = charges.filter(merchant_reference=request.merchant_reference).first()
        if charge is None:
            return ProviderResult(outcome=Outcome.DECLINED, status=ProviderStatus.NOT_FOUND,
                                  error_code="not_found")
        return _approved(charge, charge.captured or charge.amount)

    # -- payouts and deposits --------------------------------------------------------------------
    def _movement_once(self, key: str, operation: str,
                       build: Callable[[], tuple[MovementResult, bool]]) -> MovementResult:
        """`_once` for movements. `build` returns the true answer and whether the caller loses
        it (a `timeout` token)."""
        def seen_and_true() -> tuple[MovementResult, MovementResult]:
            result, lost = build()
            if not lost:
                return result, result
            err = error("timeout")
            return MovementResult(outcome=Outcome.UNKNOWN, status=MovementStatus.UNKNOWN,
                                  error_code=err.code, error_message=err.message), result

        return self._replayed(key, operation, seen_and_true, _movement_from_json)

    def payout_create(self, request: PayoutRequest) -> MovementResult:
        def build() -> tuple[MovementResult, bool]:
            if request.destination == PAYOUT_REJECTED:
                return MovementResult(
                    outcome=Outcome.DECLINED, status=MovementStatus.FAILED,
                    error_code="account_invalid",
                    error_message=FAILURE_MESSAGES["account_invalid"]), False
            movement = SandboxMovement.objects.create(
                reference=f"sbxpo_{request.idempotency_key[-24:]}", kind="payout",
                merchant_reference=request.merchant_reference, amount=request.amount,
                currency=request.currency, target=request.destination, status="pending")
            return _movement_answer(movement), "timeout" in request.destination

        return self._movement_once(request.idempotency_key, "payout", build)

    def deposit_create(self, request: DepositRequest) -> MovementResult:
        def build() -> tuple[MovementResult, bool]:
            status, reason = "confirmed", ""
            if "fail" in request.method:
                status, reason = "failed", FAILURE_REASONS["deposit"]
            elif "pending" in request.method:
                status = "pending"
            movement = SandboxMovement.objects.create(
                reference=f"sbxdep_{request.idempotency_key[-24:]}", kind="deposit",
                merchant_reference=request.merchant_reference, amount=request.amount,
                currency=request.currency, target=request.method, status=status,
                failure_reason=reason)
            return _movement_answer(movement), "timeout" in request.method

        return self._movement_once(request.idempotency_key, "deposit", build)

    def _movement_retrieve(self, kind: str, provider_reference: str) -> MovementResult:
        movement = SandboxMovement.objects.filter(pk=provider_reference, kind=kind).first()
        if movement is None:
            return MovementResult(outcome=Outcome.DECLINED, status=MovementStatus.NOT_FOUND,
                                  error_code="not_found", error_message=error("not_found").message)
        return _movement_answer(movement)

    def payout_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement_retrieve("payout", provider_reference)

    def deposit_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement_retrieve("deposit", provider_reference)

    # -- disputes ----------------------------------------------------------------------------
    # The sandbox keeps no book of disputes (it sends no notices; a dispute reaches us from a
    # person or a test): a case is `needs_response` until evidence arrives for it. Its decision
    # is in the evidence, as in Stripe's test mode: `winning_evidence` anywhere in the text wins
    # the dispute, `losing_evidence` loses it, anything else leaves it under review for good.
    def dispute_submit_evidence(self, request: DisputeEvidenceRequest) -> DisputeResult:
        started = time.monotonic()
        text = " ".join(request.text.values())
        decision = (DisputeState.WON if "winning_evidence" in text else
                    DisputeState.LOST if "losing_evidence" in text else DisputeState.UNDER_REVIEW)
        try:
            with transaction.atomic():
                SandboxOperation.objects.create(
                    idempotency_key=request.idempotency_key, operation="dispute_evidence",
                    result={"dispute_reference": request.dispute_reference,
                            "provider_reference": request.provider_reference,
                            "decision": decision.value,
                            "documents": [document.field for document in request.documents]})
        except IntegrityError:  # the same key again: the first submission stands
            pass
        answer = replace(self.dispute_retrieve(DisputeRetrieveRequest(
            dispute_reference=request.dispute_reference)), status=DisputeState.UNDER_REVIEW)
        return replace(answer, latency_ms=int((time.monotonic() - started) * 1000))

    def dispute_retrieve(self, request: DisputeRetrieveRequest) -> DisputeResult:
        submitted = (SandboxOperation.objects.filter(
            operation="dispute_evidence", result__dispute_reference=request.dispute_reference)
            .order_by("created_at").first())
        if submitted is None:
            return DisputeResult(outcome=Outcome.APPROVED,
                                 dispute_reference=request.dispute_reference,
                                 provider_reference=request.provider_reference,
                                 status=DisputeState.NEEDS_RESPONSE)
        return DisputeResult(outcome=Outcome.APPROVED, dispute_reference=request.dispute_reference,
                             provider_reference=submitted.result["provider_reference"],
                             status=DisputeState(submitted.result["decision"]),
                             exchange={"response": submitted.result})

    # -- the sandbox sends nothing unasked: no webhooks, no settlement files ------------------
    def verify_webhook(self, *, headers: Mapping[str, str], body: bytes,
                       now: float | None = None, tolerance_seconds: int = 300) -> bool:
        return False

    def parse_webhook(self, body: bytes) -> InboundEvent:
        raise WebhookPayloadError("The sandbox sends no webhooks.")

    def settlement_report(self, day: date) -> bytes:
        raise LookupError("The sandbox writes no settlement files.")

    def parse_settlement(self, lines: Iterable[str]) -> Iterator[SettlementRow]:
        raise MalformedLine("The sandbox writes no settlement files.")

    def complete(self, kind: str, reference: str, *, succeed: bool | None = None) -> str:
        """Finish a pending payout or deposit, once (the simulator's control call). By default
        it succeeds unless its destination or method contains `fail`. Returns the status."""
        with transaction.atomic():
            movement = (SandboxMovement.objects.select_for_update()
                        .filter(pk=reference, kind=kind).first())
            if movement is None:
                raise LookupError(f"The sandbox has no {kind} {reference!r}.")
            if movement.status != "pending":
                return movement.status
            if succeed is None:
                succeed = "fail" not in movement.target
            if succeed:
                movement.status = "paid" if kind == "payout" else "confirmed"
            else:
                movement.status, movement.failure_reason = "failed", FAILURE_REASONS[kind]
            movement.save(update_fields=["status", "failure_reason", "updated_at"])
        return movement.status
