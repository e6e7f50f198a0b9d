"""The breaks queue as the back-office shows it, built on reconciliation's own admin: filters by
type, provider and age, amounts with their currency, and a resolve / ignore form on each break
that requires a note and goes through `backoffice.services.break_close` (reconciliation's
`break_resolve` plus a staff audit row, one transaction). Settlement files, lines and job runs
keep the read-only admins of `backoffice.admin.reconciliation`, whose plain break admin this
extends.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from backoffice import services
from backoffice.action_views import ObjectActionsMixin, Outcome
from backoffice.admin.reconciliation import ReconciliationBreakAdmin
from backoffice.admin_base import LargeTableMixin, StatusBadgeMixin
from backoffice.admin_filters import ProviderFilter
from backoffice.admin_ids import TolerantIdsMixin, lookup_pk
from backoffice.audit import Actor
from backoffice.forms import BreakCloseForm
from core.money import format_amount
from reconciliation.models import BreakStatus, ReconciliationBreak

RESOLVE_PERMISSIONS = services.BREAK_CLOSE_PERMISSIONS


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    _DAYS = {"1d": 1, "7d": 7, "30d": 30}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1d", "older than a day"), ("7d", "older than a week"),
                ("30d", "older than 30 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        days = self._DAYS.get(self.value() or "")
        if days is None:
            return queryset
        return queryset.filter(created_at__lt=timezone.now() - timedelta(days=days))


def _money(amount: int | None, currency: str) -> str:
    return format_amount(amount, currency) if amount is not None and currency else "—"


class BreakQueueAdmin(LargeTableMixin, StatusBadgeMixin, ObjectActionsMixin, TolerantIdsMixin,
                      ReconciliationBreakAdmin):
    list_display = ("id", "type", "status_label", "provider", "payment_id", "our_side",
                    "provider_side", "age")
    list_filter = ("status", "type", ProviderFilter, AgeFilter)
    change_form_template = "admin/backoffice/break_change_form.html"
    action_names = ("close",)

    @admin.display(description="our amount", ordering="our_amount")
    def our_side(self, brk: ReconciliationBreak) -> str:
        return _money(brk.our_amount, brk.currency)

    @admin.display(description="provider's amount", ordering="provider_amount")
    def provider_side(self, brk: ReconciliationBreak) -> str:
        return _money(brk.provider_amount, brk.currency)

    @admin.display(description="open for", ordering="created_at")
    def age(self, brk: ReconciliationBreak) -> str:
        days = (timezone.now() - brk.created_at).days
        return "today" if days == 0 else f"{days} day{'s' if days != 1 else ''}"

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return any(request.user.has_perm(perm) for perm in RESOLVE_PERMISSIONS)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        brk = ReconciliationBreak.objects.filter(
            pk=lookup_pk(ReconciliationBreak, object_id)).first()
        context = {"brk": brk, "can_close": bool(brk and brk.status == BreakStatus.OPEN
                                                 and self.has_resolve_permission(request)),
                   "close_form": BreakCloseForm(),
                   "our": _money(brk.our_amount, brk.currency) if brk else "",
                   "theirs": _money(brk.provider_amount, brk.currency) if brk else ""}
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    def close_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Actor, brk: ReconciliationBreak, data: dict[str, Any]) -> Outcome:
            ignore = data["outcome"] == "ignore"
            done = services.break_close(actor=actor, break_id=brk.pk, note=data["note"],
                                        ignore=ignore)
            return f"Break {done.id} is {done.status}; the note is on record."

        return self._post(request, object_id, RESOLVE_PERMISSIONS, BreakCloseForm, run)

    def close_break(self, request: HttpRequest, break_id: str, *, note: str, status: str
                    ) -> None:
        """The bulk action closes each break through the audited back-office service."""
        services.break_close(actor=Actor.from_request(request), break_id=break_id, note=note,
                             ignore=status == BreakStatus.IGNORED)


admin.site.register(ReconciliationBreak, BreakQueueAdmin)
