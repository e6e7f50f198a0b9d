"""Building blocks every app's admin shares: read-only model admins and list filters that only
ever apply a value they offer (a typo or a NUL byte never reaches PostgreSQL)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from providers.registry import registered_codes


class ReadOnlyAdminMixin:
    """Nobody adds, edits or deletes these rows in the admin: changes go through services."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


class ChoicesOnlyFilter(admin.SimpleListFilter):
    """A filter that applies only a value it offers: anything else (a typo, a NUL byte, which
    PostgreSQL refuses in a text literal) is ignored, not sent to the database."""

    field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value or value not in {str(code) for code, _ in self.lookup_choices}:
            return queryset
        return queryset.filter(**{self.field: value})


class ProviderFilter(ChoicesOnlyFilter):
    """Registered providers as choices (the default would run SELECT DISTINCT on the table)."""

    title = "provider"
    parameter_name = "provider"
    field = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in registered_codes()]
