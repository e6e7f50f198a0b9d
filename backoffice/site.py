"""The admin site: staff need a TOTP code when BACKOFFICE_REQUIRE_2FA is on (always in
production), and the index page is the operations dashboard."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern
from django_otp.admin import OTPAdminAuthenticationForm
from django_otp.plugins.otp_totp.models import TOTPDevice


class StaffOTPLoginForm(OTPAdminAuthenticationForm):
    """Username, password and the 6-digit code in one step, with messages that say what to do."""

    otp_error_messages = {
        **OTPAdminAuthenticationForm.otp_error_messages,
        "token_required": "Enter the 6-digit code from your authenticator app.",
        "invalid_token": ("That code is wrong or has expired. Enter the code your authenticator "
                          "app shows now."),
        "device_required": ("You have no authenticator yet. Ask a back-office admin to run "
                            "`manage.py staff_totp_create <your username>` and scan the link."),
    }

    def _chosen_device(self, user: Any) -> Any:
        """Staff have one authenticator (TOTP) device, so the page asks for no device choice."""
        return super()._chosen_device(user) or (
            TOTPDevice.objects.devices_for_user(user, confirmed=True).order_by("id").first())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["otp_token"].label = "Authenticator code"
        self.fields["otp_token"].widget.attrs.update(
            {"autocomplete": "one-time-code", "inputmode": "numeric", "maxlength": "8"})


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Clearhouse back-office"
    site_title = "Clearhouse back-office"
    index_title = "Operations dashboard"

    @property
    def login_form(self) -> type | None:  # type: ignore[override]
        return StaffOTPLoginForm if settings.BACKOFFICE_REQUIRE_2FA else None

    @property
    def login_template(self) -> str | None:  # type: ignore[override]
        return "backoffice/login_otp.html" if settings.BACKOFFICE_REQUIRE_2FA else None

    def has_permission(self, request: HttpRequest) -> bool:
        """Active staff, and, when 2FA is required, verified by a TOTP device in this session
        (django_otp's OTPMiddleware sets `is_verified`)."""
        if not super().has_permission(request):
            return False
        if settings.BACKOFFICE_REQUIRE_2FA:
            is_verified = getattr(request.user, "is_verified", None)
            return bool(is_verified and is_verified())
        return True

    def get_urls(self) -> list[URLPattern]:
        from backoffice.reports import report_urls

        return [*report_urls(self), *super().get_urls()]

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
              ) -> TemplateResponse:
        from backoffice.charts import dashboard_charts
        from backoffice.reports import report_index_links
        from backoffice.selectors import dashboard, trends

        context = {**(extra_context or {}), "dashboard": dashboard(),
                   "charts": dashboard_charts(trends()), "reports": report_index_links()}
        return super().index(request, extra_context=context)
