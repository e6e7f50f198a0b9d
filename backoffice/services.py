"""Every write the back-office makes: each checks the staff member's permission, calls the
owning app's service (the one the API calls) and writes its audit rows; what needs a second
person becomes an approval request. How audit rows meet transactions: docs/ARCHITECTURE.md,
"The back-office"."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from backoffice.audit import Actor, audit_record, snapshot
from backoffice.models import (
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    LedgerVerifyRun,
    VerifyStatus,
)
from core.errors import ClearhouseError, InvalidRequest, NotFound, StateError
from core.ids import new_id
from core.models import Merchant
from core.money import CURRENCIES, MAX_AMOUNT, format_amount
from core.selectors import one_or_404
from core.transactions import task_send
from ledger.models import AccountKind, EntryKind
from ledger.services import account_for, entry_post
from ledger.verify import ledger_verify
from payments import services as payments
from payments.models import (
    EVIDENCE_FILE_FIELDS,
    Dispute,
    DisputeDecider,
    DisputeReason,
    EvidenceFile,
    Payment,
    Refund,
    RefundReason,
    RefundStatus,
)
from payments.selectors import RESERVING_REFUND_STATUSES, SENT_TO_PROVIDER, refundable_amount
from providers.declines import decline_rule_set
from providers.models import DeclineMeaning
from providers.registry import registered_codes
from reconciliation import services as reconciliation
from reconciliation.models import BreakStatus, ReconciliationBreak
from webhooks import inbound
from webhooks import services as webhooks
from webhooks.models import Event, InboxStatus, ProviderEvent, WebhookDelivery

logger = logging.getLogger(__name__)
T = TypeVar("T")

PAYMENT_FIELDS = ("id", "merchant", "amount", "currency", "status", "amount_authorized",
                  "amount_captured", "amount_refunded", "amount_disputed", "provider",
                  "provider_reference")
REFUND_FIELDS = ("id", "payment", "amount", "currency", "status", "reason", "failure_code")
DISPUTE_FIELDS = ("id", "payment", "amount", "currency", "status", "reason", "due_by",
                  "provider_reference", "evidence_submitted_at", "closed_at", "decided_by")
BREAK_FIELDS = ("id", "type", "key", "status", "provider", "payment_id", "resolution_note",
                "resolved_at")
INBOX_FIELDS = ("id", "provider", "provider_event_id", "type", "status", "attempts",
                "last_error", "processed_at")
FORM_KEY = re.compile(r"^bo_[A-Za-z0-9]{24}$")
VERIFY_STALE_AFTER = timedelta(minutes=15)
RERUN_AFTER = timedelta(minutes=5)  # an approved action still running is left alone this long


# -- helpers ---------------------------------------------------------------------------------
def _require(actor: Actor, *codenames: str) -> None:
    """Any of the permissions (a bare codename means `backoffice.<codename>`), or 403."""
    perms = [name if "." in name else f"backoffice.{name}" for name in codenames]
    if not any(actor.has_perm(perm) for perm in perms):
        raise PermissionDenied(
            f"You do not have the '{perms[0]}' permission. Ask a back-office admin to add you "
            "to the role that grants it (operator or approver).")


def _text(value: str | None, *, param: str, message: str) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidRequest(message, param=param, code="note_required")
    return text


def _payment(payment_id: str) -> Payment:
    return one_or_404(Payment.objects.select_related("merchant"), payment_id, noun="payment")


def _dispute(dispute_id: str) -> Dispute:
    return one_or_404(Dispute.objects.select_related("merchant", "payment"), dispute_id,
                      noun="dispute")


def _two_phase(*, actor: Actor, action: str, object_type: str, object_id: str, note: str,
               call: Callable[[Callable[[Any], None]], T],
               after: Callable[[T], dict[str, Any]],
               fields: tuple[str, ...] = PAYMENT_FIELDS) -> T:
    """Audit an action that calls a provider: `call(intent)` passes `intent` to the owning
    service, which writes the intent row inside its reservation transaction; the outcome is
    recorded afterwards."""

    def intent(obj: Any) -> None:
        audit_record(actor=actor, action=action, object_type=object_type, object_id=object_id,
                     before=snapshot(obj, fields), note=note)

    try:
        result = call(intent)
    except ClearhouseError as exc:
        with transaction.atomic():
            audit_record(actor=actor, action=f"{action}.result", object_type=object_type,
                         object_id=object_id, note=f"refused: {exc.message}")
        raise
    with transaction.atomic():
        audit_record(actor=actor, action=f"{action}.result", object_type=object_type,
                     object_id=object_id, after=after(result), note="done")
    return result


# -- refunds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundRequested:
    """Either the refund (under the threshold) or the approval request it now waits for."""

    refund: Refund | None = None
    approval: ApprovalRequest | None = None
    is_repeat: bool = False  # the form was submitted before: this is that refund, nothing new


def refund_threshold(currency: str) -> int:
    """Refunds above this many minor units need an approver; 0 (every refund) for a currency
    that has no threshold configured."""
    return int(settings.BACKOFFICE_REFUND_APPROVAL_THRESHOLDS.get(currency, 0))


def refund_request(*, actor: Actor, payment_id: str, amount: int | None, reason: str, note: str,
                   form_key: str = "") -> RefundRequested:
    """Refund now, or, above the currency's threshold, ask an approver first.

    `form_key` is the one-time key printed in the refund form: a double-click or a re-posted
    form reuses it as the refund's Idempotency-Key, so it cannot refund twice."""
    _require(actor, "refund_payment")
    note = _text(note, param="note", message="Write why this refund is made (ticket number, "
                                              "what the customer asked); auditors read it.")
    if reason not in RefundReason.values:
        raise InvalidRequest("Choose a refund reason: duplicate, fraudulent or requested by "
                             "customer.", param="reason")
    payment = _payment(payment_id)
    key = form_key if FORM_KEY.match(form_key or "") else ""
    if key and (done := _refund_of_form(payment, amount, key)) is not None:
        return RefundRequested(refund=done, is_repeat=True)
    if key and (asked := _approval_of_form(payment, amount, key)) is not None:
        return RefundRequested(approval=asked, is_repeat=True)
    if not payment.allows("refund"):
        raise StateError(f"This payment is '{payment.status}'; only captured or settled payments "
                         "can be refunded.", param="status", code="payment_unexpected_state")
    remaining = refundable_amount(payment)
    if remaining <= 0:
        raise StateError("Nothing is left to refund on this payment (refunds, pending refunds "
                         "and disputes already cover the captured amount).",
                         code="charge_already_refunded")
    amount = amount or remaining
    if amount > remaining:
        raise StateError(f"At most {format_amount(remaining, payment.currency)} can be refunded "
                         "(captured, less refunds and disputes). Enter a smaller amount.",
                         param="amount", code="amount_too_large")
    params = {"payment_id": payment.id, "amount": amount, "reason": reason, "note": note}
    # Staff refunds of this payment add up: four refunds of 500.00 must not slip under a 500.00
    # threshold one by one.
    if staff_refunded(payment) + amount > refund_threshold(payment.currency):
        try:
            approval = _approval_create(
                actor=actor, kind=ApprovalKind.REFUND, merchant=payment.merchant,
                object_type="payment", object_id=payment.id, amount=amount,
                currency=payment.currency, params=params, reason=note, form_key=key)
        except IntegrityError:  # the same form, submitted twice at the same moment
            if not key or (asked := _approval_of_form(payment, amount, key)) is None:
                raise
            return RefundRequested(approval=asked, is_repeat=True)
        return RefundRequested(approval=approval)
    return RefundRequested(refund=_refund_run(actor=actor, payment=payment, params=params,
                                              idempotency_key=key or new_id("bo")))


def staff_refunded(payment: Payment) -> int:
    """Pending and succeeded refunds of the payment made from the back-office (minor units)."""
    return payment.refunds.filter(
        status__in=RESERVING_REFUND_STATUSES, metadata__source="backoffice",
    ).aggregate(total=Sum("amount"))["total"] or 0


def _approval_of_form(payment: Payment, amount: int | None, form_key: str
                      ) -> ApprovalRequest | None:
    """The approval request this form already made, or None (see `_form_reused`)."""
    approval = ApprovalRequest.objects.filter(form_key=form_key).first()
    if approval is not None:
        _form_reused(f"approval request {approval.id}", approval.object_id, approval.amount,
                     approval.currency, payment=payment, amount=amount)
    return approval


def _refund_of_form(payment: Payment, amount: int | None, form_key: str) -> Refund | None:
    """The refund this form already made, or None (see `_form_reused`)."""
    refund = Refund.objects.filter(merchant=payment.merchant, idempotency_key=form_key).first()
    if refund is not None:
        _form_reused(f"refund {refund.id}", refund.payment_id, refund.amount, refund.currency,
                     payment=payment, amount=amount)
    return refund


def _form_reused(made: str, made_for: str, made_amount: int, currency: str, *,
                 payment: Payment, amount: int | None) -> None:
    """A form submitted again (a double click, a re-posted page) finds what it made; a key
    reused for another payment or amount is a stale page, not a retry, and is refused."""
    if made_for != payment.id or (amount is not None and amount != made_amount):
        raise StateError(f"This form was already submitted as {made} "
                         f"({format_amount(made_amount, currency)} of payment {made_for}); "
                         "reload the page to make another refund.",
                         code="form_already_submitted")


def _refund_run(*, actor: Actor, payment: Payment, params: dict[str, Any], idempotency_key: str,
                approval: ApprovalRequest | None = None) -> Refund:
    amount, reason, note = params["amount"], params["reason"], params["note"]
    label = f"{format_amount(amount, payment.currency)} ({reason}): {note}"
    # The maker is who asked for the refund; with an approval, the approver let it run.
    metadata = {"source": "backoffice", "requested_by": actor.username, "note": note[:500],
                "approval": ""}
    if approval is not None:
        label += f" [approved request {approval.id}]"
        metadata.update(requested_by=approval.requested_by.get_username(),
                        approved_by=actor.username, approval=approval.id)

    def call(intent: Callable[[Any], None]) -> Refund:
        try:
            return payments.refund_create(
                merchant=payment.merchant, payment_id=payment.id, amount=amount, reason=reason,
                metadata=metadata, idempotency_key=idempotency_key, audit=intent)
        except IntegrityError:
            # Two submissions with the same key raced past the lookup; the first one won.
            existing = Refund.objects.filter(merchant=payment.merchant,
                                             idempotency_key=idempotency_key).first()
            if existing is None:
                raise
            return existing

    def after(refund: Refund) -> dict[str, Any]:
        payment.refresh_from_db()
        return {"payment": snapshot(payment, PAYMENT_FIELDS),
                "refund": snapshot(refund, REFUND_FIELDS)}

    return _two_phase(actor=actor, action="payment.refund", object_type="payment",
                      object_id=payment.id, note=label, call=call, after=after)


# -- capture, cancel -------------------------------------------------------------------------
def payment_capture_by_staff(*, actor: Actor, payment_id: str, amount: int | None = None,
                             final_capture: bool = True) -> Payment:
    _require(actor, "capture_payment")
    payment = _payment(payment_id)
    note = (f"capture {format_amount(amount, payment.currency)}" if amount
            else "capture all not captured yet") + ("" if final_capture else " (partial)")
    return _two_phase(
        actor=actor, action="payment.capture", object_type="payment", object_id=payment.id,
        note=note,
        call=lambda intent: payments.payment_capture(
            merchant=payment.merchant, payment_id=payment.id, amount=amount,
            final_capture=final_capture, audit=intent),
        after=lambda done: snapshot(done, PAYMENT_FIELDS))


def payment_cancel_by_staff(*, actor: Actor, payment_id: str, note: str) -> Payment:
    _require(actor, "cancel_payment")
    note = _text(note, param="note", message="Write why the authorization is canceled.")
    payment = _payment(payment_id)
    return _two_phase(
        actor=actor, action="payment.cancel", object_type="payment", object_id=payment.id,
        note=note,
        call=lambda intent: payments.payment_cancel(merchant=payment.merchant,
                                                    payment_id=payment.id, audit=intent),
        after=lambda done: snapshot(done, PAYMENT_FIELDS))


# -- disputes --------------------------------------------------------------------------------
def dispute_open_from_notice(
    *, actor: Actor, payment_id: str, provider_reference: str, reason: str, note: str,
    amount: int | None = None, due_by: datetime | None = None,
) -> tuple[Dispute, bool]:
    """Record a chargeback the provider notified us of outside a webhook (e-mail, portal).
    Returns the dispute and whether it is new. Idempotent on the provider's case reference,
    like the webhook path: the same notice again returns the recorded dispute and writes no
    audit row (nothing moved); a reference already used for another payment is refused."""
    _require(actor, "open_dispute")
    provider_reference = _text(provider_reference, param="provider_reference",
                               message="Enter the provider's case or dispute reference from "
                                       "the notice; it stops the same notice being recorded "
                                       "twice.")
    note = _text(note, param="note", message="Write where the notice came from.")
    if reason not in DisputeReason.values:
        raise InvalidRequest("Choose the dispute reason given on the notice.", param="reason")
    payment = _payment(payment_id)
    known = Dispute.objects.filter(provider=payment.provider,
                                   provider_reference=provider_reference).first()
    if known is not None:
        return _dispute_of_notice(known, payment), False
    with transaction.atomic():
        before = snapshot(payment, PAYMENT_FIELDS)
        dispute = payments.dispute_open(payment_id=payment.id, amount=amount, reason=reason,
                                        due_by=due_by, provider_reference=provider_reference)
        if dispute.payment_id != payment.id:  # recorded meanwhile, for another payment
            _dispute_of_notice(dispute, payment)
        payment.refresh_from_db()
        audit_record(actor=actor, action="dispute.open", object_type="payment",
                     object_id=payment.id, before=before,
                     after={"payment": snapshot(payment, PAYMENT_FIELDS),
                            "dispute": snapshot(dispute, DISPUTE_FIELDS)}, note=note)
    return dispute, True


def _dispute_of_notice(dispute: Dispute, payment: Payment) -> Dispute:
    if dispute.payment_id != payment.id:
        raise StateError(f"The provider's case reference '{dispute.provider_reference}' is "
                         f"already recorded as dispute {dispute.id} of payment "
                         f"{dispute.payment_id}, not of this payment. Check the notice: "
                         "nothing was recorded.", param="provider_reference",
                         code="dispute_reference_of_another_payment")
    return dispute


def dispute_evidence_submit(*, actor: Actor, dispute_id: str, evidence: dict[str, str]
                            ) -> Dispute:
    """Contest: stage the text given here beside the files already attached, then send it all
    to the provider through the port (the dispute moves to under_review when it accepts). The
    intent is audited in the transaction that opens the evidence attempt, the answer after."""
    _require(actor, "manage_dispute")
    evidence = {key: value.strip() for key, value in evidence.items() if (value or "").strip()}
    dispute = _dispute(dispute_id)
    if not evidence and not dispute.evidence:
        raise InvalidRequest("Enter at least one piece of evidence (a summary, a tracking "
                             "number or the customer communication), or attach a file.",
                             param="evidence")
    if evidence:
        payments.dispute_evidence_update(merchant=dispute.merchant, dispute_id=dispute.id,
                                         evidence=evidence, submit=False)
    return _two_phase(
        actor=actor, action="dispute.evidence", object_type="dispute", object_id=dispute.id,
        note="; ".join(f"{key}: {value}" for key, value in evidence.items())[:2000],
        call=lambda intent: payments.dispute_evidence_submit(
            merchant=None, dispute_id=dispute.id, audit=lambda payment: intent(
                Dispute.objects.get(pk=dispute.id))),
        after=lambda done: snapshot(done, DISPUTE_FIELDS), fields=DISPUTE_FIELDS)


def dispute_evidence_file_add(*, actor: Actor, dispute_id: str, field: str, content: bytes,
                              filename: str) -> EvidenceFile:
    """Attach a file to a dispute's evidence (checked and kept like the API's uploads); it goes
    to the provider with the next submission."""
    _require(actor, "manage_dispute")
    if field not in EVIDENCE_FILE_FIELDS:
        raise InvalidRequest("Choose what the file shows.", param="field")
    dispute = _dispute(dispute_id)
    with transaction.atomic():
        before = snapshot(dispute, DISPUTE_FIELDS)
        added = payments.file_create(merchant=dispute.merchant, content=content,
                                     filename=filename, uploaded_by=f"staff:{actor.username}")
        dispute = payments.dispute_evidence_update(merchant=dispute.merchant,
                                                   dispute_id=dispute.id,
                                                   evidence={field: added.id}, submit=False)
        audit_record(actor=actor, action="dispute.evidence_file", object_type="dispute",
                     object_id=dispute.id, before=before,
                     after={field: added.id, "filename": added.filename, "size": added.size,
                            "sha256": added.sha256})
    return added


def dispute_refresh(*, actor: Actor, dispute_id: str) -> Dispute:
    """Ask the provider where the dispute stands now (what the dispute job does on its own
    schedule); its answer, not the person, decides."""
    _require(actor, "manage_dispute")
    dispute = _dispute(dispute_id)
    before = snapshot(dispute, DISPUTE_FIELDS)
    done = payments.dispute_refresh(dispute_id=dispute.id)
    done.refresh_from_db()
    with transaction.atomic():
        audit_record(actor=actor, action="dispute.refresh", object_type="dispute",
                     object_id=dispute.id, before=before, after=snapshot(done, DISPUTE_FIELDS))
    return done


@dataclass(frozen=True)
class DisputeDecision:
    """A won decision is recorded at once; a lost one waits for an approver (the approval)."""

    dispute: Dispute
    approval: ApprovalRequest | None = None


def dispute_decision_record(*, actor: Actor, dispute_id: str, won: bool, note: str,
                            decision_reference: str) -> DisputeDecision:
    """The provider decided. Won releases the held amount at once: the operator records a
    decision the provider made (its reference is kept), and a false "won" cannot hide, since the
    provider's settlement debits the chargeback and reconciliation raises a break. Lost charges
    the amount back to the merchant, so it is "a dispute accepted as lost": like accepting
    one, it becomes an approval request that a different approver must approve."""
    _require(actor, "manage_dispute")
    decision_reference = _text(decision_reference, param="decision_reference",
                               message="Enter the provider's reference for the decision (as "
                                       "printed on its letter or portal).")
    note = _text(note, param="note", message="Write where the provider's decision is "
                                              "recorded (notice id, date).")
    dispute = _dispute(dispute_id)
    if dispute.attempts.filter(status__in=SENT_TO_PROVIDER).exists():
        raise StateError("This dispute's evidence went to the provider through its API, so the "
                         "provider's own decision closes it (by notice, or ask the provider "
                         "from this page); it cannot be recorded by hand.",
                         code="dispute_decided_by_provider")
    if not won:
        if not dispute.is_open:
            raise StateError(f"This dispute is already '{dispute.status}'.",
                             code="dispute_closed")
        approval = _dispute_accept_approval(
            actor=actor, dispute=dispute, reason=f"{note} [provider decision "
                                                 f"{decision_reference}]",
            params={"dispute_id": dispute.id, "decision": "lost",
                    "decision_reference": decision_reference})
        return DisputeDecision(dispute=dispute, approval=approval)
    with transaction.atomic():
        before = {"dispute": snapshot(dispute, DISPUTE_FIELDS),
                  "payment": snapshot(dispute.payment, PAYMENT_FIELDS)}
        dispute = payments.dispute_resolve(dispute_id=dispute.id, won=True,
                                           decided_by=DisputeDecider.STAFF)
        dispute.payment.refresh_from_db()
        audit_record(actor=actor, action="dispute.won", object_type="dispute",
                     object_id=dispute.id, before=before,
                     after={"dispute": snapshot(dispute, DISPUTE_FIELDS),
                            "payment": snapshot(dispute.payment, PAYMENT_FIELDS),
                            "decision_reference": decision_reference},
                     note=f"{note} [provider decision {decision_reference}]")
    return DisputeDecision(dispute=dispute)


def dispute_accept_request(*, actor: Actor, dispute_id: str, note: str) -> ApprovalRequest:
    """Accepting a dispute as lost gives the money away: it waits for an approver."""
    _require(actor, "accept_dispute")
    note = _text(note, param="note", message="Write why the dispute should not be contested.")
    dispute = _dispute(dispute_id)
    if not dispute.is_open:
        raise StateError(f"This dispute is already '{dispute.status}'.", code="dispute_closed")
    return _dispute_accept_approval(actor=actor, dispute=dispute, reason=note,
                                    params={"dispute_id": dispute.id})


def _dispute_accept_approval(*, actor: Actor, dispute: Dispute, reason: str,
                             params: dict[str, Any]) -> ApprovalRequest:
    """One open request per dispute (a unique index): a second click finds the first."""
    try:
        return _approval_create(
            actor=actor, kind=ApprovalKind.DISPUTE_ACCEPT, merchant=dispute.merchant,
            object_type="dispute", object_id=dispute.id, amount=dispute.amount,
            currency=dispute.currency, params=params, reason=reason)
    except IntegrityError:
        existing = ApprovalRequest.objects.filter(
            kind=ApprovalKind.DISPUTE_ACCEPT, object_id=dispute.id,
            status__in=[ApprovalStatus.PENDING, ApprovalStatus.APPROVED]).first()
        if existing is None:
            raise
        return existing


# -- webhooks and the provider inbox ---------------------------------------------------------
def payment_webhook_resend_latest(*, actor: Actor, payment_id: str) -> list[WebhookDelivery]:
    """New deliveries of the newest event about the payment (or its refunds and disputes) to
    every endpoint of the merchant that subscribes to it now."""
    _require(actor, "resend_webhook")
    payment = _payment(payment_id)
    object_ids = [payment.id, *payment.refunds.values_list("id", flat=True)[:100],
                  *payment.disputes.values_list("id", flat=True)[:100]]
    event = (Event.objects.filter(merchant=payment.merchant, object_id__in=object_ids)
             .order_by("-created_at", "-id").first())
    if event is None:
        raise StateError("No event has been recorded for this payment yet; nothing to resend.",
                         code="no_event")
    with transaction.atomic():
        deliveries = webhooks.event_resend(merchant=payment.merchant, event_id=event.id)
        if not deliveries:
            raise StateError(f"No enabled webhook endpoint of this merchant subscribes to "
                             f"'{event.type}'; nothing was sent. Check the merchant's "
                             "endpoints first.", code="no_endpoint")
        audit_record(actor=actor, action="webhook.resend", object_type="event",
                     object_id=event.id, after={"payment": payment.id, "type": event.type,
                                                "deliveries": [d.id for d in deliveries]})
    return deliveries


def delivery_resend(*, actor: Actor, delivery_id: str) -> list[WebhookDelivery]:
    """The same event again to the same endpoint (a new delivery with its own attempts)."""
    _require(actor, "resend_webhook")
    row = one_or_404(WebhookDelivery.objects.select_related("endpoint__merchant"), delivery_id,
                     noun="webhook delivery")
    with transaction.atomic():
        deliveries = webhooks.event_resend(merchant=row.endpoint.merchant, event_id=row.event_id,
                                           endpoint_id=row.endpoint_id)
        audit_record(actor=actor, action="webhook.resend", object_type="delivery",
                     object_id=row.id, after={"event": row.event_id,
                                              "endpoint": row.endpoint_id,
                                              "deliveries": [d.id for d in deliveries]})
    return deliveries


def provider_event_replay_by_staff(*, actor: Actor, event_id: int) -> str | None:
    """Run a failed or held inbound provider event again (its services may call a provider,
    hence the two-step audit)."""
    _require(actor, "replay_provider_event")
    row = one_or_404(ProviderEvent.objects.all(), event_id, noun="provider event")
    if row.status not in (InboxStatus.FAILED, InboxStatus.HELD):
        raise StateError(f"This event is '{row.status}'; only failed or held events can be "
                         "replayed.", code="not_replayable")

    def after(outcome: str | None) -> dict[str, Any]:
        row.refresh_from_db()
        return {**snapshot(row, INBOX_FIELDS), "outcome": outcome}

    def call(intent: Callable[[Any], None]) -> str | None:
        # No hook in the inbox's service: the intent is committed just before the replay.
        with transaction.atomic():
            intent(row)
        return inbound.provider_event_replay(event_id=row.pk)

    return _two_phase(actor=actor, action="provider_event.replay", object_type="provider_event",
                      object_id=str(row.pk), note=f"{row.provider} {row.type} "
                                                  f"{row.provider_event_id}",
                      call=call, after=after, fields=INBOX_FIELDS)


# -- reconciliation breaks -------------------------------------------------------------------
# The operator role's permission, or reconciliation's own (its admin's first cut used it).
BREAK_CLOSE_PERMISSIONS = ("backoffice.resolve_break", "reconciliation.change_reconciliationbreak")


def break_close(*, actor: Actor, break_id: str, note: str, ignore: bool = False
                ) -> ReconciliationBreak:
    """Resolve (fixed elsewhere) or ignore (not a real problem) a break, with the human's note;
    reconciliation writes its own BreakAudit row, we write the staff audit row, one
    transaction."""
    _require(actor, *BREAK_CLOSE_PERMISSIONS)
    note = _text(note, param="note", message="Write what you checked and why the break can "
                                              "be closed; auditors read it.")
    with transaction.atomic():
        before = snapshot(ReconciliationBreak.objects.filter(pk=break_id).first(), BREAK_FIELDS)
        brk = reconciliation.break_resolve(
            break_id=break_id, user=actor.user, note=note,
            status=BreakStatus.IGNORED if ignore else BreakStatus.RESOLVED)
        audit_record(actor=actor, action="break.ignore" if ignore else "break.resolve",
                     object_type="break", object_id=brk.id, before=before,
                     after=snapshot(brk, BREAK_FIELDS), note=note)
    return brk


# -- the ledger ------------------------------------------------------------------------------
ADJUSTABLE_KINDS = (AccountKind.AVAILABLE.value, AccountKind.PENDING.value)


def counter_accounts() -> list[str]:
    """Platform accounts an adjustment may move money against."""
    return ["fees", *(f"provider_clearing:{code}" for code in registered_codes())]


def ledger_adjustment_request(
    *, actor: Actor, merchant_id: str, currency: str, account_kind: str, direction: str,
    counter_account: str, amount: int, note: str,
) -> ApprovalRequest:
    """Ask for a manual entry crediting or debiting a merchant balance against a platform
    account. Always waits for an approver; approval posts one `adjustment` entry."""
    _require(actor, "request_ledger_adjustment")
    note = _text(note, param="note", message="Write why the balance must change and where "
                                              "the evidence is (ticket, statement line).")
    merchant = Merchant.objects.filter(pk=merchant_id).first()
    if merchant is None:
        raise NotFound(f"No such merchant: '{merchant_id}'. Use the acct_… id.",
                       param="merchant")
    if currency not in CURRENCIES:
        raise InvalidRequest(f"'{currency}' is not a supported currency; use a lower-case ISO "
                             "code such as usd.", param="currency")
    if account_kind not in ADJUSTABLE_KINDS:
        raise InvalidRequest("Only the available or pending balance can be adjusted.",
                             param="account_kind")
    if direction not in ("credit", "debit"):
        raise InvalidRequest("Choose credit (the merchant gets money) or debit (the merchant "
                             "owes it).", param="direction")
    if counter_account not in counter_accounts():
        raise InvalidRequest("Choose the platform account on the other side.",
                             param="counter_account")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidRequest("Enter a positive amount.", param="amount")
    return _approval_create(
        actor=actor, kind=ApprovalKind.LEDGER_ADJUSTMENT, merchant=merchant,
        object_type="account", object_id=f"{merchant.id}:{account_kind}:{currency}",
        amount=amount, currency=currency, reason=note,
        params={"merchant_id": merchant.id, "currency": currency, "account_kind": account_kind,
                "direction": direction, "counter_account": counter_account, "amount": amount})


def decline_rule_change_request(*, actor: Actor, provider: str, code: str, meaning: str,
                                note: str) -> ApprovalRequest:
    """Ask to change what a decline code means for routing, failover and delayed retries
    (`provider` blank: the default for every provider). Always waits for a second person."""
    _require(actor, "request_decline_rule_change")
    note = _text(note, param="note", message="Write why this code should mean something else "
                                              "(the provider's documentation, a ticket).")
    if provider and provider not in registered_codes():
        raise InvalidRequest(f"'{provider}' is not an enabled provider; leave it blank for "
                             "every provider.", param="provider")
    if not code or len(code) > 64:
        raise InvalidRequest("Name the decline code, such as insufficient_funds.", param="code")
    if meaning not in DeclineMeaning.values:
        raise InvalidRequest(f"Choose one of: {', '.join(DeclineMeaning.values)}.",
                             param="meaning")
    return _approval_create(
        actor=actor, kind=ApprovalKind.DECLINE_RULE, merchant=None, object_type="decline_rule",
        object_id=f"{provider or '*'}:{code}", amount=0, currency="", reason=note,
        params={"provider": provider, "code": code, "meaning": meaning})


def _decline_rule_apply(approval: ApprovalRequest, actor: Actor) -> dict[str, Any]:
    p = approval.params
    before, after = decline_rule_set(provider=p["provider"], code=p["code"],
                                     meaning=p["meaning"])
    audit_record(actor=actor, action="decline_rule.change", object_type="decline_rule",
                 object_id=approval.object_id, before={"meaning": before},
                 after={"meaning": after},
                 note=f"{approval.id}, requested by {approval.requested_by.get_username()}: "
                      f"{approval.reason}")
    return {"decline_rule": approval.object_id, "before": before, "after": after}


def _ledger_adjustment_post(approval: ApprovalRequest, actor: Actor) -> dict[str, Any]:
    p = approval.params
    mine = account_for(merchant=approval.merchant, currency=p["currency"],
                       kind=p["account_kind"])
    kind, _, provider = p["counter_account"].partition(":")
    theirs = account_for(currency=p["currency"], kind=kind, provider=provider)
    signed = p["amount"] if p["direction"] == "credit" else -p["amount"]
    entry = entry_post(
        kind=EntryKind.ADJUSTMENT, lines=[(mine, signed), (theirs, -signed)],
        reference_type="approval", reference_id=approval.id, merchant=approval.merchant,
        description=(f"Manual adjustment {approval.id}, requested by "
                     f"{approval.requested_by.get_username()}, approved by {actor.username}: "
                     f"{approval.reason}"))
    return {"journal_entry": entry.id}


def ledger_verify_start(*, actor: Actor) -> tuple[LedgerVerifyRun, bool]:
    """Queue a verification (a Celery task) unless one is queued or running already.
    Returns the run and whether it is new."""
    _require(actor, "run_ledger_verify")
    with transaction.atomic():
        busy = (LedgerVerifyRun.objects
                .filter(status__in=[VerifyStatus.QUEUED, VerifyStatus.RUNNING],
                        requested_at__gte=timezone.now() - VERIFY_STALE_AFTER)
                .order_by("-id").first())
        if busy is not None:
            return busy, False
        run = LedgerVerifyRun.objects.create(requested_by=actor.user)
        audit_record(actor=actor, action="ledger.verify", object_type="ledger_verify_run",
                     object_id=str(run.pk))
        transaction.on_commit(lambda: _enqueue_verify(run.pk))
    return run, True


def _enqueue_verify(run_id: int) -> None:
    # The run stays `queued`; after VERIFY_STALE_AFTER the button queues a new one.
    task_send("backoffice.tasks.ledger_verify_run", run_id,
              what=f"ledger verification run {run_id}", fallback="it stays queued")


def ledger_verify_execute(*, run_id: int) -> LedgerVerifyRun | None:
    """The task's body: claim a queued run, verify, store the outcome. A second delivery of the
    task finds the run claimed and does nothing."""
    claimed = LedgerVerifyRun.objects.filter(pk=run_id, status=VerifyStatus.QUEUED).update(
        status=VerifyStatus.RUNNING, started_at=timezone.now())
    if not claimed:
        return None
    run = LedgerVerifyRun.objects.get(pk=run_id)
    try:
        result = ledger_verify()
    except Exception as exc:
        logger.exception("ledger verification run %s crashed", run_id)
        run.status, run.report = VerifyStatus.ERROR, f"{type(exc).__name__}: {exc}"[:10_000]
    else:
        run.status = VerifyStatus.PASSED if result.ok else VerifyStatus.FAILED
        run.entries, run.postings, run.accounts = result.entries, result.postings, result.accounts
        run.problems = [{"check": p.check, "row": p.row, "message": p.message}
                        for p in result.problems]
        run.report = result.report()
    run.finished_at = timezone.now()
    run.save()
    return run


# -- approvals (maker-checker) ---------------------------------------------------------------
def _approval_create(*, actor: Actor, kind: str, merchant: Merchant | None, object_type: str,
                     object_id: str, amount: int, currency: str, params: dict[str, Any],
                     reason: str, form_key: str = "") -> ApprovalRequest:
    with transaction.atomic():
        approval = ApprovalRequest.objects.create(
            kind=kind, merchant=merchant, object_type=object_type, object_id=object_id,
            amount=amount, currency=currency, params=params, reason=reason,
            requested_by=actor.user, form_key=form_key)
        audit_record(actor=actor, action="approval.request", object_type="approval",
                     object_id=approval.id, after=snapshot(approval), note=reason)
    return approval


def approval_decide(*, actor: Actor, approval_id: str, approve: bool, comment: str
                    ) -> ApprovalRequest:
    """A different approver approves (then the action runs, once) or rejects, with a comment."""
    _require(actor, "approve_request")
    comment = _text(comment, param="comment", message="Write why you approve or reject it; "
                                                      "the requester and auditors read it.")
    with transaction.atomic():
        approval = one_or_404(ApprovalRequest.objects.select_for_update(), approval_id,
                              noun="approval request")
        if approval.status != ApprovalStatus.PENDING:
            raise StateError(f"This request is already '{approval.get_status_display()}'; "
                             "nothing was changed.", code="approval_decided")
        if approval.requested_by_id == actor.user.pk:  # type: ignore[union-attr]
            raise PermissionDenied("You requested this yourself; a different approver must "
                                   "decide it.")
        before = snapshot(approval)
        approval.status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        approval.decided_by = actor.user
        approval.decided_at = timezone.now()
        approval.decision_comment = comment
        approval.save()
        audit_record(actor=actor, action="approval.approve" if approve else "approval.reject",
                     object_type="approval", object_id=approval.id, before=before,
                     after=snapshot(approval), note=comment)
    if approve:
        approval = approval_execute(actor=actor, approval_id=approval.id)
    return approval


_IN_DATABASE: dict[str, Callable[[ApprovalRequest, Actor], dict[str, Any]]] = {
    ApprovalKind.LEDGER_ADJUSTMENT: _ledger_adjustment_post,
    ApprovalKind.DECLINE_RULE: _decline_rule_apply,
    # A provider's "lost" letter recorded by staff, or the merchant's loss accepted by staff.
    ApprovalKind.DISPUTE_ACCEPT: lambda approval, actor: {
        "dispute": payments.dispute_resolve(
            dispute_id=approval.params["dispute_id"], won=False,
            decided_by=(DisputeDecider.STAFF if approval.params.get("decision") == "lost"
                        else DisputeDecider.MERCHANT)).id},
}


def approval_execute(*, actor: Actor, approval_id: str) -> ApprovalRequest:
    """Run an approved request's action exactly once. Safe to call again: a crash between the
    decision and the end of the action leaves it `approved`, and running it again finishes it
    (the refund's Idempotency-Key is the request id; the ledger entry's reference is too)."""
    _require(actor, "approve_request")
    approval = ApprovalRequest.objects.select_related("merchant", "requested_by").get(
        pk=approval_id)
    if approval.status != ApprovalStatus.APPROVED:
        return approval
    if approval.kind == ApprovalKind.REFUND:
        return _approval_execute_refund(actor, approval)
    with transaction.atomic():
        approval = (ApprovalRequest.objects.select_for_update(of=("self",))
                    .select_related("merchant", "requested_by").get(pk=approval_id))
        if approval.status != ApprovalStatus.APPROVED:
            return approval
        try:
            with transaction.atomic():  # a refusal undoes the action, not the decision
                result = _IN_DATABASE[approval.kind](approval, actor)
        except ClearhouseError as exc:
            _approval_finish(approval, actor, error=exc.message)
        else:
            _approval_finish(approval, actor, result=result)
    return approval


def approval_rerun_allowed(approval: ApprovalRequest, *, now: datetime | None = None) -> bool:
    """Whether "Run the approved action again" may be offered: still `approved` well after the
    decision (the first run has had time to finish), never while the first run may be going."""
    now = now or timezone.now()
    return (approval.status == ApprovalStatus.APPROVED and approval.decided_at is not None
            and now - approval.decided_at > RERUN_AFTER)


def _approval_refund(approval: ApprovalRequest) -> Refund | None:
    """The refund an earlier (or concurrent) run of this approval made, unless it failed."""
    return (Refund.objects.filter(merchant=approval.merchant, idempotency_key=approval.id)
            .exclude(status=RefundStatus.FAILED).first())


def _approval_execute_refund(actor: Actor, approval: ApprovalRequest) -> ApprovalRequest:
    # The provider is called with no lock held; the request id as Idempotency-Key makes a
    # concurrent or repeated run find the same refund instead of making a second one. A refund
    # the first run made (even one still pending at the provider) means the action happened:
    # executed, never re-sent, never "failed" because the first run took the money meanwhile.
    result: dict[str, Any] = {}
    error = ""
    refund = _approval_refund(approval)
    if refund is None:
        try:
            refund = _refund_run(actor=actor, payment=_payment(approval.params["payment_id"]),
                                 params=approval.params, idempotency_key=approval.id,
                                 approval=approval)
            if refund.status == RefundStatus.FAILED:
                error = (f"The provider declined the refund ({refund.failure_code}): "
                         f"{refund.failure_message}")
        except ClearhouseError as exc:
            refund = _approval_refund(approval)  # a concurrent run reserved it first
            if refund is None:
                error = exc.message
    if refund is not None:
        result = {"refund": refund.id, "refund_status": refund.status}
    with transaction.atomic():
        approval = ApprovalRequest.objects.select_for_update().get(pk=approval.pk)
        if approval.status == ApprovalStatus.APPROVED:
            _approval_finish(approval, actor, result=result, error=error)
    return approval


def _approval_finish(approval: ApprovalRequest, actor: Actor, *,
                     result: dict[str, Any] | None = None, error: str = "") -> None:
    before = snapshot(approval)
    approval.status = ApprovalStatus.FAILED if error else ApprovalStatus.EXECUTED
    approval.executed_at = timezone.now()
    approval.result = result or {}
    approval.error = error
    approval.save()
    audit_record(actor=actor, action="approval.execute", object_type="approval",
                 object_id=approval.id, before=before, after=snapshot(approval), note=error)
