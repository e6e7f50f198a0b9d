"""The payments money model with deposits and payouts added: whatever the sequence, a payout
never overdraws `available`, and the merchant's balance is still explained exactly, now
+ Σ deposits confirmed − Σ payouts sent (in transit or paid; a failed one comes back).

Until these rules join the machine in test_money_model_properties.py (that file's owner), this
subclass runs them with fewer examples (HYPOTHESIS_WALLET_EXAMPLES) to keep the suite quick."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.errors import InsufficientFunds
from ledger.models import Posting
from ledger.verify import ledger_verify
from providers.sandbox import SandboxProvider
from tests import test_money_model_properties as base
from wallet import services as wallet
from wallet.models import Deposit, Payout

EXAMPLES = int(os.environ.get("HYPOTHESIS_WALLET_EXAMPLES", "25"))
OPEN_PAYOUT = ("pending", "in_transit")


class WalletMoneyMachine(base.MoneyMachine):
    @initialize()
    def start(self) -> None:
        super().start()
        self.deposited = self.sent = 0
        self.deposit_ids: list[str] = []
        self.payout_ids: list[str] = []

    def _pick_movement(self, model, ids: list[str], data: st.DataObject, *statuses: str):
        rows = {row.id: row for row in model.objects.filter(pk__in=ids, status__in=statuses)}
        candidates = [rows[pk] for pk in ids if pk in rows]
        return candidates[data.draw(st.integers(0, len(candidates) - 1))]

    # -- deposits -----------------------------------------------------------------------------
    @rule(amount=base.AMOUNTS, method=st.sampled_from(["pix", "pix", "pending", "fail",
                                                       "timeout"]))
    def deposit(self, amount: int, method: str) -> None:
        deposit = wallet.deposit_create(merchant=self.merchant, amount=amount, currency="usd",
                                        method=method)
        self.deposit_ids.append(deposit.id)
        if deposit.status == "succeeded":
            self.deposited += amount

    @precondition(lambda self: Deposit.objects.filter(pk__in=self.deposit_ids,
                                                      status="pending").exists())
    @rule(data=st.data(), succeed=st.booleans())
    def deposit_finishes(self, data: st.DataObject, succeed: bool) -> None:
        deposit = self._pick_movement(Deposit, self.deposit_ids, data, "pending")
        if deposit.provider_reference:
            SandboxProvider().complete("deposit", deposit.provider_reference, succeed=succeed)
        deposit = wallet.deposit_refresh(deposit_id=deposit.id)
        if deposit.status == "succeeded":
            self.deposited += deposit.amount

    # -- payouts ------------------------------------------------------------------------------
    @rule(amount=base.AMOUNTS, destination=st.sampled_from(
        ["ba_checking", "ba_checking", "ba_fail", "ba_rejected", "ba_timeout"]))
    def payout(self, amount: int, destination: str) -> None:
        available = base._merchant_balances(self.merchant).get("available", 0)
        try:
            payout = wallet.payout_create(merchant=self.merchant, amount=amount,
                                          currency="usd", destination=destination)
        except InsufficientFunds:
            assert amount > available
            return
        assert amount <= available
        self.payout_ids.append(payout.id)
        if payout.status == "in_transit":
            self.sent += amount

    @precondition(lambda self: Payout.objects.filter(pk__in=self.payout_ids,
                                                     status__in=OPEN_PAYOUT).exists())
    @rule(data=st.data())
    def payout_finishes(self, data: st.DataObject) -> None:
        payout = self._pick_movement(Payout, self.payout_ids, data, *OPEN_PAYOUT)
        before = payout.status
        if payout.provider_reference:
            SandboxProvider().complete("payout", payout.provider_reference)
        payout = wallet.payout_refresh(payout_id=payout.id)
        if before == "pending" and payout.status in ("in_transit", "paid"):
            self.sent += payout.amount
        elif before == "in_transit" and payout.status == "failed":
            self.sent -= payout.amount

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def merchant_balance_is_explained(self) -> None:
        balances = base._merchant_balances(self.merchant)
        assert balances.get("disputed", 0) >= 0
        assert balances.get("pending", 0) == self.captured - self.settled
        # Sandbox refunds finish at once, so what stays reserved is the payouts not yet sent.
        assert balances.get("reserved", 0) == sum(Payout.objects.filter(
            pk__in=self.payout_ids, status="pending").values_list("amount", flat=True))
        assert sum(balances.values()) == (self.captured - self.refunded - self.lost - self.fees
                                          + self.deposited - self.sent)

    @invariant()
    def no_payout_overdrew_available(self) -> None:
        assert not Posting.objects.filter(
            merchant=self.merchant, entry__kind="payout_created", account__kind="available",
            balance_after__lt=0).exists()


@pytest.mark.django_db
def test_money_model_with_deposits_and_payouts_holds_for_any_sequence(settings):
    # As in the payments machine: the breaker's state is a database row that outlives each
    # example and cools down by the wall clock, so a run of timeouts (pm_card_timeout,
    # `timeout` deposits, ba_timeout payouts) opening it would make an example replay
    # differently (FlakyStrategyDefinition). This machine is about money; the breaker has its
    # own tests.
    settings.PROVIDER_BREAKER = {**settings.PROVIDER_BREAKER, "failure_threshold": 10**9}
    run_state_machine_as_test(WalletMoneyMachine, settings=hypothesis_settings(
        max_examples=EXAMPLES, stateful_step_count=base.STEPS, deadline=None,
        suppress_health_check=list(HealthCheck)))
    result = ledger_verify()
    assert result.ok, result.report()
