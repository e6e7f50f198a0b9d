"""Thin DRF views for deposits and payouts: validate, call one service, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import (
    ERRORS,
    IDEMPOTENCY_HEADER,
    LIST_PARAMETERS,
    POST_ERRORS,
    ApiView,
    list_of,
)
from core.pagination import paginate
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


class DepositCollection(ApiView):
    @extend_schema(
        operation_id="deposits_create", request=DepositCreateInput,
        parameters=[IDEMPOTENCY_HEADER], responses={200: DepositOutput, **POST_ERRORS},
        description="Add funds to your balance. The deposit starts `pending`; its amount reaches "
                    "`available` only when the provider confirms it (status `succeeded`).",
    )
    def post(self, request: Request) -> Response:
        data = self.validated(DepositCreateInput, request)
        deposit = services.deposit_create(
            merchant=request.user, **self.idempotency(request), **data)
        return Response(deposit_to_dict(deposit))

    @extend_schema(operation_id="deposits_list",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("status", str)],
                   responses={200: list_of(DepositOutput, "DepositList"), **ERRORS})
    def get(self, request: Request) -> Response:
        rows = selectors.deposit_list(merchant=request.user,
                                      **self.query(DepositListFilters, request))
        return Response(paginate(rows, request, deposit_to_dict))


class DepositDetail(ApiView):
    @extend_schema(operation_id="deposits_retrieve", responses={200: DepositOutput, **ERRORS})
    def get(self, request: Request, deposit_id: str) -> Response:
        return Response(deposit_to_dict(
            selectors.deposit_get(merchant=request.user, deposit_id=deposit_id)))


class PayoutCollection(ApiView):
    @extend_schema(
        operation_id="payouts_create", request=PayoutCreateInput,
        parameters=[IDEMPOTENCY_HEADER], responses={200: PayoutOutput, **POST_ERRORS},
        description="Send funds from your available balance to a bank account. The amount is "
                    "reserved at once (409 `insufficient_funds` if available cannot cover it); "
                    "the payout goes `pending` → `in_transit` → `paid` or `failed`, and a "
                    "failed payout returns the amount to available.",
    )
    def post(self, request: Request) -> Response:
        data = self.validated(PayoutCreateInput, request)
        payout = services.payout_create(
            merchant=request.user, **self.idempotency(request), **data)
        return Response(payout_to_dict(payout))

    @extend_schema(operation_id="payouts_list",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("status", str)],
                   responses={200: list_of(PayoutOutput, "PayoutList"), **ERRORS})
    def get(self, request: Request) -> Response:
        rows = selectors.payout_list(merchant=request.user,
                                     **self.query(PayoutListFilters, request))
        return Response(paginate(rows, request, payout_to_dict))


class PayoutDetail(ApiView):
    @extend_schema(operation_id="payouts_retrieve", responses={200: PayoutOutput, **ERRORS})
    def get(self, request: Request, payout_id: str) -> Response:
        return Response(payout_to_dict(
            selectors.payout_get(merchant=request.user, payout_id=payout_id)))
