"""The four roles, as Django groups with explicit permissions: viewer, operator, approver, admin.

Roles are code, reviewed like code: `roles_sync` makes each group hold exactly the permissions
listed here (a permission added by hand in the admin is removed at the next migrate). Nobody gets
change/add/delete on a money table: payments, refunds, disputes, ledger rows, events, deliveries
and breaks change only through the actions below, which call the owning app's services.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.apps.registry import Apps
from django.db.models import Q

VIEWER, OPERATOR, APPROVER, ADMIN = "viewer", "operator", "approver", "admin"

# "viewer: read everything" — every model of these apps, through their view permission.
VIEW_APPS = ("core", "payments", "ledger", "webhooks", "providers", "reconciliation", "wallet",
             "backoffice")
# Exports take whole tables out of the building: finance roles (operator, approver, admin) may,
# a viewer reads on screen only. Each export writes an audit row (backoffice.exports).

OPERATOR_ACTIONS = (
    "refund_payment", "capture_payment", "cancel_payment", "open_dispute", "manage_dispute",
    "accept_dispute", "resend_webhook", "replay_provider_event", "resolve_break",
    "request_ledger_adjustment", "request_decline_rule_change", "run_ledger_verify",
    "export_data",
)
APPROVER_ACTIONS = ("approve_request", "run_ledger_verify", "export_data")

# What only an admin may edit: staff accounts and roles, merchants and their keys, routing
# rules (data that steers live traffic) and staff TOTP devices. Never a money row.
ADMIN_MODEL_PERMISSIONS = (
    "auth.view_user", "auth.add_user", "auth.change_user",
    "auth.view_group", "auth.change_group",
    "core.add_merchant", "core.change_merchant",
    "core.add_apikey", "core.change_apikey",
    "providers.add_routingrule", "providers.change_routingrule",
    "providers.delete_routingrule",
    "providers.add_routingtarget", "providers.change_routingtarget",
    "providers.delete_routingtarget",
    "otp_totp.view_totpdevice", "otp_totp.add_totpdevice", "otp_totp.change_totpdevice",
    "otp_totp.delete_totpdevice",
)


def _backoffice(codenames: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("backoffice", codename) for codename in codenames]


def role_permissions() -> dict[str, list[tuple[str, str]]]:
    """(app_label, codename) pairs per role, on top of the view permissions everyone gets."""
    admin_extra = [tuple(p.split(".", 1)) for p in ADMIN_MODEL_PERMISSIONS]
    return {
        VIEWER: [],
        OPERATOR: _backoffice(OPERATOR_ACTIONS),
        APPROVER: _backoffice(APPROVER_ACTIONS),
        ADMIN: sorted({*_backoffice(OPERATOR_ACTIONS), *_backoffice(APPROVER_ACTIONS),
                       *admin_extra}),  # type: ignore[arg-type]
    }


def roles_sync(apps: Apps) -> None:
    """Create the four groups and set their permissions exactly. Works with the migration's
    historical registry and the live one alike; permissions of apps not installed are skipped."""
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    views = list(permission_model.objects.filter(content_type__app_label__in=VIEW_APPS,
                                                 codename__startswith="view_"))
    for role, pairs in role_permissions().items():
        wanted = Q(pk__in=[])
        for app_label, codename in pairs:
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        extra = list(permission_model.objects.filter(wanted)) if pairs else []
        group, _ = group_model.objects.get_or_create(name=role)
        group.permissions.set([*views, *extra])


def roles_sync_after_migrate(sender: AppConfig, **kwargs: Any) -> None:
    """post_migrate for this app: runs after every other app's permissions exist, since the
    back-office is the last installed app."""
    from django.apps import apps

    roles_sync(apps)
