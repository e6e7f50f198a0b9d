"""Bad input answers 400 with `param` and changes nothing (contract: Money, Requests and errors)."""

import json

import pytest

from payments.models import Payment

pytestmark = pytest.mark.django_db

BASE = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}


@pytest.mark.parametrize("amount", [0, -1, 10.5, "10", "10.5", True, 1e20, None,
                                    100_000_000_000, [], {}])
def test_bad_amounts_are_400_with_param(api, amount):
    response = api.post("/payments", {**BASE, "amount": amount})
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["param"] == "amount"
    assert error["type"] == "invalid_request_error"
    assert Payment.objects.count() == 0


def test_the_largest_allowed_amount_is_accepted(api):
    assert api.post("/payments", {**BASE, "amount": 99_999_999_999}).status_code == 201


def test_missing_currency_is_400(api):
    body = {k: v for k, v in BASE.items() if k != "currency"}
    response = api.post("/payments", body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "currency"
    assert response.json()["error"]["code"] == "parameter_missing"


@pytest.mark.parametrize("currency", ["xyz", "USD", "us", 840, ""])
def test_unknown_or_malformed_currency_is_400(api, currency):
    response = api.post("/payments", {**BASE, "currency": currency})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "currency"


def test_jpy_amounts_are_whole_yen(api):
    response = api.post("/payments", {**BASE, "amount": 500, "currency": "jpy"})
    assert response.status_code == 201
    assert response.json()["amount"] == 500
    from core.money import format_amount, to_decimal

    assert str(to_decimal(500, "jpy")) == "500"
    assert format_amount(1050, "usd") == "10.50 USD"
    assert str(to_decimal(1050, "kwd")) == "1.050"


@pytest.mark.parametrize("field", ["status", "amount_refunded", "merchant", "amount_captured",
                                   "id"])
def test_read_only_fields_in_a_create_body_are_400(api, field):
    response = api.post("/payments", {**BASE, field: "captured"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert response.json()["error"]["code"] == "parameter_unknown"
    assert Payment.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.client.post("/api/v1/payments", data="{not json",
                               content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_json_array_body_is_400(api):
    response = api.post("/payments", [BASE])
    assert response.status_code == 400


def test_unknown_content_type_is_415(api):
    response = api.client.post("/api/v1/payments", data="amount=1000",
                               content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "error" in response.json()


def test_metadata_limits(api):
    too_many = {f"k{i}": "v" for i in range(21)}
    assert api.post("/payments", {**BASE, "metadata": too_many}).status_code == 400
    assert api.post("/payments", {**BASE, "metadata": {"k": 5}}).status_code == 400
    assert api.post("/payments", {**BASE, "metadata": {"k": "a\r\nX-Injected: 1"}}
                    ).status_code == 400
    ok = api.post("/payments", {**BASE, "metadata": {"order": "A-1"}})
    assert ok.status_code == 201
    assert ok.json()["metadata"] == {"order": "A-1"}


def test_a_body_over_16_kib_is_413_and_changes_nothing(api):
    body = json.dumps({**BASE, "description": "x" * (17 * 1024)})
    response = api.client.post("/api/v1/payments", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert Payment.objects.count() == 0


def test_list_limit_out_of_range_is_400(api):
    for limit in ("0", "101", "abc"):
        response = api.get("/payments", {"limit": limit})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "limit"


def test_unknown_payment_is_404_with_param(api):
    response = api.get("/payments/pay_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "id"
