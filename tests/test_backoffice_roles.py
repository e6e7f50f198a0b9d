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


def _account_form(user, **changes: object) -> dict[str, object]:
    """The user change form as the admin posts it, with `changes` applied."""
    form = {"username": user.username, "first_name": "", "last_name": "", "email": "",
            "is_active": "on", "is_staff": "on", "last_login_0": "", "last_login_1": "",
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
            "groups": list(user.groups.values_list("pk", flat=True))}
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_the_admin_role_cannot_make_itself_superuser_or_grant_itself_anything(client):
    boss = get_user_model().objects.create_user("boss", password="pw-12345678", is_staff=True)
    boss.groups.add(Group.objects.get(name="admin"))
    client.force_login(boss)
    url = f"/admin/auth/user/{quote(boss.pk)}/change/"
    page = client.get(url)
    assert page.status_code == 200
    form_fields = page.context["adminform"].form.fields
    assert not {"is_superuser", "user_permissions", "groups"} & set(form_fields)
    delete_users = Permission.objects.get(codename="delete_user")
    response = client.post(url, _account_form(
        boss, is_superuser="on", user_permissions=[delete_users.pk],
        groups=[Group.objects.get(name=name).pk for name in ("admin", "approver")]))
    assert response.status_code == 302
    boss.refresh_from_db()
    assert not boss.is_superuser and not boss.user_permissions.exists()
    assert list(boss.groups.values_list("name", flat=True)) == ["admin"]


def test_the_admin_role_grants_roles_to_others_but_never_superuser(client):
    boss = get_user_model().objects.create_user("boss", password="pw-12345678", is_staff=True)
    boss.groups.add(Group.objects.get(name="admin"))
    newbie = get_user_model().objects.create_user("newbie", is_staff=True)
    client.force_login(boss)
    response = client.post(f"/admin/auth/user/{quote(newbie.pk)}/change/", _account_form(
        newbie, is_superuser="on", groups=[Group.objects.get(name="approver").pk],
        user_permissions=[Permission.objects.get(codename="delete_user").pk]))
    assert response.status_code == 302
    newbie.refresh_from_db()
    assert not newbie.is_superuser and not newbie.user_permissions.exists()
    assert list(newbie.groups.values_list("name", flat=True)) == ["approver"]
    group = Group.objects.get(name="admin")
    before = set(group.permissions.values_list("pk", flat=True))
    client.post(f"/admin/auth/group/{group.pk}/change/", {
        "name": "admin", "permissions": [*before, Permission.objects.get(
            codename="delete_user").pk]})
    assert set(group.permissions.values_list("pk", flat=True)) == before


def test_a_superuser_still_edits_every_field(client):
    root = get_user_model().objects.create_superuser("root", "r@example.com", "pw-12345678")
    newbie = get_user_model().objects.create_user("newbie", is_staff=True)
    client.force_login(root)
    response = client.post(f"/admin/auth/user/{quote(newbie.pk)}/change/", _account_form(
        newbie, is_superuser="on"))
    assert response.status_code == 302
    newbie.refresh_from_db()
    assert newbie.is_superuser
