"""Building blocks every admin page shares: read-only model admins and list filters that only
ever apply a value they offer (a typo or a NUL byte never reaches PostgreSQL). Filters that know
another app's data live in backoffice.admin_filters."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html


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


def status_badge(value: str, label: str) -> str:
    """A status as the coloured label every list and detail page uses (styles in bo.css)."""
    return format_html('<span class="bo-status bo-status-{}">{}</span>', value, label)
