"""List filters that know about other apps' data (the registered providers)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from backoffice.admin_base import ChoicesOnlyFilter
from providers.registry import registered_codes


class ProviderFilter(ChoicesOnlyFilter):
    """Registered providers as choices (the default would run SELECT DISTINCT on the table)."""

    title = "provider"
    parameter_name = "provider"
    field = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in registered_codes()]
