"""Template filters for the back-office pages: amounts with their currency, JSON for humans."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder

from core.money import format_amount

register = template.Library()


@register.filter
def money(amount: int | None, currency: str) -> str:
    """1050|money:"usd" → "10.50 USD"; empty for no amount."""
    if amount is None or not currency:
        return ""
    return format_amount(int(amount), currency)


@register.filter
def pretty_json(value: Any) -> str:
    if value in (None, "", {}, []):
        return "—"
    return json.dumps(value, indent=2, sort_keys=True, cls=DjangoJSONEncoder)
