"""Refunds: partial and multiple, never above the captured amount, even concurrently."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from payments.models import Refund
from tests.conftest import Api, assert_error


@pytest.mark.django_db
def test_partial_refunds_keep_the_status_until_the_captured_amount_is_reached(api, make_payment):
    payment = make_payment(10000)
    first = api.post("/refunds", {"payment": payment.id, "amount": 4000,
                                  "reason": "requested_by_customer"})
    assert first.status_code == 200, first.json()
    assert first.json()["status"] == "succeeded"
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("captured", 4000)
    rest = api.post("/refunds", {"payment": payment.id})
    assert rest.json()["amount"] == 6000
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("refunded", 10000)


@pytest.mark.django_db
def test_refund_above_the_remaining_amount_is_409(api, make_payment):
    payment = make_payment(10000)
    api.post("/refunds", {"payment": payment.id, "amount": 7000})
    response = api.post("/refunds", {"payment": payment.id, "amount": 3001})
    assert_error(response, 409, code="amount_too_large")
    assert Refund.objects.count() == 1


@pytest.mark.django_db
def test_refund_of_an_uncaptured_payment_is_409(api, make_payment):
    payment = make_payment(state="authorized")
    response = api.post("/refunds", {"payment": payment.id})
    assert "authorized" in assert_error(response, 409)["message"]


@pytest.mark.django_db
def test_refunds_list_and_retrieve(api, other_api, make_payment):
    payment = make_payment(10000)
    refund = api.post("/refunds", {"payment": payment.id, "amount": 100}).json()
    assert api.get(f"/refunds/{refund['id']}").json()["amount"] == 100
    assert [r["id"] for r in api.get("/refunds", {"payment": payment.id}).json()["data"]] == [
        refund["id"]]
    assert other_api.get(f"/refunds/{refund['id']}").status_code == 404


@pytest.mark.django_db
def test_refund_events_are_written(api, make_payment):
    payment = make_payment(10000)
    api.post("/refunds", {"payment": payment.id})
    types = [e["type"] for e in api.get("/events", {"limit": 20}).json()["data"]]
    assert types[:3] == ["payment.refunded", "refund.succeeded", "refund.created"]


@pytest.mark.django_db(transaction=True)
def test_20_concurrent_refunds_of_10_on_100_let_exactly_10_succeed(
    merchant_and_key, make_payment
):
    payment = make_payment(100)
    raw_key = merchant_and_key[1]

    def refund(i: int):
        try:
            return Api(raw_key).post("/refunds", {"payment": payment.id, "amount": 10},
                                     key=f"refund-{i}")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(refund, range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 10, codes
    assert codes.count(409) == 10, codes
    payment.refresh_from_db()
    assert payment.amount_refunded == 100
    assert payment.status == "refunded"
    assert Refund.objects.filter(payment=payment, status="succeeded").count() == 10
    from ledger.models import EntryKind, JournalEntry
    from ledger.verify import ledger_verify

    refund_ids = list(Refund.objects.filter(payment=payment).values_list("id", flat=True))
    entries = JournalEntry.objects.filter(reference_type="refund", reference_id__in=refund_ids)
    assert entries.filter(kind=EntryKind.REFUND_CREATED).count() == 10
    assert entries.filter(kind=EntryKind.REFUND_SUCCEEDED).count() == 10
    assert ledger_verify().ok
