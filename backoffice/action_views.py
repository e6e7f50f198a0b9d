"""The plumbing every admin action view shares: 403 without the permission, form errors and
service refusals shown as messages that say what to do, and a redirect back to the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse

from backoffice.admin_ids import lookup_pk
from backoffice.audit import Actor
from core.errors import ClearhouseError


def require_perm(request: HttpRequest, *codenames: str) -> Actor:
    """The acting staff member if they hold any of the permissions (a bare codename means
    `backoffice.<codename>`), or 403 before anything is read or parsed."""
    perms = [name if "." in name else f"backoffice.{name}" for name in codenames]
    if not any(request.user.has_perm(perm) for perm in perms):
        raise PermissionDenied(f"You do not have the '{perms[0]}' permission.")
    return Actor.from_request(request)


def form_errors_text(form: forms.Form) -> str:
    parts = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        text = " ".join(str(error) for error in errors)
        parts.append(f"{label}: {text}" if label else text)
    return " ".join(parts)


Outcome = str | tuple[int, str]  # a success message, or (messages level, message)


def perform(request: HttpRequest, *, form: forms.Form,
            run: Callable[[dict[str, Any]], Outcome], back: str) -> HttpResponseRedirect:
    """Validate, run the service, report, go back. Permission errors propagate (403)."""
    if not form.is_valid():
        messages.error(request, f"Nothing was done. {form_errors_text(form)}")
        return HttpResponseRedirect(back)
    try:
        message = run(form.cleaned_data)
    except ClearhouseError as exc:
        messages.error(request, f"Refused: {exc.message}")
    else:
        level, text = message if isinstance(message, tuple) else (messages.SUCCESS, message)
        messages.add_message(request, level, text)
    return HttpResponseRedirect(back)


class ObjectActionsMixin:
    """POST-only action URLs under an object's admin page: `<pk>/<name>/` for each name in
    `action_names`, served by the ModelAdmin's `<name>_view` method (usually via `_post`)."""

    action_names: tuple[str, ...] = ()

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta  # type: ignore[attr-defined]
        wrap = self.admin_site.admin_view  # type: ignore[attr-defined]
        extra = [path(f"<path:object_id>/{name}/", wrap(getattr(self, f"{name}_view")),
                      name=f"{opts.app_label}_{opts.model_name}_{name}")
                 for name in self.action_names]
        return extra + super().get_urls()  # type: ignore[misc]

    def _post(self, request: HttpRequest, object_id: str, codename: str | tuple[str, ...],
              form_class: Callable, run: Callable[..., Outcome], **form_kwargs: Any
              ) -> HttpResponse:
        names = codename if isinstance(codename, tuple) else (codename,)
        actor = require_perm(request, *names)  # 403 before anything else
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        model = self.model  # type: ignore[attr-defined]
        obj = get_object_or_404(model, pk=lookup_pk(model, object_id))
        back = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change",
                       args=[quote(obj.pk)])
        form = form_class(request.POST, request.FILES,
                          **{k: v(obj) for k, v in form_kwargs.items()})
        return perform(request, form=form, run=lambda data: run(actor, obj, data), back=back)
