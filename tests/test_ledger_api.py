"""GET /balance and /balance_transactions: amounts per currency, cursor pages, tenancy."""

from __future__ import annotations

import pytest

from ledger import flows


@pytest.fixture
def activity(merchant):
    """Capture 10 000 usd and settle it less 300 fee; capture 5 000 eur; reserve a payout."""
    flows.post_capture(merchant=merchant, payment_id="pay_usd", provider="sandbox",
                       currency="usd", amount=10_000)
    flows.post_settlement(merchant=merchant, payment_id="pay_usd", currency="usd",
                          amount=10_000, fee=300)
    flows.post_capture(merchant=merchant, payment_id="pay_eur", provider="sandbox",
                       currency="eur", amount=5_000)
    flows.post_payout_created(merchant=merchant, payout_id="po_1", currency="usd", amount=700)


@pytest.mark.django_db
def test_balance_lists_each_kind_per_currency(api, activity):
    response = api.get("/balance")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "balance"
    assert body["livemode"] is False
    assert body["available"] == [{"amount": 9_000, "currency": "usd"}]
    assert body["pending"] == [{"amount": 5_000, "currency": "eur"},
                               {"amount": 0, "currency": "usd"}]
    assert body["reserved"] == [{"amount": 700, "currency": "usd"}]
    assert body["disputed"] == []


@pytest.mark.django_db
def test_new_merchant_has_an_empty_balance(api):
    body = api.get("/balance").json()
    assert body == {"object": "balance", "available": [], "pending": [], "reserved": [],
                    "disputed": [], "livemode": False}


@pytest.mark.django_db
def test_balance_needs_an_api_key(client):
    response = client.get("/api/v1/balance")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.django_db
def test_balance_transactions_are_the_merchants_postings_newest_first(api, activity):
    body = api.get("/balance_transactions", {"limit": 100}).json()
    assert body["object"] == "list"
    assert body["has_more"] is False
    rows = body["data"]
    # capture (1 merchant posting), settlement (2), capture (1), payout (2)
    assert len(rows) == 6
    assert [row["type"] for row in rows][:2] == ["payout_created", "payout_created"]
    assert rows[-1]["type"] == "capture"
    payout = {row["balance_type"]: row for row in rows if row["type"] == "payout_created"}
    assert payout["available"]["amount"] == -700
    assert payout["available"]["balance_after"] == 9_000
    assert payout["reserved"]["amount"] == 700
    first = rows[-1]
    assert first["id"].startswith("bt_")
    assert first["entry"].startswith("txn_")
    assert first["object"] == "balance_transaction"
    assert first["source"] == {"object": "payment", "id": "pay_usd"}
    assert (first["amount"], first["currency"], first["balance_type"]) == (10_000, "usd",
                                                                            "pending")


@pytest.mark.django_db
def test_balance_transaction_never_shows_platform_accounts(api, activity):
    rows = api.get("/balance_transactions", {"limit": 100}).json()["data"]
    assert {row["balance_type"] for row in rows} <= {"available", "pending", "reserved",
                                                     "disputed"}


@pytest.mark.django_db
def test_balance_transactions_paginate_with_cursors(api, activity):
    everything = [row["id"] for row in
                  api.get("/balance_transactions", {"limit": 100}).json()["data"]]
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"starting_after": cursor} if cursor else {})}
        page = api.get("/balance_transactions", params).json()
        seen += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert seen == everything
    back = api.get("/balance_transactions", {"limit": 2, "ending_before": everything[3]}).json()
    assert [row["id"] for row in back["data"]] == everything[1:3]
    assert back["has_more"] is True


@pytest.mark.django_db
def test_balance_transactions_filters(api, activity):
    rows = api.get("/balance_transactions", {"type": "capture"}).json()["data"]
    assert {row["source"]["id"] for row in rows} == {"pay_usd", "pay_eur"}
    rows = api.get("/balance_transactions", {"currency": "eur"}).json()["data"]
    assert [row["amount"] for row in rows] == [5_000]
    rows = api.get("/balance_transactions", {"balance_type": "reserved"}).json()["data"]
    assert [row["amount"] for row in rows] == [700]
    response = api.get("/balance_transactions", {"type": "bogus"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "type"


@pytest.mark.django_db
def test_balance_transaction_detail(api, activity):
    row = api.get("/balance_transactions", {"limit": 1}).json()["data"][0]
    response = api.get(f"/balance_transactions/{row['id']}")
    assert response.status_code == 200
    assert response.json() == row


@pytest.mark.django_db
def test_another_merchant_sees_none_of_it(api, other_api, activity):
    mine = api.get("/balance_transactions", {"limit": 1}).json()["data"][0]["id"]
    assert other_api.get("/balance_transactions").json() == {"object": "list", "data": [],
                                                             "has_more": False}
    assert other_api.get("/balance").json()["available"] == []
    response = other_api.get(f"/balance_transactions/{mine}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"
    cursor = other_api.get("/balance_transactions", {"starting_after": mine})
    assert cursor.status_code == 404
    assert cursor.json()["error"]["code"] == "resource_missing"
