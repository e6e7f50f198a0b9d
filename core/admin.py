"""Admin for merchants and API keys. A new key is shown once, in the message after saving."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from core.models import ApiKey, Merchant
from core.services import api_key_create, api_key_revoke


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("id", "name", "prefix", "is_live", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "is_live", "created_at")
    search_fields = ("name", "id")
    list_filter = ("is_live",)
    readonly_fields = ("id", "created_at")
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "merchant", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("is_live",)
    search_fields = ("prefix", "merchant__name", "merchant__id")
    list_select_related = ("merchant",)
    fields = ("merchant", "name")
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        # An existing key can only be renamed or revoked, never re-pointed to another merchant.
        return ("merchant",) if obj else ()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        issued = api_key_create(merchant=obj.merchant, name=obj.name)
        obj.pk = issued.api_key.pk
        messages.warning(
            request,
            f"New API key (shown only now, copy it): {issued.raw_key}",
        )

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys (requests with them answer 401)")
    def revoke(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for key in queryset:
            api_key_revoke(api_key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")
