"""Cielo adapter (API 3.0 style): PascalCase JSON, integer cents, numeric payment statuses,
MerchantId/MerchantKey headers and `RequestId` as the provider idempotency key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import httpx

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

STATUS = {
    0: ProviderStatus.PENDING, 1: ProviderStatus.AUTHORIZED, 2: ProviderStatus.CAPTURED,
    3: ProviderStatus.DECLINED, 10: ProviderStatus.VOIDED, 11: ProviderStatus.REFUNDED,
    12: ProviderStatus.PENDING, 13: ProviderStatus.DECLINED,
}
RETURN_CODES = {  # Cielo ReturnCode on a denied sale → normalised code
    "05": "do_not_honor", "51": "insufficient_funds", "54": "expired_card",
    "57": "card_declined", "59": "fraud_suspected", "91": "issuer_unavailable",
    "96": "processing_error",
}
ERROR_CODES = {  # Cielo error Code in a 4xx body → normalised code
    114: "invalid_request", 116: "invalid_request", 132: "provider_authentication_failed",
    307: "not_found", 308: "invalid_state", 901: "idempotency_conflict",
}
CHANGE_TYPES = {
    "PaymentAuthorized": "payment.authorized", "PaymentCaptured": "payment.captured",
    "PaymentDenied": "payment.declined", "PaymentVoided": "payment.voided",
    "RefundConfirmed": "refund.succeeded", "ChargebackOpened": "dispute.opened",
    "PayoutPaid": "payout.paid", "PayoutFailed": "payout.failed",
    "DepositConfirmed": "deposit.confirmed", "DepositFailed": "deposit.failed",
}
MOVEMENT_STATUS = {"Pending": MovementStatus.PENDING, "InTransit": MovementStatus.PENDING,
                   "Paid": MovementStatus.PAID, "Confirmed": MovementStatus.CONFIRMED,
                   "Failed": MovementStatus.FAILED}


# -- settlement file ---------------------------------------------------------------------------
CIELO_COLUMNS = ("DataVenda", "PaymentId", "MerchantOrderId", "Tipo", "Moeda", "ValorBruto",
                 "Taxa", "ValorLiquido", "IdentificadorTransacao")
CIELO_TYPES = {"Venda": CAPTURE, "Estorno": REFUND}


def _settlement_cielo(line: SettlementRow, values: tuple[str, ...]) -> None:
    sale_date, reference, order, kind_text, currency, gross, fee, net, identifier = values
    kind = CIELO_TYPES.get(kind_text)
    if kind is None:
        raise MalformedLine(f"unknown Tipo {kind_text!r}")
    line.provider_reference, line.merchant_reference = reference, order
    line.refund_reference = identifier if kind == REFUND else ""
    line.transaction_date = settlement.day_month_year(sale_date)
    line.currency = settlement.read_currency(currency)
    settlement.finish(line, kind, settlement.read_int(gross, "ValorBruto"),
                      settlement.read_int(fee, "Taxa"), settlement.read_int(net, "ValorLiquido"))


def read_settlement(lines: Iterable[str]) -> Iterator[SettlementRow]:
    """`;`-separated, DD/MM/YYYY dates, integer cents; Venda (sale) or Estorno (refund)."""
    return settlement.parse(lines, ";", CIELO_COLUMNS, _settlement_cielo)


class CieloProvider(HttpAdapter):
    code = "cielo"
    parse_settlement = staticmethod(read_settlement)
    idempotency_header = "RequestId"
    # Cielo's real notification post is unsigned and carries only ids: a hint. What moves money
    # is our own lookup of the sale (or movement) it names (webhooks.inbound applies that).
    notices_need_lookup = True

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        config = self.config()
        return {"MerchantId": config["merchant_id"], "MerchantKey": config["merchant_key"]}

    def _error(self, sent: Sent, reference: str = "") -> ProviderResult:
        """Cielo lists its errors as [{"Code": 308, "Message": "…"}]; a bare 404 is not found."""
        fallback = "not_found" if sent.status_code == 404 else "invalid_request"
        return self.rejected(sent, ERROR_CODES.get(sent.field(0, "Code"), fallback),
                             reference=reference)

    def _sale(self, sent: Sent, payment: Mapping[str, Any], order_id: str = "") -> ProviderResult:
        reference = str(payment.get("PaymentId", ""))
        status = STATUS.get(payment.get("Status"), ProviderStatus.UNKNOWN)
        if status == ProviderStatus.DECLINED:
            return self.declined(sent, RETURN_CODES.get(str(payment.get("ReturnCode")),
                                                        "card_declined"), reference=reference)
        outcome = {ProviderStatus.PENDING: Outcome.PENDING,
                   ProviderStatus.UNKNOWN: Outcome.UNKNOWN}.get(status, Outcome.APPROVED)
        amount = payment.get("CapturedAmount") or payment.get("Amount")

        def integer(value: Any) -> int | None:
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return self.result(sent, outcome=outcome, provider_reference=reference, status=status,
                           amount=integer(amount),
                           currency=str(payment.get("Currency", "")).lower(),
                           amount_refunded=integer(payment.get("VoidedAmount")),
                           amount_disputed=integer(payment.get("DisputedAmount")),
                           merchant_reference=order_id)

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
        sent = self.send("POST", "/1/sales/", body=body, idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        payment = sent.field("Payment")
        if sent.status_code == 201 and isinstance(payment, dict):
            return self._sale(sent, payment)
        return self._error(sent)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{ref}/capture", params={"amount": str(request.amount)},
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        if sent.status_code == 200 and sent.field("Status") == 2:
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=ref,
                               status=ProviderStatus.CAPTURED,
                               amount=sent.field("CapturedAmount", default=request.amount))
        return self._error(sent, ref)

    def void(self, request: VoidRequest) -> ProviderResult:
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{ref}/void", idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        if sent.status_code == 200 and sent.field("Status") == 10:
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=ref,
                               status=ProviderStatus.VOIDED)
        return self._error(sent, ref)

    def refund(self, request: RefundRequest) -> ProviderResult:
        """Cielo refunds through the void endpoint, with an amount. Like every adapter, an
        approved refund answers with the refund's own reference and status REFUNDED."""
        ref = request.provider_reference
        sent = self.send("PUT", f"/1/sales/{ref}/void", params={"amount": str(request.amount)},
                         idempotency_key=request.idempotency_key)
        failed = self.unanswered(sent)
        if failed is not None:
            return failed
        refund_id = sent.field("RefundId")
        if sent.status_code == 200 and isinstance(refund_id, str):
            return self.result(sent, outcome=Outcome.APPROVED, provider_reference=refund_id,
                               status=ProviderStatus.REFUNDED,
                               amount=sent.field("RefundAmount", default=request.amount))
        return self._error(sent, ref)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        ref = request.provider_reference
        if ref:
            return self._get_sale(ref)
        # Cielo answers an order lookup with PaymentIds only (the live sale first), so a second
        # call fetches the sale; the result keeps both exchanges and the summed latency.
        found = self.send("GET", "/1/sales", params={
            "merchantOrderId": request.merchant_reference})
        failed = self.unanswered(found, mutation=False)
        if failed is not None:
            return failed
        ref = found.field("Payments", 0, "PaymentId", default="")
        if found.status_code != 200 or not ref:
            return self._error(found)
        result = self._get_sale(ref)
        return replace(result, latency_ms=result.latency_ms + found.latency_ms,
                       exchange={"lookup": found.exchange, **result.exchange})

    def _get_sale(self, ref: str) -> ProviderResult:
        sent = self.send("GET", f"/1/sales/{ref}")
        failed = self.unanswered(sent, mutation=False)
        if failed is not None:
            return failed
        payment = sent.field("Payment")
        if sent.status_code == 200 and isinstance(payment, dict):
            return self._sale(sent, payment, str(sent.field("MerchantOrderId", default="")))
        return self._error(sent, ref)

    # -- payouts and deposits --------------------------------------------------------------------
    def _movement(self, sent: Sent, id_field: str, *, mutation: bool) -> MovementResult:
        failed = self.movement_unanswered(sent, mutation=mutation)
        if failed is not None:
            return failed
        reference = sent.field(id_field)
        if sent.status_code not in (200, 201) or not isinstance(reference, str):
            fallback = "not_found" if sent.status_code == 404 else "invalid_request"
            return self.movement_rejected(sent, ERROR_CODES.get(sent.field(0, "Code"), fallback))
        return self.movement_answer(
            sent, reference=reference, amount=sent.field("Amount"),
            status=MOVEMENT_STATUS.get(sent.field("Status"), MovementStatus.UNKNOWN),
            currency=str(sent.field("Currency", default="")),
            merchant_reference=str(sent.field("MerchantPayoutId", default="")
                                   or sent.field("MerchantDepositId", default="")))

    def payout_create(self, request: PayoutRequest) -> MovementResult:
        return self._movement(self.send("POST", "/1/payouts", body={
            "MerchantPayoutId": request.merchant_reference, "Amount": request.amount,
            "Currency": request.currency.upper(), "Destination": request.destination,
        }, idempotency_key=request.idempotency_key), "PayoutId", mutation=True)

    def payout_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement(self.send("GET", f"/1/payouts/{provider_reference}"), "PayoutId",
                              mutation=False)

    def deposit_create(self, request: DepositRequest) -> MovementResult:
        return self._movement(self.send("POST", "/1/deposits", body={
            "MerchantDepositId": request.merchant_reference, "Amount": request.amount,
            "Currency": request.currency.upper(), "Method": request.method,
        }, idempotency_key=request.idempotency_key), "DepositId", mutation=True)

    def deposit_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement(self.send("GET", f"/1/deposits/{provider_reference}"),
                              "DepositId", mutation=False)

    # -- inbound webhooks --------------------------------------------------------------------
    def verify_webhook(self, *, headers: Mapping[str, str], body: bytes,
                       now: float | None = None, tolerance_seconds: int = 300) -> bool:
        """`Cielo-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with
        `Cielo-Event-Timestamp: <unix seconds>`."""
        lower = {k.lower(): v for k, v in headers.items()}
        timestamp = lower.get("cielo-event-timestamp", "")
        secret = self.config().get("webhook_secret", "")
        if not secret or not (timestamp.isascii() and timestamp.isdigit()) or not fresh(
                int(timestamp), now, tolerance_seconds):
            return False
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        given = [part.strip().removeprefix("sha256=")
                 for part in lower.get("cielo-signature", "").split(",")]
        return signature_matches(expected, given)

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
        elif type == "dispute.opened":
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
            payload=data,
        )
