"""The staff audit log: append-only in PostgreSQL, written in the action's transaction, and
visible and filterable in the admin; generic admin edits (routing rules, roles) are in it too."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction

from backoffice import services
from backoffice.audit import Actor, audit_record
from backoffice.models import AuditEntry
from core.errors import StateError
from payments import services as payments
from payments.models import Refund
from providers.models import RoutingRule
from tests.factories import staff_user

pytestmark = pytest.mark.django_db


def _user(role: str, name: str | None = None):
    return staff_user(role, name)


def _entry() -> AuditEntry:
    return audit_record(actor=Actor(user=None), action="payment.refund", object_type="payment",
                        object_id="pay_1", before={"status": "captured"})


def test_a_raw_update_of_the_audit_table_fails():
    entry = _entry()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE backoffice_auditentry SET note = 'edited' WHERE id = %s",
                           [entry.pk])
    entry.refresh_from_db()
    assert entry.note == ""


def test_a_raw_delete_of_the_audit_table_fails():
    entry = _entry()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM backoffice_auditentry WHERE id = %s", [entry.pk])
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(action="nothing")
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_the_audit_row_shares_the_action_transaction(make_payment, monkeypatch):
    """No change without its trail (an audit write that fails undoes the decision), and no
    trail of what did not happen (a refused decision leaves no row)."""
    payment = make_payment(10_000)
    dispute = payments.dispute_open(payment_id=payment.id, amount=1000)
    operator = Actor(user=_user("operator"))

    def broken_audit(**kwargs: object) -> None:
        raise DatabaseError("audit table unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(services, "audit_record", broken_audit)
        with pytest.raises(DatabaseError):
            services.dispute_decision_record(actor=operator, dispute_id=dispute.id, won=True,
                                             note="Provider letter 4", decision_reference="D-4")
    dispute.refresh_from_db()
    payment.refresh_from_db()
    assert dispute.status == "needs_response" and payment.amount_disputed == 1000
    services.dispute_decision_record(actor=operator, dispute_id=dispute.id, won=True,
                                     note="Provider letter 5", decision_reference="D-5")
    assert AuditEntry.objects.filter(action="dispute.won", object_id=dispute.id).count() == 1
    with pytest.raises(StateError):
        services.dispute_decision_record(actor=operator, dispute_id=dispute.id, won=False,
                                         note="again", decision_reference="D-6")
    assert not AuditEntry.objects.filter(action__in=["dispute.lost", "approval.request"]
                                         ).exists()


def test_a_capture_refused_before_anything_is_reserved_leaves_no_intent_row(make_payment):
    """The intent row is written in the payments service's reservation transaction: a refusal
    there leaves only the `.result` row saying why, never a "started" row for nothing."""
    payment = make_payment(5000, state="authorized")
    payments.payment_cancel(merchant=payment.merchant, payment_id=payment.id)
    with pytest.raises(StateError):
        services.payment_capture_by_staff(actor=Actor(user=_user("operator")),
                                          payment_id=payment.id)
    assert list(AuditEntry.objects.values_list("action", flat=True)) == [
        "payment.capture.result"]


def test_the_refund_intent_row_rolls_back_with_the_reservation(make_payment, monkeypatch):
    """A reservation that fails after the intent row was written takes the row with it."""
    payment = make_payment(10_000)

    def broken_ledger(**kwargs: object) -> None:
        raise DatabaseError("ledger unavailable")

    monkeypatch.setattr(payments.ledger, "post_refund_created", broken_ledger)
    with pytest.raises(DatabaseError):
        services.refund_request(actor=Actor(user=_user("operator")), payment_id=payment.id,
                                amount=1000, reason="duplicate", note="ticket 1")
    assert not Refund.objects.exists()
    assert not AuditEntry.objects.filter(action="payment.refund").exists()


def test_the_audit_log_is_visible_filterable_and_read_only_in_the_admin(client, make_payment):
    payment = make_payment(10_000)
    operator = _user("operator")
    services.dispute_open_from_notice(actor=Actor(user=operator, ip_address="192.0.2.7"),
                                      payment_id=payment.id, provider_reference="n-1",
                                      reason="general", note="fax")
    _entry()
    client.force_login(_user("viewer"))
    listing = client.get("/admin/backoffice/auditentry/", {"action": "dispute.open"})
    rows = list(listing.context["cl"].result_list)
    assert [row.action for row in rows] == ["dispute.open"]
    assert "192.0.2.7" in listing.content.decode()
    by_actor = client.get("/admin/backoffice/auditentry/", {"actor": operator.pk})
    assert {row.actor_id for row in by_actor.context["cl"].result_list} == {operator.pk}
    by_object = client.get("/admin/backoffice/auditentry/", {"q": payment.id})
    assert len(by_object.context["cl"].result_list) == 1
    detail = client.get(f"/admin/backoffice/auditentry/{quote(rows[0].pk)}/change/")
    assert detail.status_code == 200 and "amount_disputed" in detail.content.decode()
    admin_user = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin_user)
    assert client.post(f"/admin/backoffice/auditentry/{quote(rows[0].pk)}/delete/",
                       {"post": "yes"}).status_code == 403
    assert client.get("/admin/backoffice/auditentry/add/").status_code == 403


def test_routing_rule_edits_and_role_grants_are_audited(client):
    admin_user = _user("admin", "boss")
    client.force_login(admin_user)
    response = client.post("/admin/providers/routingrule/add/", {
        "name": "BRL to Getnet", "priority": 5, "is_active": "on", "currency": "BRL",
        "merchant_id": "", "payment_method_brand": "",
        "targets-TOTAL_FORMS": "1", "targets-INITIAL_FORMS": "0",
        "targets-0-provider": "getnet", "targets-0-position": "0", "targets-0-weight": "0"})
    assert response.status_code == 302
    rule = RoutingRule.objects.get(name="BRL to Getnet")
    row = AuditEntry.objects.get(action="admin.add", object_type="providers.routingrule")
    assert row.object_id == str(rule.pk) and row.actor == admin_user
    assert row.after["targets"] == [{"provider": "getnet", "position": 0, "weight": 0}]

    newbie = get_user_model().objects.create_user("newbie", is_staff=True)
    response = client.post(f"/admin/auth/user/{quote(newbie.pk)}/change/", {
        "username": "newbie", "is_active": "on", "is_staff": "on",
        "groups": [Group.objects.get(name="approver").pk], "last_login_0": "",
        "last_login_1": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert response.status_code == 302, response.content.decode()[:2000]
    grant = AuditEntry.objects.get(action="admin.change", object_type="auth.user")
    assert grant.before["groups"] == [] and grant.after["groups"] == ["approver"]
    assert "password" not in grant.after
