"""Object ids in admin URLs. The admin escapes ids ("_" becomes "_5F") and unescapes what it
receives, so an unescaped link such as `/journalentry/txn_4Fab…/change/` would be read as
`txnOab…` and not found (one id in fifteen starts with two hex digits). Links built elsewhere
(backoffice.admin.ledger.entry_links, older pages) are unescaped; these helpers accept both
forms.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import quote, unquote
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse


def lookup_pk(model: type[models.Model], object_id: str) -> str:
    """The primary key an admin URL segment means: normally its unescaped form; the raw text
    when only that names a row (an unescaped link). One extra query, only for ambiguous ids."""
    pk = unquote(object_id)
    if "\x00" in pk or "\x00" in object_id:  # PostgreSQL refuses NUL in text: no such row
        raise Http404("No object with that id.")
    if pk == object_id:
        return pk
    rows = model._default_manager
    if not rows.filter(pk=pk).exists() and rows.filter(pk=object_id).exists():
        return object_id
    return pk


class TolerantIdsMixin:
    """For ModelAdmins with string ids: the change page opens from escaped and raw links alike."""

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        pk = lookup_pk(self.model, object_id)  # type: ignore[attr-defined]
        return super().change_view(request, quote(pk), form_url,  # type: ignore[misc]
                                   extra_context)
