"""Balances as of any moment, the month-close report and a payout's balance transactions: figures
that tie out to the cent against the ledger, through the API a merchant's finance team uses."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ledger import flows
from ledger.models import Account
from ledger.reports import period_report, trial_balance
from ledger.verify import ledger_verify
from tests.ledger_tampering import post_books


@pytest.fixture
def month(merchant):
    """A merchant's month of movements. Postings carry the database clock, so the tests cut
    periods at the postings' own times rather than at frozen dates."""
    common = {"merchant": merchant, "currency": "usd"}
    post_books(merchant, fee=300)
    flows.post_capture(payment_id="pay_2", provider="sandbox", amount=4_000, **common)
    flows.post_payout_paid(payout_id="po_1", provider="sandbox", amount=3_000, **common)
    flows.post_capture(payment_id="pay_3", provider="sandbox", amount=700, **common)
    flows.post_settlement(payment_id="pay_3", amount=700, fee=21, **common)
    flows.post_payout_created(payout_id="po_2", amount=1_000, **common)
    return merchant


def posting_times(merchant) -> list[datetime]:
    from ledger.models import Posting

    return sorted(Posting.objects.filter(merchant=merchant).values_list("created_at", flat=True))


@pytest.mark.django_db
def test_balance_as_of_replays_the_ledger_at_each_moment(api, month):
    times = posting_times(month)
    now = api.get("/balance").json()
    # After the last posting the as-of balance is today's balance.
    later = api.get("/balance", {"as_of": int(times[-1].timestamp()) + 1}).json()
    assert later == now
    # Before the first posting there was nothing.
    before = api.get("/balance", {"as_of": int(times[0].timestamp()) - 1}).json()
    assert before["available"] == [] and before["pending"] == []


@pytest.mark.django_db
@pytest.mark.parametrize("as_of", ["yesterday", "-5", "1.5", "99999999999999", "1e9"])
def test_balance_as_of_refuses_what_is_not_a_unix_timestamp(api, as_of):
    response = api.get("/balance", {"as_of": as_of})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "as_of"


@pytest.mark.django_db
def test_the_period_report_ties_out_to_the_cent(api, month):
    start = posting_times(month)[0] - timedelta(seconds=1)
    end = posting_times(month)[-1] + timedelta(seconds=1)
    report = period_report(merchant=month, currency="usd", start=start, end=end)
    assert report.ties_out()
    assert report.opening_total == 0
    assert report.movement_total("captures") == 10_000 + 4_000 + 700
    assert report.fees == 300 + 21
    # Settlement moves pending to available less the fee: net −fee for the merchant.
    assert report.movement_total("settlements") == -(300 + 21)
    assert report.movement_total("refunds") == -1_000
    assert report.movement_total("payouts") == -3_000  # po_2 is reserved, still the merchant's
    account_sum = sum(Account.objects.filter(merchant=month, currency="usd")
                      .values_list("balance", flat=True))
    assert report.closing_total == account_sum
    body = api.get("/balance/report", {"currency": "usd", "start": int(start.timestamp()),
                                       "end": int(end.timestamp()) + 1}).json()
    assert body["object"] == "balance_report"
    assert body["closing"]["total"] == account_sum
    assert body["opening"]["total"] + sum(row["total"] for row in body["movements"].values()) \
        == body["closing"]["total"]


@pytest.mark.django_db
def test_consecutive_periods_chain_and_each_ties_out(month):
    times = posting_times(month)
    cut = times[len(times) // 2]
    start, end = times[0] - timedelta(seconds=1), times[-1] + timedelta(seconds=1)
    first = period_report(merchant=month, currency="usd", start=start, end=cut)
    second = period_report(merchant=month, currency="usd", start=cut, end=end)
    assert first.ties_out() and second.ties_out()
    assert first.closing == second.opening
    assert first.entries + second.entries == period_report(
        merchant=month, currency="usd", start=start, end=end).entries


@pytest.mark.django_db
def test_the_trial_balance_as_of_any_moment_sums_to_zero(month):
    for moment in posting_times(month):
        balance = trial_balance(as_of=moment)
        assert set(balance.totals().values()) <= {0}, balance.totals()
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize("params", [
    {"currency": "usd", "start": 1_800_000_000, "end": 1_700_000_000},
    {"currency": "usd", "start": 1_700_000_000, "end": 1_800_000_000},  # > 366 days
    {"currency": "xxx", "start": 1_700_000_000, "end": 1_700_086_400},
    {"start": 1_700_000_000, "end": 1_700_086_400},
])
def test_the_report_refuses_a_bad_period_with_a_clear_400(api, params):
    response = api.get("/balance/report", params)
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["message"]


@pytest.mark.django_db
def test_a_payout_lists_the_balance_transactions_it_paid_out(api, month, other_api):
    first = api.get("/balance_transactions", {"payout": "po_1", "limit": 100}).json()["data"]
    types = sorted(row["type"] for row in first)
    # Everything that moved available up to po_1's reservation, po_1 included.
    assert types == sorted(["settlement", "refund_created", "dispute_opened",
                            "deposit_confirmed", "payout_created"])
    assert {row["balance_type"] for row in first} == {"available"}
    assert sum(row["amount"] for row in first) == (10_000 - 300) - 1_000 - 500 + 2_000 - 3_000
    second = api.get("/balance_transactions", {"payout": "po_2", "limit": 100}).json()["data"]
    assert sorted(row["type"] for row in second) == ["payout_created", "settlement"]
    assert not {row["id"] for row in first} & {row["id"] for row in second}
    assert api.get("/balance_transactions", {"payout": "po_nope"}).status_code == 404
    assert api.get("/balance_transactions", {"payout": "x"}).status_code == 400
    # Another merchant cannot see it.
    assert other_api.get("/balance_transactions", {"payout": "po_1"}).status_code == 404

