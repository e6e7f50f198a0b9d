"""The money flows payments, disputes, deposits and payouts post, and the balances they leave."""

from __future__ import annotations

import pytest

from core.errors import InsufficientFunds
from ledger import flows
from ledger.models import Account, JournalEntry
from ledger.verify import ledger_verify

USD = {"currency": "usd"}


def balances(merchant) -> dict[str, int]:
    rows = Account.objects.filter(merchant=merchant, currency="usd")
    return {kind: balance for kind, balance in rows.values_list("kind", "balance")}


def platform(kind: str, provider: str = "") -> int:
    account = Account.objects.filter(merchant=None, currency="usd", kind=kind,
                                     provider=provider).first()
    return account.balance if account else 0


def merchant_total(merchant) -> int:
    return sum(balances(merchant).values())


@pytest.fixture
def settled(merchant):
    """A captured and settled payment of 10 000 (fee 300): 9 700 available."""
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox", amount=10_000,
                       **USD)
    flows.post_settlement(merchant=merchant, payment_id="pay_1", amount=10_000, fee=300, **USD)
    return merchant


@pytest.mark.django_db
def test_capture_moves_provider_clearing_to_pending(merchant):
    entry = flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               amount=10_000, **USD)
    assert (entry.kind, entry.reference_type, entry.reference_id) == ("capture", "payment",
                                                                      "pay_1")
    assert entry.merchant == merchant
    assert balances(merchant) == {"pending": 10_000}
    assert platform("provider_clearing", "sandbox") == -10_000


@pytest.mark.django_db
def test_settlement_makes_pending_available_less_fees(settled):
    assert balances(settled) == {"pending": 0, "available": 9_700}
    assert platform("fees") == 300


@pytest.mark.django_db
def test_settlement_without_fee_or_all_fee(merchant):
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox", amount=50,
                       **USD)
    flows.post_capture(merchant=merchant, payment_id="pay_2", provider="sandbox", amount=50,
                       **USD)
    flows.post_settlement(merchant=merchant, payment_id="pay_1", amount=50, **USD)
    flows.post_settlement(merchant=merchant, payment_id="pay_2", amount=50, fee=50, **USD)
    assert balances(merchant) == {"pending": 0, "available": 50}
    assert platform("fees") == 50
    with pytest.raises(ValueError, match="fee"):
        flows.post_settlement(merchant=merchant, payment_id="pay_3", amount=50, fee=51, **USD)


@pytest.mark.django_db
def test_refund_reserves_on_create_and_pays_out_to_the_provider_on_success(settled):
    flows.post_refund_created(merchant=settled, refund_id="re_1", payment_id="pay_1",
                              amount=1_000, **USD)
    assert balances(settled) == {"pending": 0, "available": 8_700, "reserved": 1_000}
    flows.post_refund_succeeded(merchant=settled, refund_id="re_1", payment_id="pay_1",
                                provider="sandbox", amount=1_000, **USD)
    assert balances(settled) == {"pending": 0, "available": 8_700, "reserved": 0}
    assert platform("provider_clearing", "sandbox") == -9_000


@pytest.mark.django_db
def test_failed_refund_releases_the_reservation(settled):
    flows.post_refund_created(merchant=settled, refund_id="re_1", payment_id="pay_1",
                              amount=1_000, **USD)
    flows.post_refund_failed(merchant=settled, refund_id="re_1", payment_id="pay_1",
                             amount=1_000, **USD)
    assert balances(settled) == {"pending": 0, "available": 9_700, "reserved": 0}


@pytest.mark.django_db
def test_refund_may_take_available_negative_like_stripe(merchant):
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox", amount=1_000,
                       **USD)
    flows.post_refund_created(merchant=merchant, refund_id="re_1", payment_id="pay_1",
                              amount=1_000, **USD)
    assert balances(merchant)["available"] == -1_000


@pytest.mark.django_db
def test_dispute_opened_then_lost_charges_the_merchant_back(settled):
    before = balances(settled)["available"]
    flows.post_dispute_opened(merchant=settled, dispute_id="dp_1", payment_id="pay_1",
                              amount=10_000, **USD)
    assert balances(settled)["disputed"] == 10_000
    flows.post_dispute_lost(merchant=settled, dispute_id="dp_1", payment_id="pay_1",
                            provider="sandbox", amount=10_000, **USD)
    after = balances(settled)
    assert after["available"] == before - 10_000
    assert after["disputed"] == 0


@pytest.mark.django_db
def test_dispute_opened_then_won_restores_available(settled):
    before = balances(settled)["available"]
    flows.post_dispute_opened(merchant=settled, dispute_id="dp_1", payment_id="pay_1",
                              amount=10_000, **USD)
    assert balances(settled)["available"] == before - 10_000  # negative: allowed for disputes
    flows.post_dispute_won(merchant=settled, dispute_id="dp_1", payment_id="pay_1",
                           amount=10_000, **USD)
    assert balances(settled)["available"] == before
    assert balances(settled)["disputed"] == 0


@pytest.mark.django_db
def test_deposit_confirmed_raises_available(merchant):
    flows.post_deposit_confirmed(merchant=merchant, deposit_id="dep_1", amount=2_500, **USD)
    assert balances(merchant) == {"available": 2_500}
    assert platform("deposits_clearing") == -2_500


@pytest.mark.django_db
def test_payout_reserves_then_goes_in_transit_then_is_paid(settled):
    flows.post_payout_created(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    assert balances(settled) == {"pending": 0, "available": 700, "reserved": 9_000}
    flows.post_payout_in_transit(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    assert balances(settled)["reserved"] == 0
    assert platform("payouts_in_transit") == 9_000
    flows.post_payout_paid(merchant=settled, payout_id="po_1", provider="sandbox",
                           amount=9_000, **USD)
    assert platform("payouts_in_transit") == 0
    assert platform("provider_clearing", "sandbox") == -1_000


@pytest.mark.django_db
def test_payout_paid_straight_from_pending_takes_the_reservation(settled):
    flows.post_payout_created(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    flows.post_payout_paid(merchant=settled, payout_id="po_1", provider="sandbox",
                           amount=9_000, **USD)
    assert balances(settled)["reserved"] == 0
    assert platform("payouts_in_transit") == 0


@pytest.mark.django_db
@pytest.mark.parametrize("in_transit", [False, True])
def test_failed_payout_returns_to_available_from_wherever_it_was(settled, in_transit):
    flows.post_payout_created(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    if in_transit:
        flows.post_payout_in_transit(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    flows.post_payout_failed(merchant=settled, payout_id="po_1", amount=9_000, **USD)
    assert balances(settled) == {"pending": 0, "available": 9_700, "reserved": 0}
    assert platform("payouts_in_transit") == 0


@pytest.mark.django_db
def test_payout_can_never_overdraw_available(settled):
    with pytest.raises(InsufficientFunds) as refused:
        flows.post_payout_created(merchant=settled, payout_id="po_1", amount=9_701, **USD)
    assert refused.value.status_code == 409
    assert refused.value.code == "insufficient_funds"
    assert balances(settled)["available"] == 9_700
    assert not JournalEntry.objects.filter(kind="payout_created").exists()


@pytest.mark.django_db
def test_payout_refused_while_available_is_negative_after_a_dispute(settled):
    flows.post_dispute_opened(merchant=settled, dispute_id="dp_1", payment_id="pay_1",
                              amount=10_000, **USD)
    flows.post_deposit_confirmed(merchant=settled, deposit_id="dep_1", amount=100, **USD)
    with pytest.raises(InsufficientFunds):
        flows.post_payout_created(merchant=settled, payout_id="po_1", amount=1, **USD)


@pytest.mark.django_db
def test_each_flow_posts_once_per_business_object(settled):
    again = flows.post_capture(merchant=settled, payment_id="pay_1", provider="sandbox",
                               amount=10_000, **USD)
    assert JournalEntry.objects.filter(kind="capture").get() == again
    assert balances(settled)["available"] == 9_700


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_flows_refuse_non_positive_or_non_integer_amounts(merchant, amount):
    with pytest.raises(ValueError, match="positive int"):
        flows.post_deposit_confirmed(merchant=merchant, deposit_id="dep_1", amount=amount,
                                     **USD)


@pytest.mark.django_db
def test_merchant_balance_equals_captured_less_refunds_disputes_payouts_plus_deposits(merchant):
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox", amount=8_000,
                       **USD)
    flows.post_capture(merchant=merchant, payment_id="pay_2", provider="other", amount=2_000,
                       **USD)
    flows.post_settlement(merchant=merchant, payment_id="pay_1", amount=8_000, fee=200, **USD)
    flows.post_refund_created(merchant=merchant, refund_id="re_1", payment_id="pay_1",
                              amount=500, **USD)
    flows.post_refund_succeeded(merchant=merchant, refund_id="re_1", payment_id="pay_1",
                                provider="sandbox", amount=500, **USD)
    flows.post_dispute_opened(merchant=merchant, dispute_id="dp_1", payment_id="pay_1",
                              amount=1_000, **USD)
    flows.post_dispute_lost(merchant=merchant, dispute_id="dp_1", payment_id="pay_1",
                            provider="sandbox", amount=1_000, **USD)
    flows.post_deposit_confirmed(merchant=merchant, deposit_id="dep_1", amount=3_000, **USD)
    flows.post_payout_created(merchant=merchant, payout_id="po_1", amount=4_000, **USD)
    flows.post_payout_in_transit(merchant=merchant, payout_id="po_1", amount=4_000, **USD)
    flows.post_payout_paid(merchant=merchant, payout_id="po_1", provider="sandbox",
                           amount=4_000, **USD)
    captured, refunded, lost, paid_out, deposits, fees = 10_000, 500, 1_000, 4_000, 3_000, 200
    assert merchant_total(merchant) == (captured - refunded - lost - paid_out + deposits - fees)
    assert balances(merchant)["pending"] == 2_000  # pay_2 is not settled yet
    result = ledger_verify()
    assert result.ok, result.report()
