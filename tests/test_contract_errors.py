"""Error codes: every code the code can raise is documented in core.errors.ERROR_CODES, every
error body links to its code's documentation (`doc_url`), and the docs list every code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

import core.errors
from core.errors import ERROR_CODES, ClearhouseError
from providers.errors import CODES as PROVIDER_CODES

APPS = ["core", "payments", "wallet", "webhooks", "ledger", "providers", "reconciliation",
        "backoffice"]
ROOT = Path(settings.BASE_DIR)


def _raised_codes() -> dict[str, str]:
    """`code="…"` given to any call (errors, error bodies) and `code = "…"` on error classes."""
    found: dict[str, str] = {}
    error_names = {cls.__name__ for cls in _subclasses(ClearhouseError)} | {
        "ClearhouseError", "error_body", "UnsafeUrl"}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    for keyword in node.keywords:
                        if (keyword.arg == "code" and name in error_names
                                and isinstance(keyword.value, ast.Constant)):
                            found[keyword.value.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    for cls in _subclasses(ClearhouseError):
        found.setdefault(cls.code, f"{cls.__module__}.{cls.__name__}")
    return found


def _subclasses(cls: type) -> list[type]:
    result = []
    for sub in cls.__subclasses__():
        result += [sub, *_subclasses(sub)]
    return result


def test_every_raised_code_is_documented():
    raised = _raised_codes()
    assert len(raised) > 30, raised  # the scan found the codes it is meant to find
    missing = {code: where for code, where in raised.items() if code not in ERROR_CODES}
    assert not missing, f"add these codes to core.errors.ERROR_CODES: {missing}"
    assert set(PROVIDER_CODES) <= set(ERROR_CODES)  # decline codes answer 502


@pytest.mark.django_db
def test_an_error_body_links_to_its_code_documentation(api, client):
    response = api.post("/payments", {"amount": 0, "currency": "usd",
                                      "payment_method": "pm_card_visa"})
    error = response.json()["error"]
    assert error["doc_url"] == f"http://testserver/api/docs/errors#{error['code']}"
    page = client.get("/api/docs/errors")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    for code in ERROR_CODES:
        assert f'<tr id="{code}">' in text, code
    unauthenticated = client.get("/api/v1/payments").json()["error"]
    assert unauthenticated["doc_url"].endswith("/api/docs/errors#invalid_api_key")


def test_doc_url_without_a_request_is_the_path():
    assert core.errors.doc_url("rate_limited") == "/api/docs/errors#rate_limited"


def test_the_docs_list_every_code():
    text = (ROOT / "docs" / "API.md").read_text()
    for code in ERROR_CODES:
        assert f'<a id="{code}"></a>`{code}`' in text, code
