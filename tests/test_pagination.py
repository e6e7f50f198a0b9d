"""Cursor pagination: newest first, starting_after / ending_before, has_more, filters."""

import pytest
import time_machine

pytestmark = pytest.mark.django_db


@pytest.fixture
def five_payments(make_payment):
    ids = []
    for day in range(1, 6):
        with time_machine.travel(f"2026-03-0{day}T12:00:00Z"):
            ids.append(make_payment(100 * day, state="created").id)
    return ids  # oldest first


def test_pages_walk_newest_first(api, five_payments):
    page1 = api.get("/payments", {"limit": 2}).json()
    assert [p["id"] for p in page1["data"]] == five_payments[::-1][:2]
    assert page1["has_more"] is True
    page2 = api.get("/payments", {"limit": 2, "starting_after": page1["data"][-1]["id"]}).json()
    assert [p["id"] for p in page2["data"]] == five_payments[::-1][2:4]
    page3 = api.get("/payments", {"limit": 2, "starting_after": page2["data"][-1]["id"]}).json()
    assert [p["id"] for p in page3["data"]] == five_payments[:1]
    assert page3["has_more"] is False


def test_ending_before_walks_back(api, five_payments):
    page = api.get("/payments", {"limit": 2, "ending_before": five_payments[1]}).json()
    assert [p["id"] for p in page["data"]] == [five_payments[3], five_payments[2]]
    assert page["has_more"] is True


def test_created_and_status_filters(api, five_payments):
    page = api.get("/payments", {"created_gte": "2026-03-03T00:00:00Z",
                                 "created_lt": "2026-03-05T00:00:00Z"}).json()
    assert [p["id"] for p in page["data"]] == [five_payments[3], five_payments[2]]
    assert api.get("/payments", {"status": "captured"}).json()["data"] == []
    assert api.get("/payments", {"status": "bogus"}).status_code == 400


def test_a_cursor_from_another_merchant_is_404(api, other_api, five_payments):
    response = other_api.get("/payments", {"starting_after": five_payments[0]})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "starting_after"


@pytest.mark.parametrize("limit", ["١٠", "²", "٣", "１０", "0" * 5000 + "1", "+5", " 5", "5 ",
                                   "1e1", "-1", "10.0", "0x10", "1_0"])
def test_limit_is_parsed_strictly_as_ascii_digits(api, limit):
    response = api.get("/payments", {"limit": limit})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "limit"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/payments", "/refunds", "/disputes", "/events", "/deposits",
                                  "/payouts", "/balance_transactions", "/webhook_endpoints"])
def test_every_list_refuses_a_lookalike_digit_limit(api, path):
    response = api.get(path, {"limit": "²"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


def test_created_filters_take_ascii_digits_only(api, five_payments):
    response = api.get("/payments", {"created_gte": "٢٠٢٦-٠٣-٠٣T00:00:00Z"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "created_gte"
