"""Roles are groups with explicit permissions; nobody may add, change or delete a money row."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from backoffice.roles import roles_sync

pytestmark = pytest.mark.django_db

MONEY_MODELS = ["payment", "refund", "paymentattempt", "dispute", "account", "journalentry",
                "posting", "event", "webhookdelivery", "providerevent", "auditentry",
                "approvalrequest", "ledgerverifyrun"]


def _codes(group: str) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}"
            for p in Group.objects.get(name=group).permissions.select_related("content_type")}


def test_the_migration_creates_four_roles_with_explicit_permissions():
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator",
                                                                 "approver", "admin"}
    viewer, operator, approver, admin = (_codes(name) for name in
                                         ("viewer", "operator", "approver", "admin"))
    assert {"payments.view_payment", "ledger.view_posting", "webhooks.view_providerevent",
            "backoffice.view_auditentry", "reconciliation.view_reconciliationbreak"} <= viewer
    assert not any(code.startswith("backoffice.") and not code.split(".")[1].startswith("view_")
                   for code in viewer)
    assert {"backoffice.refund_payment", "backoffice.resolve_break",
            "backoffice.resend_webhook"} <= operator
    assert "backoffice.approve_request" not in operator
    assert "backoffice.approve_request" in approver
    assert "backoffice.refund_payment" not in approver
    assert {"backoffice.approve_request", "backoffice.refund_payment", "auth.change_user",
            "providers.change_routingrule"} <= admin


def test_no_role_may_add_change_or_delete_a_money_row():
    for group in Group.objects.filter(name__in=["viewer", "operator", "approver", "admin"]):
        for code in _codes(group.name):
            _, codename = code.split(".")
            verb, _sep, model = codename.partition("_")
            assert not (verb in ("add", "change", "delete") and model in MONEY_MODELS), code


def test_roles_sync_is_authoritative_and_idempotent():
    viewer = Group.objects.get(name="viewer")
    viewer.permissions.add(Permission.objects.get(codename="approve_request"))
    roles_sync(apps)
    roles_sync(apps)
    assert "backoffice.approve_request" not in _codes("viewer")
    assert Group.objects.filter(name="viewer").count() == 1


def test_a_viewer_cannot_add_change_or_delete_payments_even_via_the_admin(client, make_payment):
    user = get_user_model().objects.create_user("vera", password="pw-12345678", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    payment = make_payment(state="captured")
    assert client.get(f"/admin/payments/payment/{quote(payment.id)}/change/").status_code == 200
    assert client.get("/admin/payments/payment/add/").status_code == 403
    assert client.post(f"/admin/payments/payment/{quote(payment.id)}/delete/",
                       {"post": "yes"}).status_code == 403
