"""Thin DRF views for payments, refunds, disputes, files, customers and payment methods:
validate, call one service, render."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.parsers import MultiPartParser
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
from core.carddata import contains_card_data
from core.errors import CardDataNotAllowed, InvalidRequest, NotFound
from core.idempotency import fingerprint
from core.pagination import paginate
from payments import files, selectors, services
from payments.files import attachment_response
from payments.models import Dispute, DisputeStatus, FilePurpose, FileType
from payments.payloads import (
    customer_to_dict,
    dispute_to_dict,
    file_to_dict,
    payment_method_to_dict,
    payment_to_dict,
    refund_to_dict,
)
from payments.serializers import (
    CustomerCreateInput,
    CustomerListFilters,
    CustomerOutput,
    CustomerUpdateInput,
    DisputeEvidenceInput,
    DisputeOutput,
    EmptyInput,
    FileOutput,
    FileUploadInput,
    PaymentCancelInput,
    PaymentCaptureInput,
    PaymentConfirmInput,
    PaymentCreateInput,
    PaymentIncrementAuthorizationInput,
    PaymentListFilters,
    PaymentMethodCreateInput,
    PaymentMethodListFilters,
    PaymentMethodOutput,
    PaymentOutput,
    RefundCreateInput,
    RefundOutput,
)


class PaymentCollection(ListView, plural="payments", output=PaymentOutput,
                        selector=selectors.payment_list, render=payment_to_dict,
                        filters=PaymentListFilters):
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
        operation_id="payments_confirm", request=PaymentConfirmInput,
        parameters=[IDEMPOTENCY_HEADER],
        responses={202: PaymentOutput, **POST_ERRORS},
        description="Ask the provider to authorize the payment. Answers 202 at once with status "
                    "`authorization_requested`; the outcome follows as an event.",
    )
    def post(self, request: Request, payment_id: str) -> Response:
        data = self.validated(PaymentConfirmInput, request)
        payment = services.payment_confirm(merchant=request.user, payment_id=payment_id,
                                           **data)
        return Response(payment_to_dict(payment), status=status.HTTP_202_ACCEPTED)


@require_GET
def authentication_return(request: HttpRequest, attempt_id: str, token: str) -> HttpResponse:
    """`GET /payments/authentication/<attempt>/<token>`: where the provider sends the customer
    back from a 3-D Secure challenge. No API key: the per-attempt token is the credential. The
    outcome is what the provider says when asked, never the redirect; the customer then goes
    on to the merchant's `return_url` (with `?payment=pay_…`)."""
    try:
        payment = services.payment_authentication_return(attempt_id=attempt_id, token=token)
    except NotFound:
        return HttpResponse("Unknown or expired authentication link.", status=404,
                            content_type="text/plain; charset=utf-8")
    if payment.return_url:
        return HttpResponseRedirect(services.authentication_back_url(payment))
    return HttpResponse(format_html("<!doctype html><title>Payment {}</title><p>Payment {}: "
                                    "<strong id=status>{}</strong></p>", payment.id,
                                    payment.id, payment.status))


class PaymentCapture(ApiView):
    @extend_schema(operation_id="payments_capture", request=PaymentCaptureInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: PaymentOutput, **POST_ERRORS})
    def post(self, request: Request, payment_id: str) -> Response:
        data = self.validated(PaymentCaptureInput, request)
        payment = services.payment_capture(merchant=request.user, payment_id=payment_id,
                                           amount=data.get("amount"),
                                           final_capture=data["final_capture"])
        return Response(payment_to_dict(payment))


class PaymentIncrementAuthorization(ApiView):
    @extend_schema(operation_id="payments_increment_authorization",
                   request=PaymentIncrementAuthorizationInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: PaymentOutput, **POST_ERRORS},
                   description="Raise the authorization of an `authorized` payment, before any "
                               "capture, to `amount` (the new total), where its provider offers "
                               "incremental authorization (409 "
                               "`incremental_authorization_unsupported` elsewhere).")
    def post(self, request: Request, payment_id: str) -> Response:
        data = self.validated(PaymentIncrementAuthorizationInput, request)
        payment = services.payment_increment_authorization(
            merchant=request.user, payment_id=payment_id, amount=data["amount"])
        return Response(payment_to_dict(payment))


class PaymentCancel(ApiView):
    @extend_schema(operation_id="payments_cancel", request=PaymentCancelInput,
                   parameters=[IDEMPOTENCY_HEADER], responses={200: PaymentOutput, **POST_ERRORS})
    def post(self, request: Request, payment_id: str) -> Response:
        data = self.validated(PaymentCancelInput, request)
        payment = services.payment_cancel(merchant=request.user, payment_id=payment_id,
                                          cancellation_reason=data["cancellation_reason"])
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
            reason=data.get("reason", ""), metadata=data.get("metadata"),
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
        dispute = services.dispute_evidence_update(merchant=request.user, dispute_id=dispute_id,
                                                   evidence=data["evidence"],
                                                   submit=data["submit"])
        return Response(dispute_to_dict(dispute))


class _DisputeAction(ApiView):
    """A POST without a body that runs one dispute service and answers with the dispute."""

    service: Callable[..., Dispute]

    def post(self, request: Request, dispute_id: str) -> Response:
        self.validated(EmptyInput, request)
        return Response(dispute_to_dict(type(self).service(merchant=request.user,
                                                           dispute_id=dispute_id)))


def _dispute_action_schema(operation_id: str, description: str) -> Callable[[type], type]:
    return extend_schema_view(post=extend_schema(
        operation_id=operation_id, request=None, parameters=[IDEMPOTENCY_HEADER],
        responses={200: DisputeOutput, **POST_ERRORS}, description=description))


@_dispute_action_schema("disputes_submit",
                        "Send the staged evidence to the provider (once). Accepted: "
                        "`under_review`; the provider's decision follows as `dispute.closed`. "
                        "Refused (e.g. past its deadline): 502 with the provider's reason, the "
                        "dispute unchanged.")
class DisputeSubmit(_DisputeAction):
    service = staticmethod(services.dispute_evidence_submit)


@_dispute_action_schema("disputes_close",
                        "Accept the dispute as lost: the amount is charged back.")
class DisputeClose(_DisputeAction):
    service = staticmethod(services.dispute_close)


class FileCollection(ListView, plural="files", output=FileOutput, selector=selectors.file_list,
                     render=file_to_dict):
    """Evidence uploads: the API's one multipart route (the request guard lets only this path
    through with a body over 16 KiB, up to EVIDENCE_MAX_BYTES)."""

    parser_classes = [MultiPartParser]

    def request_fingerprint(self, request: Request) -> str:
        """Same purpose, name and bytes are the same upload, whatever the multipart boundary."""
        upload = request.FILES.get("file")
        digest = hashlib.sha256()
        if upload is not None:
            for chunk in upload.chunks():
                digest.update(chunk)
            upload.seek(0)
        return fingerprint(request.method, request.path, json.dumps({
            "purpose": request.POST.get("purpose", ""), "filename": getattr(upload, "name", ""),
            "sha256": digest.hexdigest()}).encode())

    @extend_schema(
        operation_id="files_create", request={"multipart/form-data": FileUploadInput},
        parameters=[IDEMPOTENCY_HEADER], responses={200: FileOutput, **POST_ERRORS},
        description="Upload a dispute evidence file (multipart/form-data: `file`, `purpose` = "
                    "`dispute_evidence`). PDF, PNG or JPEG, judged by content; at most 5 MiB "
                    "by default (413 `file_too_large`). Name it in a dispute's evidence by id.")
    def post(self, request: Request) -> Response:
        fields = {name: request.POST.getlist(name) for name in request.POST}
        uploads = request.FILES.getlist("file")
        names = [upload.name for upload in uploads]
        if contains_card_data([fields, names]):
            raise CardDataNotAllowed("Card numbers may not be sent to this API.")
        unknown = sorted(set(fields) - {"purpose"} | set(request.FILES) - {"file"})
        if unknown:
            raise InvalidRequest(f"Received unknown parameter: {unknown[0]}.", param=unknown[0],
                                 code="parameter_unknown")
        if len(uploads) != 1:
            raise InvalidRequest("Send exactly one file, in the form field `file`.",
                                 param="file", code="parameter_missing")
        purpose = request.POST.get("purpose", "")
        if purpose not in FilePurpose.values:
            raise InvalidRequest(f"purpose must be one of {', '.join(FilePurpose.values)}.",
                                 param="purpose")
        content = files.read_limited(uploads[0].chunks())
        created = services.file_create(merchant=request.user, content=content,
                                       filename=uploads[0].name or "", uploaded_by="api",
                                       purpose=purpose)
        return Response(file_to_dict(created))


class FileDetail(RetrieveView, plural="files", output=FileOutput, selector=selectors.file_get,
                 render=file_to_dict):
    pass


class FileContents(ApiView):
    @extend_schema(operation_id="files_download",
                   responses={**{(200, media): bytes for media in FileType.values},
                              **ERRORS},
                   description="The file's bytes, always as an attachment (never rendered "
                               "inline): Content-Disposition attachment, nosniff, a sandboxing "
                               "Content-Security-Policy.")
    def get(self, request: Request, file_id: str) -> HttpResponse:
        found = selectors.file_get(merchant=request.user, file_id=file_id)
        return attachment_response(files.load(found.storage_name), filename=found.filename,
                                   content_type=found.content_type)


class CustomerCollection(ListView, plural="customers", output=CustomerOutput,
                         selector=selectors.customer_list, render=customer_to_dict,
                         filters=CustomerListFilters,
                         create=services.customer_create, create_input=CustomerCreateInput):
    pass


class CustomerDetail(RetrieveView, plural="customers", output=CustomerOutput,
                     selector=selectors.customer_get, render=customer_to_dict):
    @extend_schema(operation_id="customers_update", request=CustomerUpdateInput,
                   parameters=[IDEMPOTENCY_HEADER],
                   responses={200: CustomerOutput, **POST_ERRORS},
                   description="Change what is given; metadata merges key by key and an empty "
                               "value removes its key.")
    def post(self, request: Request, customer_id: str) -> Response:
        data = self.validated(CustomerUpdateInput, request)
        customer = services.customer_update(merchant=request.user, customer_id=customer_id,
                                            **data)
        return Response(customer_to_dict(customer))


class PaymentMethodCollection(
        ListView, plural="payment_methods", output=PaymentMethodOutput,
        selector=selectors.payment_method_list, render=payment_method_to_dict,
        filters=PaymentMethodListFilters,
        create=services.payment_method_create, create_input=PaymentMethodCreateInput,
        create_description="Save a card your front-end tokenized at an acquirer's vault. "
                           "Clearhouse asks that vault what the token is before saving it; when "
                           "routing sends a payment to another acquirer, the card is enrolled "
                           "there and that acquirer gets its own token."):
    pass


class PaymentMethodDetail(RetrieveView, plural="payment_methods", output=PaymentMethodOutput,
                          selector=selectors.payment_method_get, render=payment_method_to_dict):
    pass


class PaymentMethodDetach(ApiView):
    @extend_schema(operation_id="payment_methods_detach", request=None,
                   parameters=[IDEMPOTENCY_HEADER],
                   responses={200: PaymentMethodOutput, **POST_ERRORS},
                   description="Detach the payment method from its customer for good: it can "
                               "no longer be charged.")
    def post(self, request: Request, payment_method_id: str) -> Response:
        self.validated(EmptyInput, request)
        method = services.payment_method_detach(merchant=request.user,
                                                payment_method_id=payment_method_id)
        return Response(payment_method_to_dict(method))
