"""No card number is accepted, stored or logged: Luhn-valid 13–19 digit runs answer 400."""

import json
import logging

import pytest
from django.apps import apps
from django.db import connection

from core.carddata import contains_card_number, luhn_valid

PAN = "4242424242424242"


def test_luhn():
    assert luhn_valid(PAN)
    assert not luhn_valid("4242424242424241")
    assert contains_card_number(f"x{PAN}y")
    assert contains_card_number("4242 4242 4242 4242")
    assert contains_card_number("4242-4242-4242-4242")
    assert not contains_card_number("12345")
    assert not contains_card_number("pay_" + "1" * 12)


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["description", "metadata", "payment_method", "number"])
def test_a_card_number_anywhere_in_the_body_is_400_and_stored_nowhere(api, caplog, where):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
    if where == "metadata":
        body["metadata"] = {"note": f"card {PAN}"}
    elif where == "number":
        body["card"] = int(PAN)
    else:
        body[where] = PAN
    caplog.set_level(logging.DEBUG)
    response = api.client.post("/api/v1/payments", data=json.dumps(body),
                               content_type="application/json",
                               HTTP_IDEMPOTENCY_KEY="pan-test")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "card_data_not_allowed"
    assert PAN not in caplog.text
    assert PAN not in response.content.decode()
    # Scan every table's text for the number.
    with connection.cursor() as cursor:
        for model in apps.get_models():
            table = model._meta.db_table
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s',
                           [f"%{PAN}%"])
            assert cursor.fetchone()[0] == 0, table
