"""A hypothesis state machine over the money flows: balances always match a simple model.

Each example runs in a savepoint that is rolled back, after the COMMIT-time checks have run.
LEDGER_HYPOTHESIS_EXAMPLES (default 30) × 30 steps keeps CI short; raise it locally.
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import count

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.errors import InsufficientFunds
from ledger import flows
from ledger.models import Account
from ledger.verify import ledger_verify
from tests.factories import MerchantFactory

EXAMPLES = int(os.environ.get("LEDGER_HYPOTHESIS_EXAMPLES", "30"))
AMOUNTS = st.integers(min_value=1, max_value=20_000)
ids = count(1)


class LedgerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.savepoint = transaction.atomic()
        self.savepoint.__enter__()
        self.merchant = MerchantFactory()
        self.on = {"merchant": self.merchant, "currency": "usd"}
        self.expected: Counter[str] = Counter()  # merchant account kind → balance
        self.totals: Counter[str] = Counter()  # captured, refunded, lost, paid_out, deposits, fees
        self.payments: dict[str, dict[str, int]] = {}  # id → captured, refundable, disputable
        self.unsettled: set[str] = set()
        self.refunds: dict[str, tuple[str, int]] = {}  # pending: id → (payment, amount)
        self.disputes: dict[str, tuple[str, int]] = {}  # open: id → (payment, amount)
        self.payouts: dict[str, tuple[int, str]] = {}  # open: id → (amount, pending|in_transit)

    def teardown(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT would check
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            result = ledger_verify()
            assert result.ok, result.report()
        finally:
            transaction.set_rollback(True)
            self.savepoint.__exit__(None, None, None)

    def move(self, source: str, target: str, amount: int) -> None:
        self.expected[source] -= amount
        self.expected[target] += amount

    # -- payments ----------------------------------------------------------------------------
    @rule(amount=AMOUNTS)
    def capture(self, amount: int) -> None:
        payment_id = f"pay_{next(ids)}"
        flows.post_capture(payment_id=payment_id, provider="sandbox", amount=amount, **self.on)
        self.payments[payment_id] = {"captured": amount, "refundable": amount,
                                     "disputable": amount}
        self.unsettled.add(payment_id)
        self.expected["pending"] += amount
        self.totals["captured"] += amount

    @precondition(lambda self: self.unsettled)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        payment_id = data.draw(st.sampled_from(sorted(self.unsettled)))
        amount = self.payments[payment_id]["captured"]
        fee = amount * 29 // 1000
        flows.post_settlement(payment_id=payment_id, amount=amount, fee=fee, **self.on)
        self.unsettled.remove(payment_id)
        self.expected["pending"] -= amount
        self.expected["available"] += amount - fee
        self.totals["fees"] += fee

    def draw_from(self, data: st.DataObject, budget: str) -> tuple[str, int]:
        """A payment with some `budget` left (refundable or disputable) and an amount within
        it, taken off that budget."""
        payment_id = data.draw(st.sampled_from(
            sorted(k for k, p in self.payments.items() if p[budget])))
        amount = data.draw(st.integers(1, self.payments[payment_id][budget]))
        self.payments[payment_id][budget] -= amount
        return payment_id, amount

    @precondition(lambda self: any(p["refundable"] for p in self.payments.values()))
    @rule(data=st.data())
    def refund_create(self, data: st.DataObject) -> None:
        payment_id, amount = self.draw_from(data, "refundable")
        refund_id = f"re_{next(ids)}"
        flows.post_refund_created(refund_id=refund_id, payment_id=payment_id, amount=amount,
                                  **self.on)
        self.refunds[refund_id] = (payment_id, amount)
        self.move("available", "reserved", amount)

    @precondition(lambda self: self.refunds)
    @rule(data=st.data(), succeeded=st.booleans())
    def refund_finish(self, data: st.DataObject, succeeded: bool) -> None:
        refund_id = data.draw(st.sampled_from(sorted(self.refunds)))
        payment_id, amount = self.refunds.pop(refund_id)
        common = {"refund_id": refund_id, "payment_id": payment_id, "amount": amount, **self.on}
        if succeeded:
            flows.post_refund_succeeded(provider="sandbox", **common)
            self.expected["reserved"] -= amount
            self.totals["refunded"] += amount
        else:
            flows.post_refund_failed(**common)
            self.payments[payment_id]["refundable"] += amount
            self.move("reserved", "available", amount)

    # -- disputes ----------------------------------------------------------------------------
    @precondition(lambda self: any(p["disputable"] for p in self.payments.values()))
    @rule(data=st.data())
    def dispute_open(self, data: st.DataObject) -> None:
        payment_id, amount = self.draw_from(data, "disputable")
        dispute_id = f"dp_{next(ids)}"
        flows.post_dispute_opened(dispute_id=dispute_id, payment_id=payment_id, amount=amount,
                                  **self.on)
        self.disputes[dispute_id] = (payment_id, amount)
        self.move("available", "disputed", amount)

    @precondition(lambda self: self.disputes)
    @rule(data=st.data(), won=st.booleans())
    def dispute_close(self, data: st.DataObject, won: bool) -> None:
        dispute_id = data.draw(st.sampled_from(sorted(self.disputes)))
        payment_id, amount = self.disputes.pop(dispute_id)
        common = {"dispute_id": dispute_id, "payment_id": payment_id, "amount": amount,
                  **self.on}
        if won:
            flows.post_dispute_won(**common)
            self.move("disputed", "available", amount)
        else:
            flows.post_dispute_lost(provider="sandbox", **common)
            self.expected["disputed"] -= amount
            self.totals["lost"] += amount

    # -- wallet ------------------------------------------------------------------------------
    @rule(amount=AMOUNTS)
    def deposit(self, amount: int) -> None:
        flows.post_deposit_confirmed(deposit_id=f"dep_{next(ids)}", amount=amount, **self.on)
        self.expected["available"] += amount
        self.totals["deposits"] += amount

    @rule(amount=AMOUNTS)
    def payout_create(self, amount: int) -> None:
        payout_id = f"po_{next(ids)}"
        if amount > self.expected["available"]:
            with pytest.raises(InsufficientFunds):
                flows.post_payout_created(payout_id=payout_id, amount=amount, **self.on)
            return
        flows.post_payout_created(payout_id=payout_id, amount=amount, **self.on)
        self.payouts[payout_id] = (amount, "pending")
        self.move("available", "reserved", amount)

    @precondition(lambda self: self.payouts)
    @rule(data=st.data(), outcome=st.sampled_from(["in_transit", "paid", "failed"]))
    def payout_advance(self, data: st.DataObject, outcome: str) -> None:
        payout_id = data.draw(st.sampled_from(sorted(self.payouts)))
        amount, state = self.payouts.pop(payout_id)
        common = {"payout_id": payout_id, "amount": amount, **self.on}
        if outcome == "failed":
            flows.post_payout_failed(**common)
            self.expected["available"] += amount
            if state == "pending":
                self.expected["reserved"] -= amount
            else:
                self.totals["paid_out"] -= amount
            return
        if state == "pending":
            self.expected["reserved"] -= amount
            self.totals["paid_out"] += amount  # it has left the merchant's balances
        if outcome == "in_transit":
            if state == "pending":
                flows.post_payout_in_transit(**common)
            self.payouts[payout_id] = (amount, "in_transit")
        else:
            flows.post_payout_paid(provider="sandbox", **common)  # from pending or in transit

    # -- what must always hold ---------------------------------------------------------------
    @invariant()
    def balances_match_the_model(self) -> None:
        stored = Counter(dict(Account.objects.filter(merchant=self.merchant)
                              .values_list("kind", "balance")))
        assert +stored == +self.expected  # unary + drops zero entries on both sides

    @invariant()
    def reserved_is_never_negative(self) -> None:
        assert self.expected["reserved"] >= 0

    @invariant()
    def merchant_total_is_explained(self) -> None:
        t = self.totals
        assert sum(self.expected.values()) == (t["captured"] - t["refunded"] - t["lost"]
                                               - t["paid_out"] + t["deposits"] - t["fees"])


@pytest.mark.django_db
def test_ledger_flows_match_the_model():
    run_state_machine_as_test(LedgerModel, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
