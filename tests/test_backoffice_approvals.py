"""Maker-checker: refunds above the threshold, manual ledger adjustments and disputes accepted as
lost wait for a different approver; approval runs the service exactly once; both steps are
recorded."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction

from backoffice import services
from backoffice.audit import Actor
from backoffice.models import ApprovalRequest, AuditEntry
from core.errors import InvalidRequest, StateError
from ledger.models import Account, JournalEntry
from payments import services as payments
from payments.models import Dispute, Refund
from tests.factories import staff_user


def _user(role: str, name: str | None = None):
    return staff_user(role, name)


def _actor(role: str, name: str | None = None) -> Actor:
    return Actor(user=_user(role, name), ip_address="10.0.0.1")


def _refund_request(payment, maker: Actor, amount: int = 60_000) -> ApprovalRequest:
    outcome = services.refund_request(actor=maker, payment_id=payment.id, amount=amount,
                                      reason="requested_by_customer", note="Customer asked")
    assert outcome.refund is None and outcome.approval is not None
    return outcome.approval


@pytest.mark.django_db
def test_approving_a_refund_runs_it_once_and_records_both_people(make_payment):
    payment = make_payment(100_000)
    maker, checker = _actor("operator"), _actor("approver")
    approval = _refund_request(payment, maker)
    done = services.approval_decide(actor=checker, approval_id=approval.id, approve=True,
                                    comment="Matches the ticket")
    assert done.status == "executed"
    refund = Refund.objects.get(payment=payment)
    assert (refund.amount, refund.status, refund.idempotency_key) == (60_000, "succeeded",
                                                                       approval.id)
    assert done.result == {"refund": refund.id, "refund_status": "succeeded"}
    assert (done.requested_by, done.decided_by) == (maker.user, checker.user)
    # Running it again (a retry, a double click) changes nothing.
    assert services.approval_execute(actor=checker, approval_id=approval.id).status == "executed"
    with pytest.raises(StateError):
        services.approval_decide(actor=checker, approval_id=approval.id, approve=True,
                                 comment="again")
    assert Refund.objects.filter(payment=payment).count() == 1
    actions = list(AuditEntry.objects.filter(object_id__in=[approval.id, payment.id])
                   .order_by("id").values_list("action", "actor_username"))
    assert actions == [("approval.request", "operator"), ("approval.approve", "approver"),
                       ("payment.refund", "approver"), ("payment.refund.result", "approver"),
                       ("approval.execute", "approver")]


@pytest.mark.django_db
def test_self_approval_is_refused_even_for_an_admin(make_payment):
    payment = make_payment(100_000)
    boss = _actor("admin", "boss")
    approval = _refund_request(payment, boss)
    with pytest.raises(PermissionDenied, match="a different approver"):
        services.approval_decide(actor=boss, approval_id=approval.id, approve=True,
                                 comment="mine")
    approval.refresh_from_db()
    assert approval.status == "pending" and not Refund.objects.exists()


@pytest.mark.django_db
def test_the_database_refuses_self_approval_and_decisions_without_a_comment(make_payment):
    payment = make_payment(100_000)
    maker = _actor("operator")
    approval = _refund_request(payment, maker)
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=approval.pk).update(
            status="approved", decided_by=maker.user, decided_at=approval.requested_at,
            decision_comment="sneaky")
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=approval.pk).update(
            status="approved", decided_by=_user("approver"), decided_at=approval.requested_at)


@pytest.mark.django_db
def test_an_operator_cannot_approve_and_a_rejection_changes_nothing(make_payment):
    payment = make_payment(100_000)
    approval = _refund_request(payment, _actor("operator"))
    with pytest.raises(PermissionDenied):
        services.approval_decide(actor=_actor("operator", "op2"), approval_id=approval.id,
                                 approve=True, comment="I am not an approver")
    with pytest.raises(InvalidRequest, match="Write why"):
        services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                 approve=False, comment="  ")
    rejected = services.approval_decide(actor=_actor("approver", "ap2"), approval_id=approval.id,
                                        approve=False, comment="No ticket")
    assert rejected.status == "rejected" and not Refund.objects.exists()


@pytest.mark.django_db
def test_a_refund_refused_at_approval_time_marks_the_request_failed(make_payment):
    payment = make_payment(100_000)
    approval = _refund_request(payment, _actor("operator"), amount=90_000)
    # Meanwhile, another refund took most of the money.
    payments.refund_create(merchant=payment.merchant, payment_id=payment.id, amount=50_000)
    done = services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                    approve=True, comment="ok")
    assert done.status == "failed" and "remains refundable" in done.error
    assert Refund.objects.filter(payment=payment).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_approvers_racing_refund_once(make_payment):
    payment = make_payment(100_000)
    approval = _refund_request(payment, _actor("operator"))
    checkers = [_actor("approver", f"approver{i}") for i in range(4)]
    barrier, outcomes = threading.Barrier(len(checkers)), []

    def decide(actor: Actor) -> None:
        try:
            barrier.wait()
            outcomes.append(services.approval_decide(
                actor=actor, approval_id=approval.id, approve=True, comment="go").status)
        except StateError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(c,)) for c in checkers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["executed", "refused", "refused", "refused"]
    assert Refund.objects.filter(payment=payment).count() == 1
    assert AuditEntry.objects.filter(action="approval.approve").count() == 1


@pytest.mark.django_db
def test_a_manual_ledger_adjustment_posts_only_after_approval(merchant, make_payment):
    make_payment(10_000)
    maker, checker = _actor("operator"), _actor("approver")
    approval = services.ledger_adjustment_request(
        actor=maker, merchant_id=merchant.id, currency="usd", account_kind="pending",
        direction="credit", counter_account="fees", amount=250, note="Fee refund, ticket 9")
    assert not JournalEntry.objects.filter(kind="adjustment").exists()
    done = services.approval_decide(actor=checker, approval_id=approval.id, approve=True,
                                    comment="Checked the statement")
    entry = JournalEntry.objects.get(kind="adjustment")
    assert done.status == "executed" and done.result == {"journal_entry": entry.id}
    assert (entry.reference_type, entry.reference_id) == ("approval", approval.id)
    assert "approved by approver" in entry.description
    pending = Account.objects.get(merchant=merchant, currency="usd", kind="pending")
    assert pending.balance == 10_250
    services.approval_execute(actor=checker, approval_id=approval.id)
    assert JournalEntry.objects.filter(kind="adjustment").count() == 1


@pytest.mark.django_db
def test_an_adjustment_that_would_overdraw_fails_at_approval(merchant):
    approval = services.ledger_adjustment_request(
        actor=_actor("operator"), merchant_id=merchant.id, currency="usd",
        account_kind="available", direction="debit", counter_account="fees", amount=100,
        note="Chargeback fee")
    done = services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                    approve=True, comment="ok")
    assert done.status == "failed" and "Insufficient funds" in done.error
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db
def test_adjustment_requests_are_checked_before_anyone_is_asked(merchant):
    maker = _actor("operator")
    base = {"actor": maker, "merchant_id": merchant.id, "currency": "usd",
            "account_kind": "available", "direction": "credit", "counter_account": "fees",
            "amount": 100, "note": "why"}
    for change, param in [({"merchant_id": "acct_nope"}, "merchant"),
                          ({"currency": "xxx"}, "currency"),
                          ({"account_kind": "reserved"}, "account_kind"),
                          ({"counter_account": "provider_clearing:nowhere"}, "counter_account"),
                          ({"amount": 0}, "amount"), ({"note": ""}, "note")]:
        with pytest.raises(Exception) as raised:
            services.ledger_adjustment_request(**{**base, **change})
        assert getattr(raised.value, "param", None) == param
    with pytest.raises(PermissionDenied):
        services.ledger_adjustment_request(**{**base, "actor": _actor("viewer")})
    assert not ApprovalRequest.objects.exists()


@pytest.mark.django_db
def test_accepting_a_dispute_as_lost_needs_an_approver(make_payment):
    payment = make_payment(10_000)
    dispute = payments.dispute_open(payment_id=payment.id, amount=3000)
    maker = _actor("operator")
    approval = services.dispute_accept_request(actor=maker, dispute_id=dispute.id,
                                               note="Merchant has no proof of delivery")
    again = services.dispute_accept_request(actor=maker, dispute_id=dispute.id, note="again")
    assert again.id == approval.id
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    done = services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                    approve=True, comment="Agreed")
    assert done.status == "executed"
    dispute = Dispute.objects.get(pk=dispute.id)
    payment.refresh_from_db()
    assert dispute.status == "lost" and payment.status == "charged_back"


@pytest.mark.django_db
def test_marking_a_dispute_lost_waits_for_a_different_approver(make_payment):
    payment = make_payment(10_000)
    dispute = payments.dispute_open(payment_id=payment.id, amount=3000)
    maker = _actor("operator")
    decision = services.dispute_decision_record(actor=maker, dispute_id=dispute.id, won=False,
                                                note="Acquirer letter 2026-03-02",
                                                decision_reference="DEC-77")
    approval = decision.approval
    assert approval is not None and approval.kind == "dispute_accept"
    assert approval.params == {"dispute_id": dispute.id, "decision": "lost",
                               "decision_reference": "DEC-77"}
    payment.refresh_from_db()
    assert Dispute.objects.get(pk=dispute.id).status == "needs_response"
    assert payment.status == "captured"
    with pytest.raises(PermissionDenied):  # the maker is no approver, let alone a second one
        services.approval_decide(actor=maker, approval_id=approval.id, approve=True,
                                 comment="mine")
    done = services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                    approve=True, comment="Letter checked")
    payment.refresh_from_db()
    assert done.status == "executed" and Dispute.objects.get(pk=dispute.id).status == "lost"
    assert payment.status == "charged_back"


@pytest.mark.django_db
def test_a_won_decision_needs_the_providers_decision_reference(make_payment):
    payment = make_payment(10_000)
    dispute = payments.dispute_open(payment_id=payment.id, amount=3000)
    operator = _actor("operator")
    with pytest.raises(InvalidRequest) as missing:
        services.dispute_decision_record(actor=operator, dispute_id=dispute.id, won=True,
                                         note="Letter", decision_reference="  ")
    assert missing.value.param == "decision_reference"
    assert Dispute.objects.get(pk=dispute.id).status == "needs_response"
    decision = services.dispute_decision_record(actor=operator, dispute_id=dispute.id,
                                                won=True, note="Letter",
                                                decision_reference="WIN-1")
    assert decision.approval is None and decision.dispute.status == "won"
    row = AuditEntry.objects.get(action="dispute.won")
    assert row.after["decision_reference"] == "WIN-1" and "WIN-1" in row.note


@pytest.mark.django_db
def test_refunds_split_under_the_threshold_add_up_and_need_an_approver(make_payment):
    payment = make_payment(200_000)  # threshold: 500.00 USD
    operator = _actor("operator")
    first = services.refund_request(actor=operator, payment_id=payment.id, amount=30_000,
                                    reason="duplicate", note="part 1")
    assert first.refund is not None and first.approval is None
    second = services.refund_request(actor=operator, payment_id=payment.id, amount=30_000,
                                     reason="duplicate", note="part 2")
    assert second.refund is None and second.approval is not None  # 600.00 in all
    # Refunds the merchant made through the API do not count against staff.
    payments.refund_create(merchant=payment.merchant, payment_id=payment.id, amount=100_000)
    third = services.refund_request(actor=operator, payment_id=payment.id, amount=10_000,
                                    reason="duplicate", note="part 3")
    assert third.refund is not None
    assert Refund.objects.filter(metadata__source="backoffice").count() == 2


@pytest.mark.django_db
def test_an_approved_refund_keeps_the_maker_and_the_approver(client, make_payment):
    payment = make_payment(100_000)
    approval = _refund_request(payment, _actor("operator", "maker"))
    services.approval_decide(actor=_actor("approver", "checker"), approval_id=approval.id,
                             approve=True, comment="ok")
    refund = Refund.objects.get(payment=payment)
    assert (refund.metadata["requested_by"], refund.metadata["approved_by"],
            refund.metadata["approval"]) == ("maker", "checker", approval.id)
    client.force_login(_user("viewer"))
    page = client.get(f"/admin/payments/payment/{payment.id}/change/").content.decode()
    timeline = page[page.index('id="bo-timeline"'):]
    assert "maker" in timeline and "approved by" in timeline and "checker" in timeline


def _approved_not_run(payment, monkeypatch) -> ApprovalRequest:
    """An approval decided, whose action has not run yet (the decision committed, the run
    is still going or the server died)."""
    approval = _refund_request(payment, _actor("operator"))
    with monkeypatch.context() as patched:
        patched.setattr(services, "approval_execute", lambda **kwargs: None)
        services.approval_decide(actor=_actor("approver"), approval_id=approval.id,
                                 approve=True, comment="ok")
    approval.refresh_from_db()
    assert approval.status == "approved"
    return approval


@pytest.mark.django_db
def test_a_rerun_while_the_first_refund_is_at_the_provider_does_not_send_it_again(
        make_payment, monkeypatch):
    payment = make_payment(100_000)
    approval = _approved_not_run(payment, monkeypatch)
    # The first run reserved the refund and is still waiting for the provider's answer.
    with monkeypatch.context() as patched:
        patched.setattr(payments, "_refund_send", lambda refund, attempt: refund)
        in_flight = payments.refund_create(merchant=payment.merchant, payment_id=payment.id,
                                           amount=60_000, idempotency_key=approval.id)
    assert in_flight.status == "pending"
    sent = []
    monkeypatch.setattr(payments, "_refund_send", lambda *args: sent.append(args))
    done = services.approval_execute(actor=_actor("approver", "ap2"), approval_id=approval.id)
    assert done.status == "executed" and done.error == ""
    assert done.result == {"refund": in_flight.id, "refund_status": "pending"}
    assert sent == [] and not AuditEntry.objects.filter(action="payment.refund").exists()


@pytest.mark.django_db
def test_a_rerun_that_loses_the_race_to_the_first_run_is_not_marked_failed(
        make_payment, monkeypatch):
    """The first run's reservation commits between the re-run's look-up and its own: the re-run
    is refused ("more than remains refundable"), but the refund exists, so it is executed."""
    payment = make_payment(100_000)
    approval = _approved_not_run(payment, monkeypatch)
    real_create = payments.refund_create

    def first_run_wins(**kwargs):
        real_create(merchant=payment.merchant, payment_id=payment.id, amount=60_000,
                    idempotency_key=approval.id)
        raise StateError("Refund amount 60000 is more than the 40000 usd that remains "
                         "refundable.")

    monkeypatch.setattr(payments, "refund_create", first_run_wins)
    done = services.approval_execute(actor=_actor("approver", "ap2"), approval_id=approval.id)
    refund = Refund.objects.get(payment=payment)
    assert done.status == "executed" and done.error == ""
    assert done.result == {"refund": refund.id, "refund_status": "succeeded"}
