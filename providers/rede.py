"""Rede adapter (e.Rede style): camelCase JSON, decimal-string amounts ("10.50"), string
return codes, HTTP Basic with PV:token and `X-Rede-Idempotency-Key`."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from core.money import exponent
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

RETURN_CODES = {  # Rede returnCode on a declined authorization → normalised code
    "101": "card_declined", "105": "do_not_honor", "106": "issuer_unavailable",
    "107": "processing_error", "111": "insufficient_funds", "112": "expired_card",
    "113": "fraud_suspected", "58": "invalid_payment_method",
    "203": "authentication_failed", "204": "authentication_abandoned",
}
ERROR_CODES = {  # Rede returnCode on any other 4xx → normalised code
    "401": "provider_authentication_failed", "37": "invalid_request", "78": "not_found",
    "42": "idempotency_conflict", "355": "invalid_state", "351": "invalid_request",
}
EVENTS = event_types("rede")
MOVEMENT_STATUS = {"PENDING": MovementStatus.PENDING, "IN_TRANSIT": MovementStatus.PENDING,
                   "PAID": MovementStatus.PAID, "CONFIRMED": MovementStatus.CONFIRMED,
                   "FAILED": MovementStatus.FAILED}
APPROVED, CANCELLED, AUTHENTICATION_REQUIRED = "00", "359", "220"


def to_decimal_string(amount: int, currency: str) -> str:
    digits = exponent(currency.lower())
    return f"{Decimal(amount).scaleb(-digits):.{digits}f}"


def from_decimal_string(value: Any, currency: str) -> int | None:
    """"10.50" → 1050; None for anything that is not an exact amount in the currency."""
    if not isinstance(value, str):
        return None
    try:
        minor = Decimal(value).scaleb(exponent(currency.lower()))
    except InvalidOperation:
        return None
    return int(minor) if minor == minor.to_integral_value() else None


# -- settlement file: `,`-separated, ISO dates, decimal strings at the currency's exponent
SETTLEMENT = settlement.Layout(
    delimiter=",", day="sale_date", reference="tid", order="reference", kind="type",
    currency="currency", refund="refund_id", amounts=("gross_amount", "mdr_amount", "net_amount"),
    kinds={"sale": settlement.CAPTURE, "refund": settlement.REFUND},
    read_day=settlement.iso_day,
    read_amounts=lambda values, currency: (
        settlement.decimal_minor(values[0], currency, "gross_amount"),
        settlement.decimal_minor(values[1], currency, "mdr_amount"),
        settlement.decimal_minor(values[2], currency, "net_amount")))
read_settlement = SETTLEMENT.parse


class RedeProvider(HttpAdapter):
    code = "rede"
    parse_settlement = staticmethod(read_settlement)
    idempotency_header = "X-Rede-Idempotency-Key"
    error_codes = ERROR_CODES
    vault = VaultFields(path="/v1/tokenization", network="networkToken", issued="tokenizationId",
                        brand="brand", masked="cardNumber", expiry="expirationDate")

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        config = self.config()
        pair = base64.b64encode(f"{config['pv']}:{config['token']}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    def error_key(self, sent: Sent) -> Any:
        return str(sent.field("returnCode"))

    def _transaction(self, sent: Sent) -> ProviderResult:
        """Rede's lookup: authorization.status plus the capture and refund records."""
        auth = sent.field("authorization", default={})
        reference, currency = str(auth.get("tid", "")), str(auth.get("currency", ""))
        capture = sent.field("capture")
        match auth.get("status"), bool(capture):
            case "Denied", _:
                return self.declined(sent, RETURN_CODES.get(str(auth.get("returnCode")),
                                                            "card_declined"),
                                     reference=reference)
            case "Pending", _:
                return self.charge_answer(sent, ProviderStatus.PENDING, decline_code="",
                                          provider_reference=reference,
                                          action_url=self._challenge(sent))
            case "Approved", True:
                status = ProviderStatus.CAPTURED
            case "Approved", False:
                status = ProviderStatus.AUTHORIZED
            case "Canceled", True:
                status = ProviderStatus.REFUNDED
            case "Canceled", False:
                status = ProviderStatus.VOIDED
            case _:
                return self.unknown(sent, "outcome_unknown", reference=reference)
        amount = from_decimal_string((capture or auth).get("amount"), currency)
        return self.approved(sent, status, reference, amount)

    @staticmethod
    def _challenge(sent: Sent) -> str:
        """The 3-D Secure page of a transaction waiting for the cardholder, or ""."""
        return str(sent.field("threeDSecure", "url", default="") or "")

    # -- the port -------------------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        body = {
            "capture": request.capture, "kind": "credit",
            "reference": request.merchant_reference,
            "amount": to_decimal_string(request.amount, request.currency),
            "currency": request.currency.upper(), "installments": 1,
            "cardToken": request.payment_method, "softDescriptor": request.description[:18],
        }
        if request.stored_credential != StoredCredential.NONE:
            # storageCard 2: a card already stored with the merchant, used again.
            body["storageCard"] = "2"
            body["transactionInitiator"] = (
                "merchant" if request.stored_credential == StoredCredential.MERCHANT
                else "cardholder")
        if request.return_url:  # authenticate when the issuer asks (3-D Secure)
            body["threeDSecure"] = {"embedded": True, "onFailure": "decline"}
            body["urls"] = [{"kind": "threeDSecureSuccess", "url": request.return_url},
                            {"kind": "threeDSecureFailure", "url": request.return_url}]
        sent = self.send("POST", "/v1/transactions", body=body,
                         idempotency_key=request.idempotency_key)
        code, tid = str(sent.field("returnCode")), str(sent.field("tid", default=""))
        if sent.status_code == 200 and code == AUTHENTICATION_REQUIRED and tid:
            return self.charge_answer(sent, ProviderStatus.PENDING, decline_code="",
                                      provider_reference=tid, action_url=self._challenge(sent))
        if sent.status_code == 200 and code == APPROVED and tid:
            # Rede's answer carries no status: an approval is what we asked for.
            return self.approved(
                sent, ProviderStatus.CAPTURED if request.capture else ProviderStatus.AUTHORIZED,
                tid, from_decimal_string(sent.field("amount"), request.currency))
        if sent.status_code == 402:
            return self.declined(sent, RETURN_CODES.get(code, "card_declined"), reference=tid)
        return self.failure(sent)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/v1/transactions/{segment(ref)}",
                         body={"amount": to_decimal_string(request.amount, request.currency)},
                         idempotency_key=request.idempotency_key)
        if sent.status_code == 200 and sent.field("returnCode") == APPROVED:
            return self.approved(sent, ProviderStatus.CAPTURED, ref,
                                 from_decimal_string(sent.field("amount"), request.currency))
        return self.failure(sent, ref)

    def void(self, request: VoidRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("DELETE", f"/v1/transactions/{segment(ref)}",
                         idempotency_key=request.idempotency_key)
        if sent.status_code == 200 and sent.field("returnCode") == CANCELLED:
            return self.approved(sent, ProviderStatus.VOIDED, ref)
        return self.failure(sent, ref)

    def refund(self, request: RefundRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("POST", f"/v1/transactions/{segment(ref)}/refunds",
                         body={"amount": to_decimal_string(request.amount, request.currency)},
                         idempotency_key=request.idempotency_key)
        refund_id = sent.field("refundId")
        if sent.status_code == 200 and sent.field("returnCode") == CANCELLED and refund_id:
            return self.approved(sent, ProviderStatus.REFUNDED, str(refund_id),
                                 from_decimal_string(sent.field("amount"), request.currency))
        return self.failure(sent, ref)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        if request.provider_reference:
            sent = self.send("GET", f"/v1/transactions/{segment(request.provider_reference)}")
        else:
            sent = self.send("GET", "/v1/transactions",
                             params={"reference": request.merchant_reference})
        if sent.status_code == 200 and isinstance(sent.field("authorization"), dict):
            return self._transaction(sent)
        return self.failure(sent, request.provider_reference, mutation=False)

    # -- payouts and deposits (the calls are HttpAdapter's) -----------------------------------
    movement_paths = {"payout": "/v1/payouts", "deposit": "/v1/deposits"}
    movement_ids = {"payout": "payoutId", "deposit": "depositId"}

    def movement_body(self, kind: str, request: PayoutRequest | DepositRequest
                      ) -> dict[str, Any]:
        body = {"reference": request.merchant_reference,
                "amount": to_decimal_string(request.amount, request.currency),
                "currency": request.currency.upper()}
        if isinstance(request, PayoutRequest):
            return {**body, "bankAccount": request.destination}
        return {**body, "method": request.method}

    def movement_fields(self, sent: Sent) -> dict[str, Any]:
        return {"amount": from_decimal_string(sent.field("amount"), str(sent.field("currency"))),
                "status": MOVEMENT_STATUS.get(sent.field("status"), MovementStatus.UNKNOWN)}

    # -- inbound webhooks --------------------------------------------------------------------
    def webhook_signature(self, headers: Mapping[str, str], body: bytes, secret: str
                          ) -> tuple[float, str, list[str]] | None:
        """`X-Rede-Signature: <base64 HMAC-SHA512(secret, "<timestamp>\\n<body>")>` with
        `X-Rede-Timestamp: <UTC RFC 3339, e.g. 2026-01-05T10:00:00Z>`."""
        timestamp = headers.get("x-rede-timestamp", "")
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        digest = hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha512)
        expected = base64.b64encode(digest.digest()).decode()
        return moment.timestamp(), expected, [headers.get("x-rede-signature", "").strip()]

    # -- disputes (Rede's chargebacks; the calls are HttpAdapter's) ----------------------------
    dispute_statuses = {"PENDING_DEFENSE": DisputeState.NEEDS_RESPONSE,
                        "IN_ANALYSIS": DisputeState.UNDER_REVIEW, "WON": DisputeState.WON,
                        "LOST": DisputeState.LOST}

    dispute_path, dispute_evidence_suffix = "/v1/chargebacks/{ref}", "/defense"
    dispute_evidence_keys = ("", "text", "documents", ("type", "fileName", "mimeType", "content"))

    def dispute_fields(self, sent: Sent) -> dict[str, Any]:
        currency = str(sent.field("currency", default="")).lower()
        return {"dispute_reference": sent.field("chargebackId"),
                "provider_reference": sent.field("tid"),
                "amount": from_decimal_string(sent.field("amount"), currency),
                "currency": currency, "status": sent.field("status"),
                "evidence_due_by": sent.field("dueDate")}

    def provider_message(self, sent: Sent) -> str:
        return str(sent.field("returnMessage", default="") or "")

    def parse_webhook(self, body: bytes) -> InboundEvent:
        payload = parse_json_object(body)
        type = EVENTS.get(payload.get("event", ""))
        data = payload.get("data")
        if type is None or not payload.get("id") or not isinstance(data, dict):
            raise WebhookPayloadError(f"Unknown Rede event {payload.get('event')!r}.")
        currency = str(data.get("currency", "")).lower()
        due = (data.get("chargeback") or {}).get("dueDate")
        if type.startswith(("payout", "deposit")):
            reference = data.get("payoutId") or data.get("depositId", "")
            status = MOVEMENT_STATUS.get(data.get("status"), MovementStatus.UNKNOWN).value
            amount_text = data.get("amount")
        else:
            reference = data.get("tid", "")
            status = {"transaction.captured": ProviderStatus.CAPTURED,
                      "transaction.authorized": ProviderStatus.AUTHORIZED,
                      "transaction.denied": ProviderStatus.DECLINED,
                      "transaction.canceled": ProviderStatus.VOIDED,
                      }.get(payload["event"], ProviderStatus.UNKNOWN).value
            amount_text = {"payment.captured": data.get("capturedAmount"),
                           "refund.succeeded": data.get("refundAmount"),
                           }.get(type, data.get("amount"))
            if type.startswith("dispute."):
                amount_text = (data.get("chargeback") or {}).get("amount")
            if type in ("refund.succeeded", "dispute.opened"):
                status = {"Approved": ProviderStatus.CAPTURED,
                          "Canceled": ProviderStatus.REFUNDED}.get(
                    data.get("status"), ProviderStatus.UNKNOWN).value
        return InboundEvent(
            provider=self.code, event_id=str(payload["id"]), type=type,
            occurred_at=parse_time(payload.get("occurredAt")), provider_reference=str(reference),
            merchant_reference=str(data.get("reference", "")),
            amount=from_decimal_string(amount_text, currency), currency=currency, status=status,
            refund_reference=str(data.get("refundId", "")),
            dispute_reference=str((data.get("chargeback") or {}).get("id", "")),
            error_code=RETURN_CODES.get(str(data.get("returnCode")), "card_declined")
            if type == "payment.declined" else "",
            evidence_due_by=parse_time(due) if isinstance(due, str) else None,
            payload=payload,
        )
