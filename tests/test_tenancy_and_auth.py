"""Authentication and tenancy: 401 for bad keys, 404 (never 403) for another merchant's ids."""

import pytest
from rest_framework.test import APIClient

from core.services import api_key_create, api_key_revoke
from tests.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_missing_key_is_401_with_the_error_body():
    response = APIClient().get("/api/v1/payments")
    assert_error(response, 401, type="authentication_error")
    assert response["Request-Id"].startswith("req_")


def test_unknown_key_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer sk_test_nope")
    assert client.get("/api/v1/payments").status_code == 401


def test_revoked_key_is_401(merchant, api):
    assert api.get("/payments").status_code == 200
    for key in merchant.api_keys.all():
        api_key_revoke(api_key=key)
    response = api.get("/payments")
    assert_error(response, 401, code="invalid_api_key")


def test_key_is_stored_only_as_a_hash(merchant):
    issued = api_key_create(merchant=merchant)
    issued.api_key.refresh_from_db()
    assert issued.raw_key not in (issued.api_key.hashed_key, issued.api_key.prefix)
    assert len(issued.api_key.hashed_key) == 64


@pytest.mark.parametrize("action", ["confirm", "capture", "cancel"])
def test_another_merchants_payment_is_404_on_every_action(other_api, make_payment, action):
    payment = make_payment(state="authorized")
    response = other_api.post(f"/payments/{payment.id}/{action}")
    assert_error(response, 404, code="resource_missing")
    payment.refresh_from_db()
    assert payment.status == "authorized"


def test_another_merchants_payment_is_404_on_get_and_refund(other_api, make_payment):
    payment = make_payment(state="captured")
    assert other_api.get(f"/payments/{payment.id}").status_code == 404
    assert other_api.post("/refunds", {"payment": payment.id}).status_code == 404
    assert payment.refunds.count() == 0
    assert other_api.get("/payments").json()["data"] == []


def test_another_merchants_event_is_404(api, other_api, make_payment):
    make_payment(state="captured")
    event_id = api.get("/events").json()["data"][0]["id"]
    assert other_api.get(f"/events/{event_id}").status_code == 404
