"""Rede adapter (e.Rede style): camelCase JSON, decimal-string amounts ("10.50"), string
return codes, HTTP Basic with PV:token and `X-Rede-Idempotency-Key`."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
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
    InboundEvent,
    MalformedLine,
    MovementResult,
    MovementStatus,
    Outcome,
    PayoutRequest,
    ProviderResult,
    ProviderStatus,
    RefundRequest,
    RetrieveRequest,
    SettlementRow,
    VoidRequest,
    WebhookPayloadError,
)
from providers.http import (
    HttpAdapter,
    Sent,
    fresh,
    parse_json_object,
    parse_time,
    signature_matches,
)
from providers.settlement import CAPTURE, REFUND

RETURN_CODES = {  # Rede returnCode on a declined authorization → normalised code
    "101": "card_declined", "105": "do_not_honor", "106": "issuer_unavailable",
    "107": "processing_error", "111": "insufficient_funds", "112": "expired_card",
    "113": "fraud_suspected",
}
ERROR_CODES = {  # Rede returnCode on any other 4xx → normalised code
    "401": "provider_authentication_failed", "37": "invalid_request", "78": "not_found",
    "42": "idempotency_conflict", "355": "invalid_state", "351": "invalid_request",
}
EVENTS = {
    "transaction.authorized": "payment.authorized", "transaction.captured": "payment.captured",
    "transaction.denied": "payment.declined", "transaction.canceled": "payment.voided",
    "refund.done": "refund.succeeded", "chargeback.opened": "dispute.opened",
    "payout.paid": "payout.paid", "payout.failed": "payout.failed",
    "deposit.confirmed": "deposit.confirmed", "deposit.failed": "deposit.failed",
}
MOVEMENT_STATUS = {"PENDING": MovementStatus.PENDING, "IN_TRANSIT": MovementStatus.PENDING,
                   "PAID": MovementStatus.PAID, "CONFIRMED": MovementStatus.CONFIRMED,
                   "FAILED": MovementStatus.FAILED}
APPROVED, CANCELLED = "00", "359"


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


# -- settlement file ---------------------------------------------------------------------------
REDE_COLUMNS = ("sale_date", "tid", "reference", "type", "currency", "gross_amount",
                "mdr_amount", "net_amount", "refund_id")
REDE_TYPES = {"sale": CAPTURE, "refund": REFUND}


def _settlement_rede(line: SettlementRow, values: tuple[str, ...]) -> None:
    sale_date, tid, reference, kind_text, currency, gross, fee, net, refund_id = values
    kind = REDE_TYPES.get(kind_text)
    if kind is None:
        raise MalformedLine(f"unknown type {kind_text!r}")
    line.provider_reference, line.merchant_reference = tid, reference
    line.refund_reference = refund_id if kind == REFUND else ""
    line.transaction_date = settlement.iso_day(sale_date)
    currency = line.currency = settlement.read_currency(currency)
    settlement.finish(line, kind, settlement.decimal_minor(gross, currency, "gross_amount"),
                      settlement.decimal_minor(fee, currency, "mdr_amount"),
                      settlement.decimal_minor(net, currency, "net_amount"))


def read_settlement(lines: Iterable[str]) -> Iterator[SettlementRow]:
    """`,`-separated, ISO dates, decimal strings with the currency's exponent ("-25.00")."""
    return settlement.parse(lines, ",", REDE_COLUMNS, _settlement_rede)


class RedeProvider(HttpAdapter):
    code = "rede"
    parse_settlement = staticmethod(read_settlement)
    idempotency_header = "X-Rede-Idempotency-Key"

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        config = self.config()
        pair = base64.b64encode(f"{config['pv']}:{config['token']}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    def _error(self, sent: Sent, reference: str = "") -> ProviderResult:
        fallback = "not_found" if sent.status_code == 404 else "invalid_request"
        return self.rejected(sent, ERROR_CODES.get(str(sent.field("returnCode")), fallback),
                             reference=reference)

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
                return self.result(sent, outcome=Outcome.PENDING, provider_reference=reference,
                                   status=ProviderStatus.PENDING)
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
        return self.result(sent, outcome=Outcome.APPROVED, provider_reference=reference,
                           status=status, amount=amount)

    # -- the port -------------------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        body = {
            "capture": request.capture, "kind": "credit",
            "reference": request.merchant_reference,
            "amount": to_decimal_string(request.amount, request.currency),
            "currency": request.currency.upper(), "installments": 1,
            "cardToken": request.payment_method, "softDescriptor": request.description[:18],
        }
        sent = self.send("POST", "/v1/transactions", body=body,
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        code, tid = str(sent.field("returnCode")), str(sent.field("tid", default=""))
        if sent.status_code == 200 and code == APPROVED and tid:
            # Rede's answer carries no status: an approval is what we asked for.
            return self.result(
                sent, outcome=Outcome.APPROVED, provider_reference=tid,
                status=ProviderStatus.CAPTURED if request.capture else ProviderStatus.AUTHORIZED,
                amount=from_decimal_string(sent.field("amount"), request.currency))
        if sent.status_code == 402:
            return self.declined(sent, RETURN_CODES.get(code, "card_declined"), reference=tid)
        return self._error(sent)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/v1/transactions/{ref}",
                         body={"amount": to_decimal_string(request.amount, request.currency)},
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        if sent.status_code == 200 and sent.field("returnCode") == APPROVED:
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=ref,
                               status=ProviderStatus.CAPTURED,
                               amount=from_decimal_string(sent.field("amount"),
                                                          request.currency))
        return self._error(sent, ref)

    def void(self, request: VoidRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("DELETE", f"/v1/transactions/{ref}",
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        if sent.status_code == 200 and sent.field("returnCode") == CANCELLED:
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=ref,
                               status=ProviderStatus.VOIDED)
        return self._error(sent, ref)

    def refund(self, request: RefundRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("POST", f"/v1/transactions/{ref}/refunds",
                         body={"amount": to_decimal_string(request.amount, request.currency)},
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        refund_id = sent.field("refundId")
        if sent.status_code == 200 and sent.field("returnCode") == CANCELLED and refund_id:
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=str(refund_id),
                               status=ProviderStatus.REFUNDED,
                               amount=from_decimal_string(sent.field("amount"),
                                                          request.currency))
        return self._error(sent, ref)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        if request.provider_reference:
            sent = self.send("GET", f"/v1/transactions/{request.provider_reference}")
        else:
            sent = self.send("GET", "/v1/transactions",
                             params={"reference": request.merchant_reference})
        failed = self.unanswered(sent, mutation=False)
        if failed is not None:
            return failed
        if sent.status_code == 200 and isinstance(sent.field("authorization"), dict):
            return self._transaction(sent)
        return self._error(sent, request.provider_reference)

    # -- payouts and deposits --------------------------------------------------------------------
    def _movement(self, sent: Sent, id_field: str, *, mutation: bool) -> MovementResult:
        failed = self.movement_unanswered(sent, mutation=mutation)
        if failed is not None:
            return failed
        reference = sent.field(id_field)
        if sent.status_code not in (200, 201) or not isinstance(reference, str):
            fallback = "not_found" if sent.status_code == 404 else "invalid_request"
            return self.movement_rejected(
                sent, ERROR_CODES.get(str(sent.field("returnCode")), fallback))
        return self.movement_answer(
            sent, reference=reference,
            amount=from_decimal_string(sent.field("amount"), str(sent.field("currency"))),
            status=MOVEMENT_STATUS.get(sent.field("status"), MovementStatus.UNKNOWN))

    def payout_create(self, request: PayoutRequest) -> MovementResult:
        return self._movement(self.send("POST", "/v1/payouts", body={
            "reference": request.merchant_reference,
            "amount": to_decimal_string(request.amount, request.currency),
            "currency": request.currency.upper(), "bankAccount": request.destination,
        }, idempotency_key=request.idempotency_key), "payoutId", mutation=True)

    def payout_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement(self.send("GET", f"/v1/payouts/{provider_reference}"),
                              "payoutId", mutation=False)

    def deposit_create(self, request: DepositRequest) -> MovementResult:
        return self._movement(self.send("POST", "/v1/deposits", body={
            "reference": request.merchant_reference,
            "amount": to_decimal_string(request.amount, request.currency),
            "currency": request.currency.upper(), "method": request.method,
        }, idempotency_key=request.idempotency_key), "depositId", mutation=True)

    def deposit_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement(self.send("GET", f"/v1/deposits/{provider_reference}"),
                              "depositId", mutation=False)

    # -- inbound webhooks --------------------------------------------------------------------
    def verify_webhook(self, *, headers: Mapping[str, str], body: bytes,
                       now: float | None = None, tolerance_seconds: int = 300) -> bool:
        """`X-Rede-Signature: <base64 HMAC-SHA512(secret, "<timestamp>\\n<body>")>` with
        `X-Rede-Timestamp: <UTC RFC 3339, e.g. 2026-01-05T10:00:00Z>`."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("x-rede-timestamp", "")
        secret = self.config().get("webhook_secret", "")
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return False
        if not secret or moment.tzinfo is None or not fresh(moment.timestamp(), now,
                                                            tolerance_seconds):
            return False
        digest = hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha512)
        expected = base64.b64encode(digest.digest()).decode()
        return signature_matches(expected, [lower.get("x-rede-signature", "").strip()])

    def parse_webhook(self, body: bytes) -> InboundEvent:
        payload = parse_json_object(body)
        type = EVENTS.get(payload.get("event", ""))
        data = payload.get("data")
        if type is None or not payload.get("id") or not isinstance(data, dict):
            raise WebhookPayloadError(f"Unknown Rede event {payload.get('event')!r}.")
        currency = str(data.get("currency", "")).lower()
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
                           "dispute.opened": (data.get("chargeback") or {}).get("amount"),
                           }.get(type, data.get("amount"))
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
            payload=payload,
        )
