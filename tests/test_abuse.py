"""Abuse and tenancy: every endpoint answers another merchant's ids with 404, nothing is mass
assigned, malformed or oversized input is a clean 4xx, and no 5xx or stack trace leaks."""

from __future__ import annotations

import json

import pytest

from payments import services
from payments.models import Payment, Refund

pytestmark = pytest.mark.django_db


@pytest.fixture
def victim(make_payment, merchant):
    """Objects of the first merchant, probed by the second."""
    payment = make_payment(10000)
    refund = services.refund_create(merchant=merchant, payment_id=payment.id, amount=100)
    dispute = services.dispute_open(payment_id=payment.id, amount=200)
    return {"payment": payment.id, "refund": refund.id, "dispute": dispute.id}


CROSS_TENANT = [
    ("get", "/payments/{payment}"), ("post", "/payments/{payment}/confirm"),
    ("post", "/payments/{payment}/capture"), ("post", "/payments/{payment}/cancel"),
    ("get", "/refunds/{refund}"), ("get", "/disputes/{dispute}"),
    ("post", "/disputes/{dispute}"), ("post", "/disputes/{dispute}/close"),
]


@pytest.mark.parametrize(("method", "path"), CROSS_TENANT)
def test_every_endpoint_answers_another_merchants_object_with_404(other_api, victim, method,
                                                                  path):
    url = path.format(**victim)
    body = {"evidence": {"note": "x"}} if url.startswith("/disputes/") and method == "post" \
        and not url.endswith("close") else None
    response = getattr(other_api, method)(url, body) if method == "post" \
        else other_api.get(url)
    assert response.status_code == 404, (url, response.content)
    assert response.json()["error"]["code"] == "resource_missing"


def test_another_merchants_refund_target_and_lists_are_invisible(other_api, victim):
    assert other_api.post("/refunds", {"payment": victim["payment"]}).status_code == 404
    for listing in ("/payments", "/refunds", "/disputes", "/events"):
        assert other_api.get(listing).json()["data"] == [], listing
    assert other_api.get("/refunds", {"payment": victim["payment"]}).json()["data"] == []


@pytest.mark.parametrize("field", ["status", "amount_refunded", "amount_captured", "merchant",
                                   "provider", "livemode", "created"])
def test_no_mass_assignment_on_refunds_or_captures(api, victim, field):
    assert api.post("/refunds", {"payment": victim["payment"], "amount": 1, field: 1}
                    ).status_code == 400
    assert api.post(f"/payments/{victim['payment']}/capture", {field: 1}).status_code == 400
    assert Refund.objects.count() == 1


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'"x"', b"{", b'{"amount": NaN}',
                                 b'{"amount": Infinity}', b"\xff\xfe", b'{"a":' * 50 + b"1"])
def test_malformed_json_is_a_clean_400(api, raw):
    response = api.client.post("/api/v1/payments", data=raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) == {"type", "code", "message", "param", "request_id",
                                             "doc_url"}
    assert "Traceback" not in response.content.decode()
    assert Payment.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml",
                                          "multipart/form-data; boundary=x"])
def test_unknown_content_types_are_415(api, content_type):
    response = api.client.post("/api/v1/payments", data="{}", content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_lying_content_length_cannot_bypass_the_size_limit(api):
    body = json.dumps({"amount": 1, "currency": "usd", "payment_method": "pm_card_visa",
                       "description": "y" * 20000})
    response = api.client.generic("POST", "/api/v1/payments", body,
                                  content_type="application/json", CONTENT_LENGTH="100")
    assert response.status_code in (400, 413)
    assert Payment.objects.count() == 0


def test_header_injection_in_metadata_is_refused(api):
    for value in ("a\r\nSet-Cookie: x=1", "a\nb"):
        response = api.post("/payments", {"amount": 1, "currency": "usd",
                                          "payment_method": "pm_card_visa",
                                          "metadata": {"k": value}})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "metadata"


def test_deeply_nested_metadata_is_refused(api):
    response = api.post("/payments", {"amount": 1, "currency": "usd",
                                      "payment_method": "pm_card_visa",
                                      "metadata": {"k": {"nested": "x"}}})
    assert response.status_code == 400


def test_a_method_not_allowed_is_405_with_the_error_body(api):
    response = api.client.delete("/api/v1/payments")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_nul_characters_are_a_clean_400_not_a_database_error(api):
    assert api.get("/disputes", {"status": "x\x00"}).status_code == 400
    assert api.get("/payments", {"starting_after": "pay_\x00"}).status_code == 400
    response = api.post("/payments", {"amount": 1, "currency": "usd",
                                      "payment_method": "pm_card_visa",
                                      "description": "nul\u0000here"})
    assert response.status_code == 400
    assert Payment.objects.count() == 0
