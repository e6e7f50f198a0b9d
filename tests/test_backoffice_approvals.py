"""Maker-checker: refunds above the threshold, manual ledger adjustments and disputes accepted as
lost wait for a different approver; approval runs the service exactly once; both steps are
recorded."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction

from backoffice import services
from backoffice.audit import Actor
from backoffice.models import ApprovalRequest, AuditEntry
from core.errors import InvalidRequest, StateError
from ledger.models import Account, JournalEntry
from payments import services as payments
from payments.models import Dispute, Refund


def _user(role: str, name: str | None = None):
    user = get_user_model().objects.create_user(name or role, password="pw-12345678",
                                                is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return get_user_model().objects.get(pk=user.pk)  # fresh: no cached permissions


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
