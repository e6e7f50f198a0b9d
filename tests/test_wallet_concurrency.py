"""Real threads through the API against real PostgreSQL: concurrent payouts never overdraw the
available balance, and every refused one leaves nothing behind."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from ledger.models import JournalEntry, Posting
from ledger.selectors import balance_get
from ledger.verify import ledger_verify
from tests.conftest import Api
from tests.factories import merchant_with_key
from wallet.models import Payout


def _balances(merchant) -> dict[str, int]:
    return {kind: sum(row["amount"] for row in rows if row["currency"] == "usd")
            for kind, rows in balance_get(merchant=merchant).items()}


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_payouts_of_10_against_100_pay_exactly_ten():
    merchant, raw_key = merchant_with_key()
    deposit = Api(raw_key).post("/deposits", {"amount": 100, "currency": "usd",
                                              "method": "pix"}, key="fund")
    assert deposit.json()["status"] == "succeeded"
    barrier = threading.Barrier(20)
    responses: list[tuple[int, dict]] = []
    errors: list[BaseException] = []

    def payout(i: int) -> None:
        try:
            client = Api(raw_key)  # one client, and one database connection, per thread
            barrier.wait()
            response = client.post("/payouts", {"amount": 10, "currency": "usd",
                                                "destination": "ba_checking"}, key=f"po-{i}")
            responses.append((response.status_code, response.json()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=payout, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Counter(status for status, _ in responses) == {200: 10, 409: 10}
    refused = [body["error"] for status, body in responses if status == 409]
    assert {(e["type"], e["code"]) for e in refused} == {("state_error", "insufficient_funds")}
    assert {body["status"] for status, body in responses if status == 200} == {"in_transit"}

    assert Payout.objects.count() == 10
    assert JournalEntry.objects.filter(kind="payout_created").count() == 10
    balances = _balances(merchant)
    assert (balances["available"], balances["reserved"]) == (0, 0)
    # Never negative at any moment, not just at the end.
    assert not Posting.objects.filter(account__kind="available", balance_after__lt=0).exists()
    result = ledger_verify()
    assert result.ok, result.report()
