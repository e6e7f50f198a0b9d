"""schemathesis hooks for tests/test_contract_schemathesis.py: the rules no JSON Schema can state,
each documented in the schema's descriptions and the contract, kept out of positive data.

- No card number anywhere (CONTRACT "Never"): a Luhn-valid 13–19 digit run in any string is
  400 `card_data_not_allowed`, whatever field it is in.
- A balance report's `end` is after its `start`, at most 366 days later (two fields compared).
- An evidence upload's bytes are a whole PDF, PNG or JPEG, judged by their content.
- A saved payment method's token is one the named provider's vault holds, and the provider is
  one with a vault in the account's mode (asked of the provider when it is saved).
- A 3-D Secure `return_url` is an https URL a browser can follow: no userinfo or backslash, a
  host of at most 253 characters in labels of at most 63 (the schema says `format: uri`, which
  any scheme and any length of host satisfy).
- Integers are written without a fraction (1414, not 1414.0: JSON Schema calls both integers;
  the contract refuses a float for an amount).

And one rule of the test itself: a schema-valid case's Idempotency-Key is made unique, since
hypothesis reuses short values ("0") across cases and a reused key with another body is, by the
contract, 422. The header's shape is still fuzzed by the negative cases.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import schemathesis
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from core.carddata import contains_card_data, contains_card_number

REPORT_MAX_SECONDS = 366 * 24 * 3600


def _strings(*parts: Any) -> list[Any]:
    return [part for part in parts if part]


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return True
    if contains_card_data(_strings(case.body, case.query, case.path_parameters)) or any(
            contains_card_number(str(value)) for value in (case.headers or {}).values()):
        return False
    if not _return_url_followable(case.body):
        return False
    if _has_float(case.body) or (case.method == "POST" and case.operation.path.endswith(
            ("/files", "/payment_methods"))):
        return False
    query = case.query or {}
    if case.operation.path.endswith("/balance/report") and {"start", "end"} <= set(query):
        try:
            span = int(query["end"]) - int(query["start"])
        except (TypeError, ValueError):
            return True
        return 0 < span <= REPORT_MAX_SECONDS
    return True


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = getattr(case, "meta", None)
    headers = case.headers or {}
    if meta is not None and meta.generation.mode.is_positive and "Idempotency-Key" in headers:
        # A fresh uuid4, as Stripe's libraries and ours send (a generated string may spell a
        # card number, which the request guard rightly refuses in this header too).
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return case


def _return_url_followable(body: Any) -> bool:
    url = body.get("return_url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return True
    try:
        URLValidator(schemes=["https"])(url)
    except ValidationError:
        return False
    return "@" not in urlsplit(url).netloc and "\\" not in url


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_float(item) for item in value)
    return False
