"""Disputes: opening holds the amount, lost charges it back, won releases it; the API lets the
merchant submit evidence or accept the loss."""

import pytest

from core.errors import StateError
from payments import services
from payments.models import Dispute
from tests.factories import balances_of

pytestmark = pytest.mark.django_db


def test_a_lost_dispute_charges_the_payment_back(merchant, settled_payment, api):
    before = balances_of(merchant)
    dispute = services.dispute_open(payment_id=settled_payment.id, amount=10000,
                                    reason="fraudulent", provider_reference="cb_1")
    opened = balances_of(merchant)
    assert opened["available"] == before["available"] - 10000
    assert opened["disputed"] == 10000
    response = api.post(f"/disputes/{dispute.id}/close")
    assert response.status_code == 200
    assert response.json()["status"] == "lost"
    after = balances_of(merchant)
    assert after["available"] == before["available"] - 10000
    assert after["disputed"] == 0
    settled_payment.refresh_from_db()
    assert settled_payment.status == "charged_back"


def test_a_won_dispute_releases_the_hold(merchant, settled_payment):
    before = balances_of(merchant)
    dispute = services.dispute_open(payment_id=settled_payment.id)
    services.dispute_resolve(dispute_id=dispute.id, won=True)
    after = balances_of(merchant)
    assert after["available"] == before["available"]
    assert after["disputed"] == 0
    settled_payment.refresh_from_db()
    assert settled_payment.status == "settled"
    assert settled_payment.amount_disputed == 0


def test_a_dispute_may_take_available_negative(merchant, make_payment):
    """Funds still pending (not settled): the hold comes out of available, which goes negative,
    as at Stripe. Payouts can never do that (see the payout tests)."""
    payment = make_payment(5000)
    services.dispute_open(payment_id=payment.id)
    assert balances_of(merchant)["available"] == -5000


def test_evidence_moves_the_dispute_under_review(api, settled_payment):
    # The evidence goes to the provider (the sandbox here), so the case needs its reference.
    dispute = services.dispute_open(payment_id=settled_payment.id, amount=2500,
                                    provider_reference="cb_review")
    response = api.post(f"/disputes/{dispute.id}",
                        {"evidence": {"customer_communication": "They received it."}})
    assert response.status_code == 200
    assert response.json()["status"] == "under_review"
    assert response.json()["evidence"]["customer_communication"] == "They received it."
    listing = api.get("/disputes", {"payment": settled_payment.id}).json()
    assert [d["id"] for d in listing["data"]] == [dispute.id]


def test_evidence_after_the_decision_is_409(api, settled_payment):
    dispute = services.dispute_open(payment_id=settled_payment.id)
    services.dispute_resolve(dispute_id=dispute.id, won=True)
    response = api.post(f"/disputes/{dispute.id}", {"evidence": {"note": "late"}})
    assert response.status_code == 409


def test_another_merchants_dispute_is_404(other_api, settled_payment):
    dispute = services.dispute_open(payment_id=settled_payment.id)
    assert other_api.get(f"/disputes/{dispute.id}").status_code == 404
    assert other_api.post(f"/disputes/{dispute.id}/close").status_code == 404
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"


def test_the_same_provider_notice_twice_opens_one_dispute(settled_payment):
    first = services.dispute_open(payment_id=settled_payment.id, provider_reference="cb_9")
    second = services.dispute_open(payment_id=settled_payment.id, provider_reference="cb_9")
    assert first.id == second.id
    assert Dispute.objects.count() == 1


def test_a_disputed_amount_cannot_be_refunded(api, settled_payment):
    services.dispute_open(payment_id=settled_payment.id, amount=8000)
    response = api.post("/refunds", {"payment": settled_payment.id, "amount": 2001})
    assert response.status_code == 409
    assert api.post("/refunds", {"payment": settled_payment.id, "amount": 2000}
                    ).status_code == 200


def test_dispute_larger_than_the_capture_is_refused(settled_payment):
    with pytest.raises(StateError):
        services.dispute_open(payment_id=settled_payment.id, amount=10001)
