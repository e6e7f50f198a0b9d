"""Thin DRF views for deposits and payouts: validate, call one service, render."""

from __future__ import annotations

from core.api import ListView, RetrieveView
from wallet import selectors, services
from wallet.payloads import deposit_to_dict, payout_to_dict
from wallet.serializers import (
    DepositCreateInput,
    DepositListFilters,
    DepositOutput,
    PayoutCreateInput,
    PayoutListFilters,
    PayoutOutput,
)


class DepositCollection(
    ListView, plural="deposits", output=DepositOutput, render=deposit_to_dict,
    selector=selectors.deposit_list, filters=DepositListFilters,
    create=services.deposit_create, create_input=DepositCreateInput,
    create_description="Add funds to your balance. The deposit starts `pending`; its amount "
                       "reaches `available` only when the provider confirms it (status "
                       "`succeeded`).",
):
    pass


class DepositDetail(RetrieveView, plural="deposits", output=DepositOutput,
                    selector=selectors.deposit_get, render=deposit_to_dict):
    pass


class PayoutCollection(
    ListView, plural="payouts", output=PayoutOutput, render=payout_to_dict,
    selector=selectors.payout_list, filters=PayoutListFilters,
    create=services.payout_create, create_input=PayoutCreateInput,
    create_description="Send funds from your available balance to a bank account. The amount "
                       "is reserved at once (409 `insufficient_funds` if available cannot cover "
                       "it); the payout goes `pending` → `in_transit` → `paid` or `failed`, and "
                       "a failed payout returns the amount to available.",
):
    pass


class PayoutDetail(RetrieveView, plural="payouts", output=PayoutOutput,
                   selector=selectors.payout_get, render=payout_to_dict):
    pass
