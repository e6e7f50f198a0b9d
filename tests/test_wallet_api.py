"""Deposits and payouts through the API and the sandbox provider: states, ledger effects, events,
idempotency, tenancy and validation."""

from __future__ import annotations

import pytest
from django.utils import timezone

from ledger.models import JournalEntry
from ledger.selectors import balance_get
from ledger.verify import ledger_verify
from providers.models import ProviderBreaker, SandboxMovement
from providers.sandbox import SandboxProvider
from wallet import services
from wallet.models import Deposit, MovementAttempt, Payout
from wallet.tasks import deposit_refresh, payout_refresh
from webhooks.models import Event

pytestmark = pytest.mark.django_db


def balance(merchant, kind: str, currency: str = "usd") -> int:
    rows = balance_get(merchant=merchant)[kind]
    return next((row["amount"] for row in rows if row["currency"] == currency), 0)


def entry_kinds(reference_id: str) -> list[str]:
    return list(JournalEntry.objects.filter(reference_id=reference_id)
                .order_by("sequence").values_list("kind", flat=True))


def event_types(object_id: str) -> list[str]:
    return list(Event.objects.filter(object_id=object_id).order_by("created_at", "id")
                .values_list("type", flat=True))


def fund(api, amount: int, currency: str = "usd") -> dict:
    response = api.post("/deposits", {"amount": amount, "currency": currency, "method": "pix"})
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "succeeded"
    return response.json()


def pay_out(api, amount: int, destination: str = "ba_checking", **extra):
    return api.post("/payouts", {"amount": amount, "currency": "usd",
                                 "destination": destination}, **extra)


# -- deposits --------------------------------------------------------------------------------
def test_a_confirmed_deposit_adds_to_available(api, merchant):
    body = fund(api, 5000)
    assert body["id"].startswith("dep_")
    assert (body["object"], body["amount"], body["method"], body["provider"]) == (
        "deposit", 5000, "pix", "sandbox")
    assert balance(merchant, "available") == 5000
    assert entry_kinds(body["id"]) == ["deposit_confirmed"]
    assert event_types(body["id"]) == ["deposit.created", "deposit.succeeded"]
    assert api.get(f"/deposits/{body['id']}").json() == body


def test_a_failed_deposit_adds_nothing(api, merchant):
    response = api.post("/deposits", {"amount": 5000, "currency": "usd", "method": "fail"})
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["last_error"]["code"]) == ("failed", "payer_rejected")
    assert balance(merchant, "available") == 0
    assert entry_kinds(body["id"]) == []
    assert event_types(body["id"]) == ["deposit.created", "deposit.failed"]


def test_a_pending_deposit_adds_nothing_until_the_provider_confirms(api, merchant):
    body = api.post("/deposits", {"amount": 700, "currency": "usd", "method": "pending"}).json()
    assert body["status"] == "pending"
    assert balance(merchant, "available") == 0
    assert services.deposit_refresh(deposit_id=body["id"]).status == "pending"  # still waiting

    deposit = Deposit.objects.get(pk=body["id"])
    assert SandboxProvider().complete("deposit", deposit.provider_reference) == "confirmed"
    assert services.deposit_refresh(deposit_id=deposit.id).status == "succeeded"
    assert services.deposit_refresh(deposit_id=deposit.id).status == "succeeded"
    assert balance(merchant, "available") == 700
    assert entry_kinds(deposit.id) == ["deposit_confirmed"]


def test_a_pending_deposit_that_fails_later_adds_nothing(api, merchant):
    body = api.post("/deposits", {"amount": 700, "currency": "usd", "method": "pending"}).json()
    deposit = Deposit.objects.get(pk=body["id"])
    SandboxProvider().complete("deposit", deposit.provider_reference, succeed=False)
    deposit = services.deposit_refresh(deposit_id=deposit.id)
    assert (deposit.status, deposit.failure_code) == ("failed", "payer_rejected")
    assert balance(merchant, "available") == 0
    assert entry_kinds(deposit.id) == []


# -- payouts ---------------------------------------------------------------------------------
def test_a_payout_reserves_the_funds_and_goes_in_transit(api, merchant):
    fund(api, 1000)
    response = pay_out(api, 400)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["id"].startswith("po_")
    assert (body["object"], body["status"], body["destination"]) == (
        "payout", "in_transit", "ba_checking")
    assert balance(merchant, "available") == 600
    assert balance(merchant, "reserved") == 0  # on its way: out of the merchant's accounts
    assert entry_kinds(body["id"]) == ["payout_created", "payout_in_transit"]
    assert event_types(body["id"]) == ["payout.created", "payout.in_transit"]
    attempt = MovementAttempt.objects.get(payout_id=body["id"])
    assert (attempt.status, attempt.kind) == ("accepted", "payout")
    assert api.get(f"/payouts/{body['id']}").json() == body


def test_a_paid_payout_moves_the_funds_out(api, merchant):
    fund(api, 1000)
    payout = Payout.objects.get(pk=pay_out(api, 400).json()["id"])
    assert services.payout_refresh(payout_id=payout.id).status == "in_transit"  # not yet

    SandboxProvider().complete("payout", payout.provider_reference)
    payout = services.payout_refresh(payout_id=payout.id)
    assert payout.status == "paid"
    assert payout.completed_at is not None
    assert balance(merchant, "available") == 600
    assert balance(merchant, "reserved") == 0
    assert entry_kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_paid"]
    assert event_types(payout.id) == ["payout.created", "payout.in_transit", "payout.paid"]
    assert services.payout_refresh(payout_id=payout.id).status == "paid"  # idempotent
    assert entry_kinds(payout.id)[-1] == "payout_paid"
    assert ledger_verify().ok


def test_a_failed_payout_returns_the_funds_to_available(api, merchant):
    fund(api, 1000)
    payout = Payout.objects.get(pk=pay_out(api, 400, "ba_fail").json()["id"])
    assert payout.status == "in_transit"
    assert balance(merchant, "available") == 600

    SandboxProvider().complete("payout", payout.provider_reference)  # ba_fail fails
    payout = services.payout_refresh(payout_id=payout.id)
    assert (payout.status, payout.failure_code) == ("failed", "account_closed")
    assert balance(merchant, "available") == 1000
    assert balance(merchant, "reserved") == 0
    assert entry_kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_failed"]
    assert event_types(payout.id)[-1] == "payout.failed"


def test_a_payout_the_provider_rejects_fails_at_once_and_releases_the_reserve(api, merchant):
    fund(api, 1000)
    body = pay_out(api, 400, "ba_rejected").json()
    assert (body["status"], body["last_error"]["code"]) == ("failed", "account_invalid")
    assert balance(merchant, "available") == 1000
    assert entry_kinds(body["id"]) == ["payout_created", "payout_failed"]
    assert event_types(body["id"]) == ["payout.created", "payout.failed"]


def test_a_payout_above_available_is_409_and_creates_nothing(api, merchant):
    fund(api, 100)
    response = pay_out(api, 101)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "state_error", "insufficient_funds", "amount")
    assert not Payout.objects.exists()
    assert not MovementAttempt.objects.filter(kind="payout").exists()
    assert not Event.objects.filter(type__startswith="payout.").exists()
    assert balance(merchant, "available") == 100
    assert pay_out(api, 100).status_code == 200  # exactly the balance is fine
    assert balance(merchant, "available") == 0


def test_pending_deposits_cannot_be_paid_out(api, merchant):
    api.post("/deposits", {"amount": 700, "currency": "usd", "method": "pending"})
    assert pay_out(api, 1).json()["error"]["code"] == "insufficient_funds"


def test_balances_are_per_currency(api, merchant):
    fund(api, 1000, "eur")
    response = pay_out(api, 10)  # usd
    assert response.json()["error"]["code"] == "insufficient_funds"


# -- idempotency -----------------------------------------------------------------------------
def test_replaying_an_idempotency_key_makes_one_payout(api, merchant):
    fund(api, 1000)
    first = pay_out(api, 300, key="payout-1")
    again = pay_out(api, 300, key="payout-1")
    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Payout.objects.count() == 1
    assert SandboxMovement.objects.filter(kind="payout").count() == 1
    assert balance(merchant, "available") == 700


def test_a_retry_after_a_crash_resumes_the_payout_instead_of_making_another(api, merchant):
    """The idempotency row is gone (taken over), but the payout row carries the key too."""
    fund(api, 1000)
    first = services.payout_create(merchant=merchant, amount=300, currency="usd",
                                   destination="ba_checking", idempotency_key="k-1")
    again = services.payout_create(merchant=merchant, amount=300, currency="usd",
                                   destination="ba_checking", idempotency_key="k-1")
    assert again.id == first.id
    assert Payout.objects.count() == 1
    assert balance(merchant, "available") == 700


def test_same_key_with_a_different_body_is_422(api, merchant):
    fund(api, 1000)
    pay_out(api, 300, key="payout-1")
    response = pay_out(api, 301, key="payout-1")
    assert response.status_code == 422
    assert Payout.objects.count() == 1


def test_replaying_a_deposit_key_makes_one_deposit(api, merchant):
    body = {"amount": 500, "currency": "usd", "method": "pix"}
    first = api.post("/deposits", body, key="dep-1")
    again = api.post("/deposits", body, key="dep-1")
    assert again.json() == first.json()
    assert Deposit.objects.count() == 1
    assert balance(merchant, "available") == 500


def test_a_refused_payout_replays_its_409(api, merchant):
    first = pay_out(api, 100, key="broke")
    fund(api, 1000)
    again = pay_out(api, 100, key="broke")
    assert (first.status_code, again.status_code) == (409, 409)
    assert again["Idempotent-Replayed"] == "true"
    assert not Payout.objects.exists()


# -- tenancy and validation ------------------------------------------------------------------
def test_another_merchants_deposits_and_payouts_are_404(api, other_api):
    fund(api, 1000)
    payout_id = pay_out(api, 100).json()["id"]
    deposit_id = api.get("/deposits").json()["data"][0]["id"]
    for path in (f"/payouts/{payout_id}", f"/deposits/{deposit_id}", "/payouts/po_nope"):
        response = other_api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "resource_missing"
    assert other_api.get("/payouts").json()["data"] == []
    assert other_api.get("/deposits").json()["data"] == []
    cursor = other_api.get("/payouts", {"starting_after": payout_id})
    assert cursor.status_code == 404


@pytest.mark.parametrize("amount", [0, -1, 10.5, "10", True, None, 100_000_000_000, 1e3])
@pytest.mark.parametrize("path", ["/payouts", "/deposits"])
def test_bad_amounts_are_400(api, path, amount):
    fund(api, 1000)
    body = {"amount": amount, "currency": "usd"}
    body.update({"destination": "ba_checking"} if path == "/payouts" else {"method": "pix"})
    response = api.post(path, body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "amount"


@pytest.mark.parametrize("field,value", [
    ("destination", "4242424242424242"), ("destination", "checking"), ("currency", "USD"),
    ("currency", "xxx"), ("status", "paid"), ("merchant", "acct_x"), ("metadata", "x"),
])
def test_bad_payout_fields_are_400(api, field, value):
    fund(api, 1000)
    body = {"amount": 100, "currency": "usd", "destination": "ba_checking", field: value}
    response = api.post("/payouts", body)
    assert response.status_code == 400
    assert not Payout.objects.exists()


def test_lists_are_newest_first_paginated_and_filter_by_status(api):
    fund(api, 1000)
    ids = [pay_out(api, 10).json()["id"] for _ in range(3)]
    failed = pay_out(api, 10, "ba_rejected").json()["id"]
    page = api.get("/payouts", {"limit": 2}).json()
    assert [row["id"] for row in page["data"]] == [failed, ids[2]]
    assert page["has_more"] is True
    rest = api.get("/payouts", {"limit": 10, "starting_after": ids[2]}).json()
    assert [row["id"] for row in rest["data"]] == [ids[1], ids[0]]
    in_transit = api.get("/payouts", {"status": "in_transit"}).json()["data"]
    assert {row["id"] for row in in_transit} == set(ids)
    assert api.get("/payouts", {"status": "nope"}).status_code == 400
    assert api.get("/deposits", {"status": "succeeded"}).json()["data"][0]["amount"] == 1000


# -- lost answers and unavailable providers ------------------------------------------------------
def test_a_lost_payout_answer_keeps_the_reserve_until_the_same_key_resolves_it(api, merchant):
    fund(api, 1000)
    body = pay_out(api, 300, "ba_timeout").json()
    assert body["status"] == "pending"
    attempt = MovementAttempt.objects.get(payout_id=body["id"])
    assert attempt.status == "unknown"
    assert balance(merchant, "available") == 700

    payout_refresh(body["id"])  # the janitor's task: same attempt, same provider key
    payout = Payout.objects.get(pk=body["id"])
    assert payout.status == "in_transit"
    assert payout.attempts.get().pk == attempt.pk
    assert SandboxMovement.objects.filter(merchant_reference=payout.id).count() == 1


def test_a_lost_deposit_answer_is_resolved_without_collecting_twice(api, merchant):
    body = api.post("/deposits", {"amount": 800, "currency": "usd", "method": "timeout"}).json()
    assert body["status"] == "pending"
    assert balance(merchant, "available") == 0
    deposit_refresh(body["id"])
    assert Deposit.objects.get(pk=body["id"]).status == "succeeded"
    assert SandboxMovement.objects.filter(merchant_reference=body["id"]).count() == 1
    assert balance(merchant, "available") == 800


def test_with_no_provider_available_a_payout_is_refused_before_reserving(api, merchant):
    fund(api, 1000)
    ProviderBreaker.objects.create(provider="sandbox", state="open", opened_at=timezone.now(),
                                   failure_count=99)
    response = pay_out(api, 300, key="no-provider")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert not Payout.objects.exists()
    assert balance(merchant, "available") == 1000
