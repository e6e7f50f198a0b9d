"""Thin read-only views: the merchant's balance, its balance transactions (postings) and the latest
signed ledger checkpoint with proofs for the merchant's own accounts."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ERRORS, LIST_PARAMETERS, ApiView, RetrieveView
from core.errors import NotFound
from core.pagination import paginate
from ledger import reports, selectors
from ledger.checkpoints import merchant_proof
from ledger.serializers import (
    BalanceFilters,
    BalanceOutput,
    BalanceTransactionFilters,
    BalanceTransactionOutput,
    CheckpointOutput,
    PeriodReportFilters,
    PeriodReportOutput,
    posting_to_dict,
    report_to_dict,
)


class BalanceDetail(ApiView):
    @extend_schema(
        operation_id="balance_retrieve", responses={200: BalanceOutput, **ERRORS},
        parameters=[BalanceFilters],
        description="Your balances per currency. `pending` becomes `available` at settlement; "
                    "`reserved` is held for payouts and refunds in flight; `disputed` is held "
                    "by open disputes. `available` may be negative after refunds or disputes.",
    )
    def get(self, request: Request) -> Response:
        as_of = self.query(BalanceFilters, request).get("as_of")
        if as_of is None:
            balance = selectors.balance_get(merchant=request.user)
        else:
            balance = reports.merchant_balance_as_of(merchant=request.user, as_of=as_of)
        return Response({"object": "balance", **balance, "livemode": request.user.is_live})


class BalanceTransactionCollection(ApiView):
    @extend_schema(
        operation_id="balance_transactions_list",
        parameters=[*LIST_PARAMETERS, BalanceTransactionFilters],
        responses={200: inline_serializer("BalanceTransactionList", fields={
            "object": serializers.CharField(default="list"),
            "data": BalanceTransactionOutput(many=True),
            "has_more": serializers.BooleanField(),
        }), **ERRORS},
        description="Every movement of your balances, newest first, each linked to its journal "
                    "entry (`txn_…`) and to the object that caused it (`source`).",
    )
    def get(self, request: Request) -> Response:
        filters = self.query(BalanceTransactionFilters, request)
        payout = filters.pop("payout", None)
        rows = selectors.posting_list(merchant=request.user, **filters)
        if payout:
            rows = rows & reports.payout_postings(merchant=request.user, payout_id=payout)
        return Response(paginate(rows, request, posting_to_dict))


class BalanceTransactionDetail(RetrieveView, plural="balance_transactions",
                               output=BalanceTransactionOutput, selector=selectors.posting_get,
                               render=posting_to_dict):
    pass


class CheckpointDetail(ApiView):
    @extend_schema(
        operation_id="ledger_checkpoint_retrieve", responses={200: CheckpointOutput, **ERRORS},
        description="The latest signed checkpoint of the ledger, with an inclusion proof for "
                    "each of your accounts. With your balance transactions and our public key, "
                    "`python ledger/chain.py checkpoint.json --public-key … "
                    "--balance-transactions bts.json` proves offline that they are covered "
                    "and were not rewritten since.",
    )
    def get(self, request: Request) -> Response:
        proof = merchant_proof(merchant_id=request.user.pk)
        if proof is None:
            raise NotFound("No ledger checkpoint has been signed yet; one is made every few "
                           "minutes.")
        return Response(proof)


class BalanceReport(ApiView):
    @extend_schema(
        operation_id="balance_report_retrieve", parameters=[PeriodReportFilters],
        responses={200: PeriodReportOutput, **ERRORS},
        description="Your month-close report for one currency and period [start, end): each "
                    "balance type's opening and closing amount and what moved it, by category. "
                    "Opening + movements = closing, to the cent; both ends are read from the "
                    "ledger as of that moment.",
    )
    def get(self, request: Request) -> Response:
        filters = self.query(PeriodReportFilters, request)
        with reports.one_snapshot():
            report = reports.period_report(merchant=request.user, **filters)
        return Response(report_to_dict(report))
