"""Cielo adapter (API 3.0 style): PascalCase JSON, integer cents, numeric payment statuses,
MerchantId/MerchantKey headers and `RequestId` as the provider idempotency key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from providers import settlement
from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    DepositRequest,
    DisputeState,
    InboundEvent,
    MovementStatus,
    PayoutRequest,
    ProviderResult,
    ProviderStatus,
    RefundRequest,
    RetrieveRequest,
    StoredCredential,
    VoidRequest,
    WebhookPayloadError,
)
from providers.http import (
    HttpAdapter,
    Sent,
    VaultFields,
    parse_json_object,
    parse_time,
    segment,
)
from providers.webhook_names import event_types

STATUS = {
    0: ProviderStatus.PENDING, 1: ProviderStatus.AUTHORIZED, 2: ProviderStatus.CAPTURED,
    3: ProviderStatus.DECLINED, 10: ProviderStatus.VOIDED, 11: ProviderStatus.REFUNDED,
    12: ProviderStatus.PENDING, 13: ProviderStatus.DECLINED,
}
RETURN_CODES = {  # Cielo ReturnCode on a denied sale → normalised code
    "05": "do_not_honor", "51": "insufficient_funds", "54": "expired_card",
    "57": "card_declined", "59": "fraud_suspected", "91": "issuer_unavailable",
    "96": "processing_error", "14": "invalid_payment_method",
    "A1": "authentication_failed", "A2": "authentication_abandoned",
}
ERROR_CODES = {  # Cielo error Code in a 4xx body → normalised code
    114: "invalid_request", 116: "invalid_request", 132: "provider_authentication_failed",
    307: "not_found", 308: "invalid_state", 901: "idempotency_conflict",
}
CHANGE_TYPES = event_types("cielo")
MOVEMENT_STATUS = {"Pending": MovementStatus.PENDING, "InTransit": MovementStatus.PENDING,
                   "Paid": MovementStatus.PAID, "Confirmed": MovementStatus.CONFIRMED,
                   "Failed": MovementStatus.FAILED}


# -- settlement file: `;`-separated, DD/MM/YYYY dates, integer cents; Venda (sale) or Estorno
SETTLEMENT = settlement.Layout(
    delimiter=";", day="DataVenda", reference="PaymentId", order="MerchantOrderId",
    kind="Tipo", currency="Moeda", refund="IdentificadorTransacao",
    amounts=("ValorBruto", "Taxa", "ValorLiquido"),
    kinds={"Venda": settlement.CAPTURE, "Estorno": settlement.REFUND},
    read_day=settlement.day_month_year,
    read_amounts=lambda values, currency: (
        settlement.read_int(values[0], "ValorBruto"), settlement.read_int(values[1], "Taxa"),
        settlement.read_int(values[2], "ValorLiquido")))
read_settlement = SETTLEMENT.parse


class CieloProvider(HttpAdapter):
    code = "cielo"
    parse_settlement = staticmethod(read_settlement)
    idempotency_header = "RequestId"
    error_codes = ERROR_CODES
    vault = VaultFields(path="/1/card", network="NetworkToken", issued="CardToken",
                        brand="Brand", masked="CardNumber", expiry="ExpirationDate")
    # Cielo's real notification post is unsigned and carries only ids: a hint. What moves money
    # is our own lookup of the sale (or movement) it names (webhooks.inbound applies that).
    notices_need_lookup = True

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        config = self.config()
        return {"MerchantId": config["merchant_id"], "MerchantKey": config["merchant_key"]}

    def error_key(self, sent: Sent) -> Any:
        """Cielo lists its errors as [{"Code": 308, "Message": "…"}]."""
        return sent.field(0, "Code")

    def _sale(self, sent: Sent, payment: Mapping[str, Any], order_id: str = "") -> ProviderResult:
        amount = payment.get("CapturedAmount") or payment.get("Amount")

        def integer(value: Any) -> int | None:
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return self.charge_answer(
            sent, STATUS.get(payment.get("Status"), ProviderStatus.UNKNOWN),
            decline_code=RETURN_CODES.get(str(payment.get("ReturnCode")), "card_declined"),
            provider_reference=str(payment.get("PaymentId", "")), amount=integer(amount),
            currency=str(payment.get("Currency", "")).lower(),
            amount_refunded=integer(payment.get("VoidedAmount")),
            amount_disputed=integer(payment.get("DisputedAmount")), merchant_reference=order_id,
            action_url=str(payment.get("AuthenticationUrl") or ""))

    # -- the port -------------------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        body = {
            "MerchantOrderId": request.merchant_reference,
            "Payment": {
                "Type": "CreditCard", "Amount": request.amount,
                "Currency": request.currency.upper(), "Capture": request.capture,
                "Installments": 1, "SoftDescriptor": request.description[:13],
                "CreditCard": {"CardToken": request.payment_method},
            },
        }
        if request.return_url:  # authenticate when the issuer asks (3-D Secure)
            body["Payment"]["ReturnUrl"] = request.return_url
        if request.stored_credential != StoredCredential.NONE:
            merchant = request.stored_credential == StoredCredential.MERCHANT
            body["Payment"]["InitiatedTransactionIndicator"] = {
                "Category": "M1" if merchant else "C1",
                "Subcategory": "Unscheduled" if merchant else "CredentialsOnFile"}
        sent = self.send("POST", "/1/sales/", body=body, idempotency_key=request.idempotency_key)
        payment = sent.field("Payment")
        if sent.status_code == 201 and isinstance(payment, dict):
            return self._sale(sent, payment)
        return self.failure(sent)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{segment(ref)}/capture",
                         params={"amount": str(request.amount)},
                         idempotency_key=request.idempotency_key)
        if sent.status_code == 200 and sent.field("Status") == 2:
            return self.approved(sent, ProviderStatus.CAPTURED, ref,
                                 sent.field("CapturedAmount", default=request.amount))
        return self.failure(sent, ref)

    def void(self, request: VoidRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{segment(ref)}/void",
                         idempotency_key=request.idempotency_key)
        if sent.status_code == 200 and sent.field("Status") == 10:
            return self.approved(sent, ProviderStatus.VOIDED, ref)
        return self.failure(sent, ref)

    def refund(self, request: RefundRequest) -> ProviderResult:
        """Cielo refunds through the void endpoint, with an amount. Like every adapter, an
        approved refund answers with the refund's own reference and status REFUNDED."""
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{segment(ref)}/void",
                         params={"amount": str(request.amount)},
                         idempotency_key=request.idempotency_key)
        refund_id = sent.field("RefundId")
        if sent.status_code == 200 and isinstance(refund_id, str):
            return self.approved(sent, ProviderStatus.REFUNDED, refund_id,
                                 sent.field("RefundAmount", default=request.amount))
        return self.failure(sent, ref)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        ref = request.provider_reference
        if ref:
            return self._get_sale(ref)
        # Cielo answers an order lookup with PaymentIds only (the live sale first), so a second
        # call fetches the sale; the result keeps both exchanges and the summed latency.
        found = self.send("GET", "/1/sales", params={
            "merchantOrderId": request.merchant_reference})
        ref = found.field("Payments", 0, "PaymentId", default="")
        if found.status_code != 200 or not ref:
            return self.failure(found, mutation=False)
        result = self._get_sale(ref)
        return replace(result, latency_ms=result.latency_ms + found.latency_ms,
                       exchange={"lookup": found.exchange, **result.exchange})

    def _get_sale(self, ref: str) -> ProviderResult:
        sent = self.send("GET", f"/1/sales/{segment(ref)}")
        payment = sent.field("Payment")
        if sent.status_code == 200 and isinstance(payment, dict):
            return self._sale(sent, payment, str(sent.field("MerchantOrderId", default="")))
        return self.failure(sent, ref, mutation=False)

    # -- payouts and deposits (the calls are HttpAdapter's) -----------------------------------
    movement_paths = {"payout": "/1/payouts", "deposit": "/1/deposits"}
    movement_ids = {"payout": "PayoutId", "deposit": "DepositId"}

    def movement_body(self, kind: str, request: PayoutRequest | DepositRequest
                      ) -> dict[str, Any]:
        body = {f"Merchant{kind.title()}Id": request.merchant_reference,
                "Amount": request.amount, "Currency": request.currency.upper()}
        if isinstance(request, PayoutRequest):
            return {**body, "Destination": request.destination}
        return {**body, "Method": request.method}

    def movement_fields(self, sent: Sent) -> dict[str, Any]:
        return {"amount": sent.field("Amount"),
                "status": MOVEMENT_STATUS.get(sent.field("Status"), MovementStatus.UNKNOWN),
                "currency": str(sent.field("Currency", default="")),
                "merchant_reference": str(sent.field("MerchantPayoutId", default="")
                                          or sent.field("MerchantDepositId", default=""))}

    # -- disputes (Cielo's chargebacks; the calls are HttpAdapter's) ---------------------------
    dispute_statuses = {"AwaitingDocuments": DisputeState.NEEDS_RESPONSE,
                        "UnderAnalysis": DisputeState.UNDER_REVIEW,
                        "Reversed": DisputeState.WON, "Accepted": DisputeState.LOST}

    dispute_path, dispute_evidence_suffix = "/1/chargebacks/{ref}", "/evidence"
    dispute_evidence_keys = ("Evidence", "Text", "Documents",
                             ("Type", "FileName", "ContentType", "Content"))

    def dispute_fields(self, sent: Sent) -> dict[str, Any]:
        return {"dispute_reference": sent.field("ChargebackId"),
                "provider_reference": sent.field("PaymentId"), "amount": sent.field("Amount"),
                "currency": str(sent.field("Currency", default="")).lower(),
                "status": sent.field("Status"), "evidence_due_by": sent.field("EvidenceDueDate")}

    def provider_message(self, sent: Sent) -> str:
        return str(sent.field(0, "Message", default="") or "")

    # -- inbound webhooks --------------------------------------------------------------------
    def webhook_signature(self, headers: Mapping[str, str], body: bytes, secret: str
                          ) -> tuple[float, str, list[str]] | None:
        """`Cielo-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
        `Cielo-Event-Timestamp: <unix seconds>`."""
        timestamp = headers.get("cielo-event-timestamp", "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return None
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        given = [part.strip().removeprefix("sha256=")
                 for part in headers.get("cielo-signature", "").split(",")]
        return int(timestamp), expected, given

    def parse_webhook(self, body: bytes) -> InboundEvent:
        data = parse_json_object(body)
        type = CHANGE_TYPES.get(data.get("ChangeType", ""))
        if type is None or not data.get("NotificationId"):
            raise WebhookPayloadError(f"Unknown Cielo ChangeType {data.get('ChangeType')!r}.")
        status: str = ""
        reference = data.get("PaymentId", "")
        amount = data.get("Amount")
        if type.startswith(("payout", "deposit")):
            reference = data.get("PayoutId") or data.get("DepositId", "")
            status = MOVEMENT_STATUS.get(data.get("Status"), MovementStatus.UNKNOWN).value
        else:
            status = STATUS.get(data.get("Status"), ProviderStatus.UNKNOWN).value
        if type == "payment.captured":
            amount = data.get("CapturedAmount", amount)
        elif type == "refund.succeeded":
            amount = data.get("RefundAmount")
        elif type.startswith("dispute."):
            amount = data.get("ChargebackAmount")
        return InboundEvent(
            provider=self.code, event_id=str(data["NotificationId"]), type=type,
            occurred_at=parse_time(data.get("OccurredAt")), provider_reference=str(reference),
            merchant_reference=str(data.get("MerchantOrderId") or data.get("MerchantPayoutId")
                                   or data.get("MerchantDepositId") or ""),
            amount=amount if isinstance(amount, int) else None,
            currency=str(data.get("Currency", "")).lower(), status=status,
            refund_reference=str(data.get("RefundId", "")),
            dispute_reference=str(data.get("ChargebackId", "")),
            error_code=RETURN_CODES.get(str(data.get("ReturnCode")), "card_declined")
            if type == "payment.declined" else "",
            evidence_due_by=parse_time(data["EvidenceDueDate"])
            if isinstance(data.get("EvidenceDueDate"), str) else None,
            payload=data,
        )
