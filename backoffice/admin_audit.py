"""A ModelAdmin base whose add, change and delete write a staff audit row in the admin's own
transaction (Django's changeform and delete views run inside `transaction.atomic`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from backoffice.audit import Actor, audit_record, snapshot

_BEFORE = "_backoffice_audit_before"


class AuditedModelAdmin(admin.ModelAdmin):
    """Audits what the generic admin views change. `audit_fields` limits the snapshot (None:
    every concrete field but secrets); override `audit_snapshot` to add related rows."""

    audit_fields: tuple[str, ...] | None = None

    def audit_snapshot(self, obj: models.Model) -> dict[str, Any]:
        return snapshot(obj, self.audit_fields)

    def _fresh(self, obj: models.Model) -> models.Model | None:
        return type(obj)._default_manager.filter(pk=obj.pk).first() if obj.pk else None

    def audit_before(self, request: HttpRequest, obj: models.Model, change: bool) -> None:
        """Remember the stored row before it is saved (save_related writes the audit row)."""
        previous = self._fresh(obj) if change else None
        setattr(request, _BEFORE, self.audit_snapshot(previous) if previous else {})

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        self.audit_before(request, obj, change)
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: Any,
                     change: bool) -> None:
        # After the inlines and many-to-many fields, so "after" shows the whole change.
        super().save_related(request, form, formsets, change)
        obj = form.instance
        audit_record(actor=Actor.from_request(request),
                     action="admin.change" if change else "admin.add",
                     object_type=obj._meta.label_lower, object_id=str(obj.pk),
                     before=getattr(request, _BEFORE, {}),
                     after=self.audit_snapshot(self._fresh(obj) or obj))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before = self.audit_snapshot(obj)
        label, pk = obj._meta.label_lower, str(obj.pk)
        super().delete_model(request, obj)
        audit_record(actor=Actor.from_request(request), action="admin.delete",
                     object_type=label, object_id=pk, before=before)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.from_request(request)
        rows = [(obj._meta.label_lower, str(obj.pk), self.audit_snapshot(obj))
                for obj in queryset]
        with transaction.atomic():  # the bulk "delete selected" action has no transaction
            super().delete_queryset(request, queryset)
            for label, pk, before in rows:
                audit_record(actor=actor, action="admin.delete", object_type=label,
                             object_id=pk, before=before)
