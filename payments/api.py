"""Thin DRF views for payments and refunds: validate, call one service, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import (
    ERRORS,
    IDEMPOTENCY_HEADER,
    LIST_PARAMETERS,
    POST_ERRORS,
    ApiView,
    ListView,
    RetrieveView,
    list_of,
)
from core.errors import InvalidRequest
from core.pagination import paginate
from payments import selectors, services
from payments.models import DisputeStatus
from payments.payloads import dispute_to_dict, payment_to_dict, refund_to_dict
from payments.serializers import (
    DisputeEvidenceInput,
    DisputeOutput,
    EmptyInput,
    PaymentCancelInput,
    PaymentCaptureInput,
    PaymentCreateInput,
    PaymentListFilters,
    PaymentOutput,
    RefundCreateInput,
    RefundOutput,
)


class PaymentCollection(ListView, plural="payments", output=PaymentOutput,
                        selector=selectors.payment_list, render=payment_to_dict,
                        filters=PaymentListFilters,
                        parameters=[OpenApiParameter("status", str),
                                    OpenApiParameter("created_gte", str, description="ISO 8601"),
                                    OpenApiParameter("created_lt", str, description="ISO 8601")]):
    @extend_schema(
        operation_id="payments_create", request=PaymentCreateInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={201: PaymentOutput, 202: PaymentOutput, **POST_ERRORS},
        description="Create a payment. With `confirm: true` it is also confirmed: the answer is "
                    "202 with status `authorization_requested` and the provider is called in "
                    "the background.",
    )
    def post(self, request: Request) -> Response:
        data = self.validated(PaymentCreateInput, request)
        payment = services.payment_create(
            merchant=request.user, **self.idempotency(request), **data)
        code = status.HTTP_202_ACCEPTED if data["confirm"] else status.HTTP_201_CREATED
        return Response(payment_to_dict(payment), status=code)


class PaymentDetail(RetrieveView, plural="payments", output=PaymentOutput,
                    selector=selectors.payment_get, render=payment_to_dict):
    pass


class PaymentConfirm(ApiView):
    @extend_schema(
        operation_id="payments_confirm", request=None, parameters=[IDEMPOTENCY_HEADER],
        responses={202: PaymentOutput, **POST_ERRORS},
        description="Ask the provider to authorize the payment. Answers 202 at once with status "
                    "`authorization_requested`; the outcome follows as an event.",
    )
    def post(self, request: Request, payment_id: str) -> Response:
        if request.body and request.data:
            raise InvalidRequest("confirm takes no parameters.", param=next(iter(request.data)))
        payment = services.payment_confirm(merchant=request.user, payment_id=payment_id)
        return Response(payment_to_dict(payment), status=status.HTTP_202_ACCEPTED)


class PaymentCapture(ApiView):
    @extend_schema(operation_id="payments_capture", request=PaymentCaptureInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: PaymentOutput, **POST_ERRORS})
    def post(self, request: Request, payment_id: str) -> Response:
        data = self.validated(PaymentCaptureInput, request)
        payment = services.payment_capture(merchant=request.user, payment_id=payment_id,
                                           amount=data.get("amount"))
        return Response(payment_to_dict(payment))


class PaymentCancel(ApiView):
    @extend_schema(operation_id="payments_cancel", request=PaymentCancelInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: PaymentOutput, **POST_ERRORS})
    def post(self, request: Request, payment_id: str) -> Response:
        self.validated(PaymentCancelInput, request)
        payment = services.payment_cancel(merchant=request.user, payment_id=payment_id)
        return Response(payment_to_dict(payment))


class RefundCollection(ListView, plural="refunds", output=RefundOutput,
                       selector=selectors.refund_list, render=refund_to_dict,
                       passed={"payment": "payment_id"}):
    @extend_schema(operation_id="refunds_create", request=RefundCreateInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: RefundOutput, **POST_ERRORS},
                   description="Refund all or part of a captured payment. The sum of pending "
                               "and succeeded refunds never exceeds the captured amount.")
    def post(self, request: Request) -> Response:
        data = self.validated(RefundCreateInput, request)
        refund = services.refund_create(
            merchant=request.user, payment_id=data["payment"], amount=data.get("amount"),
            reason=data["reason"], metadata=data.get("metadata"),
            **self.idempotency(request),
        )
        return Response(refund_to_dict(refund))


class RefundDetail(RetrieveView, plural="refunds", output=RefundOutput,
                   selector=selectors.refund_get, render=refund_to_dict):
    pass


class DisputeCollection(ApiView):
    @extend_schema(operation_id="disputes_list",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("payment", str),
                               OpenApiParameter("status", str, enum=DisputeStatus.values)],
                   responses={200: list_of(DisputeOutput, "DisputeList"), **ERRORS})
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in DisputeStatus.values:
            raise InvalidRequest(f"status must be one of {', '.join(DisputeStatus.values)}.",
                                 param="status")
        rows = selectors.dispute_list(merchant=request.user,
                                      payment_id=request.query_params.get("payment"),
                                      status=status_filter)
        return Response(paginate(rows, request, dispute_to_dict))


class DisputeDetail(RetrieveView, plural="disputes", output=DisputeOutput,
                    selector=selectors.dispute_get, render=dispute_to_dict):
    @extend_schema(operation_id="disputes_update", request=DisputeEvidenceInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: DisputeOutput, **POST_ERRORS},
                   description="Submit evidence (text, and references to files). The dispute "
                               "moves to `under_review`.")
    def post(self, request: Request, dispute_id: str) -> Response:
        data = self.validated(DisputeEvidenceInput, request)
        dispute = services.dispute_submit_evidence(merchant=request.user, dispute_id=dispute_id,
                                                   evidence=data["evidence"])
        return Response(dispute_to_dict(dispute))


class DisputeClose(ApiView):
    @extend_schema(operation_id="disputes_close", request=None, parameters=[IDEMPOTENCY_HEADER],
                   responses={200: DisputeOutput, **POST_ERRORS},
                   description="Accept the dispute as lost: the amount is charged back.")
    def post(self, request: Request, dispute_id: str) -> Response:
        self.validated(EmptyInput, request)
        dispute = services.dispute_close(merchant=request.user, dispute_id=dispute_id)
        return Response(dispute_to_dict(dispute))
