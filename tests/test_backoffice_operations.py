"""Disputes, webhooks and the provider inbox, reconciliation breaks and the ledger pages, driven
through the admin as finance staff use them."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.admin.utils import quote
from django.utils import timezone

from backoffice.models import ApprovalRequest, AuditEntry, LedgerVerifyRun
from backoffice.services import ledger_verify_execute
from payments import services as payments
from payments.models import Dispute
from reconciliation.models import BreakAudit, BreakType, ReconciliationBreak
from reconciliation.services import BreakSpec, breaks_open
from tests.factories import staff_user
from webhooks import services as webhooks
from webhooks.models import ProviderEvent, WebhookDelivery

pytestmark = pytest.mark.django_db


def _staff(client, role: str, name: str | None = None):
    return staff_user(role, name, client=client)


def _messages(response) -> str:
    return " ".join(str(m) for m in response.context["messages"])


# -- disputes --------------------------------------------------------------------------------
def test_disputes_are_listed_by_due_date(client, make_payment):
    _staff(client, "viewer")
    later = payments.dispute_open(payment_id=make_payment(1000).id,
                                  due_by=timezone.now() + timedelta(days=9))
    sooner = payments.dispute_open(payment_id=make_payment(1000).id,
                                   due_by=timezone.now() + timedelta(days=1))
    page = client.get("/admin/payments/dispute/")
    assert [d.id for d in page.context["cl"].result_list] == [sooner.id, later.id]
    assert "in 1 days" in page.content.decode() or "today" in page.content.decode()


def test_evidence_then_a_won_decision_from_the_dispute_page(client, make_payment, merchant):
    _staff(client, "operator")
    payment = make_payment(10_000)
    # Evidence goes to the provider (the sandbox), which knows the case by its reference.
    dispute = payments.dispute_open(payment_id=payment.id, amount=4000,
                                    provider_reference="cb_page")
    url = f"/admin/payments/dispute/{quote(dispute.id)}/"
    page = client.get(f"{url}change/").content.decode()
    assert "Merchant balances now (USD)" in page and "40.00 USD" in page
    assert "dispute_opened" in page  # the balance effect, with its postings
    empty = client.post(f"{url}evidence/", {}, follow=True)
    assert "Enter at least one piece of evidence" in _messages(empty)
    sent = client.post(f"{url}evidence/", {"shipping_tracking_number": "1Z999"}, follow=True)
    assert "the dispute is under_review" in _messages(sent)
    assert Dispute.objects.get(pk=dispute.id).evidence == {"shipping_tracking_number": "1Z999"}
    missing = client.post(f"{url}decide/", {"outcome": "won", "note": "Letter 2026-03-01"},
                          follow=True)
    assert "Provider's decision reference: This field is required" in _messages(missing)
    decision = {"outcome": "won", "note": "Letter 2026-03-01", "decision_reference": "W-1"}
    # Its evidence went through the provider's API: the provider's decision closes it.
    refused = client.post(f"{url}decide/", decision, follow=True)
    assert "the provider's own decision closes it" in _messages(refused)
    assert Dispute.objects.get(pk=dispute.id).status == "under_review"
    # A case worked outside the API (the provider's letter): staff record its decision.
    offline = payments.dispute_open(payment_id=payment.id, amount=1000,
                                    provider_reference="cb_letter")
    won = client.post(f"/admin/payments/dispute/{quote(offline.id)}/decide/", decision,
                      follow=True)
    assert "released back to the merchant's available balance" in _messages(won)
    payment.refresh_from_db()
    assert payment.amount_disputed == 4000
    assert Dispute.objects.get(pk=offline.id).decided_by == "staff"
    assert list(AuditEntry.objects.filter(object_id__in=[dispute.id, offline.id]).order_by("id")
                .values_list("action", flat=True)) == ["dispute.evidence",
                                                        "dispute.evidence.result", "dispute.won"]


def test_a_lost_decision_from_the_dispute_page_creates_an_approval(client, make_payment):
    _staff(client, "operator")
    payment = make_payment(10_000)
    dispute = payments.dispute_open(payment_id=payment.id, amount=4000)
    response = client.post(f"/admin/payments/dispute/{quote(dispute.id)}/decide/",
                           {"outcome": "lost", "note": "Letter", "decision_reference": "L-9"},
                           follow=True)
    assert "Nothing is charged back yet" in _messages(response)
    payment.refresh_from_db()
    assert Dispute.objects.get(pk=dispute.id).status == "needs_response"
    assert payment.status == "captured"
    approval = ApprovalRequest.objects.get(object_id=dispute.id)
    _staff(client, "approver")
    page = client.get(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/change/")
    assert "decision L-9: dispute" in page.content.decode()


def test_accept_as_lost_from_the_dispute_page_creates_an_approval(client, make_payment):
    _staff(client, "operator")
    dispute = payments.dispute_open(payment_id=make_payment(10_000).id, amount=4000)
    response = client.post(f"/admin/payments/dispute/{quote(dispute.id)}/accept/",
                           {"note": "No proof"}, follow=True)
    assert "waits for an approver to accept the loss" in _messages(response)
    assert Dispute.objects.get(pk=dispute.id).status == "needs_response"
    page = client.get(f"/admin/payments/dispute/{quote(dispute.id)}/change/").content.decode()
    assert "already waits for an approver" in page


# -- the approvals queue in the admin --------------------------------------------------------
def _refund_asked_by_an_operator(client, make_payment) -> ApprovalRequest:
    """An operator asks to refund 600.00 of a 1,000.00 payment: above the threshold, so it
    waits for an approver."""
    payment = make_payment(100_000)
    _staff(client, "operator")
    client.post(f"/admin/payments/payment/{quote(payment.id)}/refund/",
                {"amount": "600", "reason": "duplicate", "note": "Charged twice"})
    return ApprovalRequest.objects.get()


def test_the_approvals_queue_and_the_decision_page(client, make_payment):
    _refund_asked_by_an_operator(client, make_payment)
    maker = ApprovalRequest.objects.get().requested_by
    queue = client.get("/admin/backoffice/approvalrequest/", {"status__exact": "pending"})
    (approval,) = queue.context["cl"].result_list
    mine = client.get(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/change/").content
    assert b"You requested this, so you cannot approve it" in mine
    assert b"Approve and run it" not in mine
    _staff(client, "approver")
    page = client.get(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/change/").content
    assert b"Refund 600.00 USD of payment" in page and b"Approve and run it" in page
    missing = client.post(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/decide/",
                          {"decision": "approve", "comment": ""}, follow=True)
    assert "Comment (required)" in _messages(missing)
    done = client.post(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/decide/",
                       {"decision": "approve", "comment": "Seen the duplicate"}, follow=True)
    assert f"Approved {approval.id} and done" in _messages(done)
    approval.refresh_from_db()
    assert approval.status == "executed" and approval.requested_by == maker


@pytest.mark.parametrize("decision", [None, "", "aprove", "yes"])
def test_a_decision_other_than_approve_or_reject_changes_nothing(client, make_payment,
                                                                 decision):
    approval = _refund_asked_by_an_operator(client, make_payment)
    _staff(client, "approver")
    body = {"comment": "looks fine"}
    if decision is not None:
        body["decision"] = decision
    response = client.post(f"/admin/backoffice/approvalrequest/{quote(approval.id)}/decide/",
                           body, follow=True)
    assert "Nothing was done. Press Approve or Reject" in _messages(response)
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert not AuditEntry.objects.filter(action__in=["approval.approve",
                                                     "approval.reject"]).exists()


def test_run_again_is_offered_only_five_minutes_after_the_decision(client, make_payment,
                                                                   monkeypatch):
    from backoffice import services

    approval = _refund_asked_by_an_operator(client, make_payment)
    _staff(client, "approver")
    url = f"/admin/backoffice/approvalrequest/{quote(approval.id)}/"
    with monkeypatch.context() as patched:  # decided; the run has not finished
        patched.setattr(services, "approval_execute",
                        lambda **kw: ApprovalRequest.objects.get(pk=kw["approval_id"]))
        decided = client.post(f"{url}decide/", {"decision": "approve", "comment": "ok"},
                              follow=True)
    assert "has not finished" in _messages(decided)
    approval.refresh_from_db()
    assert approval.status == "approved"
    assert b"Run the approved action again" not in client.get(f"{url}change/").content
    early = client.post(f"{url}execute/", follow=True)
    assert "may still be running" in _messages(early)
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "approved"
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        assert b"Run the approved action again" in client.get(f"{url}change/").content
        late = client.post(f"{url}execute/", follow=True)
    assert "is now: Approved and done" in _messages(late)


def test_requesting_a_ledger_adjustment_in_the_admin(client, merchant):
    _staff(client, "operator")
    url = "/admin/backoffice/approvalrequest/ledger-adjustment/"
    assert client.get(url).status_code == 200
    bad = client.post(url, {"merchant": "acct_nope", "currency": "usd",
                            "account_kind": "available", "direction": "credit",
                            "counter_account": "fees", "amount": "12.50", "note": "why"})
    assert bad.status_code == 200 and "No such merchant" in bad.content.decode()
    good = client.post(url, {"merchant": merchant.id, "currency": "USD",
                             "account_kind": "available", "direction": "credit",
                             "counter_account": "fees", "amount": "12.50", "note": "why"},
                       follow=True)
    assert "waits for an approver" in _messages(good)
    assert good.context["original"].amount == 1250


# -- webhooks and the provider inbox ---------------------------------------------------------
def test_a_delivery_is_resent_from_its_page(client, merchant, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook",
                             enabled_events=["*"])
    webhooks.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": "pay_1", "object": "payment"})
    delivery = WebhookDelivery.objects.get()
    _staff(client, "viewer")
    page = client.get(f"/admin/webhooks/webhookdelivery/{quote(delivery.id)}/change/")
    assert b"Resend this event" not in page.content
    _staff(client, "operator")
    response = client.post(f"/admin/webhooks/webhookdelivery/{quote(delivery.id)}/resend/",
                           follow=True)
    assert "Queued 1 new delivery" in _messages(response)
    assert WebhookDelivery.objects.count() == 2
    assert AuditEntry.objects.get(action="webhook.resend").object_id == delivery.id


def test_a_failed_provider_event_is_replayed_from_its_page(client, make_payment):
    _staff(client, "operator")
    payment = make_payment(10_000)
    row = ProviderEvent.objects.create(
        provider="sandbox", provider_event_id="evt_x", type="payment.captured",
        provider_reference=payment.provider_reference, raw_body="not json", status="failed",
        attempts=8, last_error="boom")
    page = client.get(f"/admin/webhooks/providerevent/{quote(row.id)}/change/").content.decode()
    assert "Replay this event" in page
    response = client.post(f"/admin/webhooks/providerevent/{quote(row.id)}/replay/", follow=True)
    row.refresh_from_db()
    assert row.attempts == 1  # replay reset the counter and ran it once
    assert "Replayed" in _messages(response)
    assert list(AuditEntry.objects.filter(object_id=str(row.id)).values_list(
        "action", flat=True).order_by("id")) == ["provider_event.replay",
                                                  "provider_event.replay.result"]
    processed = ProviderEvent.objects.create(provider="sandbox", provider_event_id="evt_y",
                                             type="x", raw_body="{}", status="processed")
    refused = client.post(f"/admin/webhooks/providerevent/{processed.id}/replay/",
                          follow=True)
    assert "only failed or held events can be replayed" in _messages(refused)


# -- reconciliation breaks -------------------------------------------------------------------
def _break(key: str = "sandbox:capture:abc", **extra: object) -> ReconciliationBreak:
    breaks_open(specs=[BreakSpec(type=BreakType.AMOUNT_MISMATCH, key=key, provider="sandbox",
                                 provider_reference="abc", currency="usd", our_amount=1000,
                                 provider_amount=900, **extra)])
    return ReconciliationBreak.objects.get(key=key)


def test_a_break_is_resolved_with_a_required_note_and_audited(client):
    brk = _break()
    operator = _staff(client, "operator")
    queue = client.get("/admin/reconciliation/reconciliationbreak/",
                       {"status__exact": "open", "type__exact": "amount_mismatch",
                        "provider": "sandbox"})
    assert [b.id for b in queue.context["cl"].result_list] == [brk.id]
    assert "10.00 USD" in queue.content.decode() and "9.00 USD" in queue.content.decode()
    url = f"/admin/reconciliation/reconciliationbreak/{quote(brk.id)}/close/"
    empty = client.post(url, {"outcome": "resolve", "note": "  "}, follow=True)
    assert "Refused: Write what you checked" in _messages(empty) or "Note" in _messages(empty)
    assert ReconciliationBreak.objects.get(pk=brk.id).status == "open"
    done = client.post(url, {"outcome": "resolve", "note": "Provider fee, confirmed by mail"},
                       follow=True)
    assert f"Break {brk.id} is resolved" in _messages(done)
    brk.refresh_from_db()
    assert brk.resolved_by == operator and brk.resolution_note.startswith("Provider fee")
    assert BreakAudit.objects.filter(reconciliation_break=brk, user=operator).exists()
    row = AuditEntry.objects.get(action="break.resolve")
    assert row.object_id == brk.id and row.before["status"] == "open"
    assert row.after["status"] == "resolved"


def test_a_capped_bulk_close_says_how_many_of_how_many(client, monkeypatch):
    from backoffice.admin.break_queue import BreakQueueAdmin

    monkeypatch.setattr(BreakQueueAdmin, "bulk_close_limit", 2)
    breaks = [_break(f"bulk{i}") for i in range(3)]
    _staff(client, "operator")
    response = client.post("/admin/reconciliation/reconciliationbreak/", {
        "action": "resolve_breaks", "_selected_action": [b.pk for b in breaks],
        "apply": "1", "status": "resolved", "note": "Checked in bulk"}, follow=True)
    text = _messages(response)
    assert "Only the first 2 of 3 selected breaks" in text and "2 break(s) closed" in text
    assert ReconciliationBreak.objects.filter(status="open").count() == 1


def test_a_capped_bulk_resend_says_how_many_of_how_many(client, merchant, settings,
                                                        monkeypatch):
    from backoffice.admin import webhooks as webhooks_admin

    monkeypatch.setattr(webhooks_admin, "BULK_LIMIT", 1)
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook",
                             enabled_events=["*"])
    for n in range(2):
        webhooks.event_record(merchant=merchant, type="payment.captured",
                              obj={"id": f"pay_{n}", "object": "payment"})
    _staff(client, "operator")
    response = client.post("/admin/webhooks/webhookdelivery/", {
        "action": "resend", "_selected_action": list(
            WebhookDelivery.objects.values_list("pk", flat=True))}, follow=True)
    assert "Only the first 1 of 2 selected deliveries" in _messages(response)
    assert WebhookDelivery.objects.count() == 3


def test_breaks_filter_by_age(client):
    old, new = _break("old"), _break("new")
    ReconciliationBreak.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=10))
    _staff(client, "viewer")
    page = client.get("/admin/reconciliation/reconciliationbreak/", {"age": "7d"})
    assert [b.id for b in page.context["cl"].result_list] == [old.id]
    assert new.id not in [b.id for b in page.context["cl"].result_list]


# -- the ledger ------------------------------------------------------------------------------
def test_verify_now_runs_in_a_task_and_shows_the_result(client, make_payment,
                                                        django_capture_on_commit_callbacks):
    make_payment(10_000)
    _staff(client, "approver")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/backoffice/ledgerverifyrun/start/", follow=True)
    assert "is queued" in _messages(response)
    run = LedgerVerifyRun.objects.get()
    assert run.status == "passed" and run.entries >= 1 and run.postings >= 2
    assert "OK" in run.report
    assert ledger_verify_execute(run_id=run.pk) is None  # a redelivered task does nothing
    page = client.get("/admin/backoffice/ledgerverifyrun/").content.decode()
    assert "Passed" in page and "Verify now" in page


def test_balances_per_merchant_and_currency(client, make_payment, merchant):
    make_payment(10_000)
    make_payment(5_000, currency="eur")
    _staff(client, "viewer")
    page = client.get("/admin/ledger/account/balances/", {"merchant": merchant.id})
    text = page.content.decode()
    assert "100.00 USD" in text and "50.00 EUR" in text
    accounts = client.get("/admin/ledger/account/").content.decode()
    assert "Balances per merchant" in accounts and "Request an adjustment" not in accounts
