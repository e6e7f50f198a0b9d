"""Building blocks every admin page shares: read-only model admins and list filters that only
ever apply a value they offer (a typo or a NUL byte never reaches PostgreSQL). Filters that know
another app's data live in backoffice.admin_filters."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Case, IntegerField, Model, QuerySet, Value, When
from django.http import HttpRequest
from django.urls import URLPattern, path
from django.utils.html import format_html

from backoffice.paginator import CappedCountPaginator


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


class ExtraPagesMixin:
    """An admin's own pages (a form, a report) ahead of its standard URLs: `extra_pages` lists
    (route, view method, URL name); each view is wrapped by admin_view (staff login)."""

    extra_pages: tuple[tuple[str, str, str], ...] = ()

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view  # type: ignore[attr-defined]
        return [*(path(route, wrap(getattr(self, view)), name=name)
                  for route, view, name in self.extra_pages),
                *super().get_urls()]  # type: ignore[misc]


class LargeTableMixin:
    """For a table that grows without bound: no COUNT(*) over all its rows on every page view,
    and a paginator whose count stops at a cap."""

    show_full_result_count = False
    paginator = CappedCountPaginator


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


class StatusBadgeMixin:
    """The `status_label` column: the row's status (a choices field) as its coloured badge."""

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Any) -> str:
        return status_badge(obj.status, obj.get_status_display())


INLINE_LINES = 200  # an imported file may hold 100,000 lines: problems first, then these


class ProblemsFirstLinesInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The lines of an imported file (settlement file, bank statement): those not matched first,
    then by line number, at most INLINE_LINES. Its parent admin mixes in ProblemsFirstLinesAdmin,
    which hands the formset these lines."""

    extra = 0
    can_delete = False
    verbose_name_plural = f"lines (problems first, at most {INLINE_LINES})"
    parent_field: str  # the line's foreign key to the file
    matched: str  # the line status that is not a problem

    def lines_of(self, parent: Model) -> QuerySet:
        # The limit rides in a subquery because the formset filters the queryset again (a sliced
        # queryset cannot be filtered).
        problems_first = Case(When(status=self.matched, then=Value(1)), default=Value(0),
                              output_field=IntegerField())
        rows = self.model.objects.filter(**{self.parent_field: parent}).annotate(
            rank=problems_first)
        first = rows.order_by("rank", "line_number").values("pk")[:INLINE_LINES]
        return rows.filter(pk__in=first).order_by("rank", "line_number")


class ProblemsFirstLinesAdmin:
    """For the admin of a file whose inline is a ProblemsFirstLinesInline."""

    def get_formset_kwargs(self, request: HttpRequest, obj: Model | None,
                           inline: admin.options.InlineModelAdmin, prefix: str
                           ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)  # type: ignore[misc]
        if (isinstance(inline, ProblemsFirstLinesInline) and obj is not None
                and inline.has_view_or_change_permission(request, obj)):
            kwargs["queryset"] = inline.lines_of(obj)
        return kwargs
