"""Admin for merchants and API keys. A new key is shown once, in the message after saving.

Every add, change and revocation is written to the staff audit log (never the key itself: only
its prefix and state).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from backoffice.admin_audit import AuditedModelAdmin
from backoffice.admin_ids import TolerantIdsMixin
from backoffice.audit import Actor, audit_record, snapshot
from core.models import ApiKey, Merchant
from core.services import api_key_create, api_key_revoke

API_KEY_FIELDS = ("id", "merchant", "name", "prefix", "is_live", "created_at", "revoked_at")


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("id", "name", "prefix", "is_live", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Merchant)
class MerchantAdmin(TolerantIdsMixin, AuditedModelAdmin):
    list_display = ("name", "id", "is_live", "created_at")
    search_fields = ("name", "=id")
    list_filter = ("is_live",)
    readonly_fields = ("id", "created_at")
    inlines = [ApiKeyInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Merchant | None = None):
        # A merchant's mode is fixed once it exists (a trigger enforces it): live and test
        # objects never mix.
        return (*self.readonly_fields, "is_live") if obj else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # payments, refunds and ledger rows point at it (PROTECT)


@admin.register(ApiKey)
class ApiKeyAdmin(TolerantIdsMixin, AuditedModelAdmin):
    list_display = ("prefix", "merchant", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("is_live",)
    search_fields = ("prefix", "merchant__name", "=merchant__id")
    list_select_related = ("merchant",)
    fields = ("merchant", "name")
    actions = ["revoke"]
    audit_fields = API_KEY_FIELDS  # never the hash

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        # An existing key can only be renamed or revoked, never re-pointed to another merchant.
        return ("merchant",) if obj else ()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            self.audit_before(request, obj, change)
            # The name only: a full save could overwrite last_used_at written meanwhile.
            obj.save(update_fields=["name"])
            return
        issued = api_key_create(merchant=obj.merchant, name=obj.name)
        obj.pk = issued.api_key.pk
        obj._state.adding = False
        messages.warning(
            request,
            f"New API key (shown only now, copy it): {issued.raw_key}",
        )

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys (requests with them answer 401)",
                  permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = Actor.from_request(request)
        keys = list(queryset)
        for key in keys:
            with transaction.atomic():
                before = snapshot(key, API_KEY_FIELDS)
                api_key_revoke(api_key=key)
                key.refresh_from_db()
                audit_record(actor=actor, action="apikey.revoke", object_type="core.apikey",
                             object_id=key.pk, before=before, after=snapshot(key, API_KEY_FIELDS))
        messages.success(request, f"Revoked {len(keys)} key(s).")
