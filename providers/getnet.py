"""Getnet adapter: snake_case JSON, amounts as {"value", "scale", "currency"}, an OAuth2
client-credentials Bearer token plus an HMAC signature on every request, `Idempotency-Key`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from core.money import exponent
from providers import settlement
from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    DepositRequest,
    DisputeEvidenceRequest,
    DisputeState,
    InboundEvent,
    IncrementRequest,
    MalformedLine,
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
    Delivery,
    HttpAdapter,
    Sent,
    VaultFields,
    parse_json_object,
    parse_time,
    segment,
)
from providers.webhook_names import event_types

STATUS = {
    "AUTHORIZED": ProviderStatus.AUTHORIZED, "APPROVED": ProviderStatus.CAPTURED,
    "CONFIRMED": ProviderStatus.CAPTURED, "PARTIALLY_REFUNDED": ProviderStatus.CAPTURED,
    "DENIED": ProviderStatus.DECLINED, "CANCELED": ProviderStatus.VOIDED,
    "REFUNDED": ProviderStatus.REFUNDED, "PENDING": ProviderStatus.PENDING,
    "WAITING_AUTHENTICATION": ProviderStatus.PENDING,  # 3-D Secure: see authentication
}
DECLINE_CODES = {  # details[].error_code on a 402 → normalised code
    "PAYMENTS-001": "card_declined", "PAYMENTS-005": "do_not_honor",
    "PAYMENTS-051": "insufficient_funds", "PAYMENTS-054": "expired_card",
    "PAYMENTS-063": "fraud_suspected", "PAYMENTS-091": "issuer_unavailable",
    "PAYMENTS-096": "processing_error", "PAYMENTS-014": "invalid_payment_method",
    "PAYMENTS-3DS-01": "authentication_failed", "PAYMENTS-3DS-02": "authentication_abandoned",
}
ERROR_CODES = {  # details[].error_code on any other 4xx → normalised code
    "GENERIC-400": "invalid_request", "PAYMENTS-400": "invalid_request",
    "PAYMENTS-404": "not_found", "PAYMENTS-409": "invalid_state",
    "IDEMPOTENCY-422": "idempotency_conflict",
}
EVENTS = event_types("getnet")
MOVEMENT_STATUS = {"PENDING": MovementStatus.PENDING, "IN_TRANSIT": MovementStatus.PENDING,
                   "PAID": MovementStatus.PAID, "CONFIRMED": MovementStatus.CONFIRMED,
                   "FAILED": MovementStatus.FAILED}
OAUTH_PATH = "/auth/oauth/v2/token"
TOKEN_REFRESH_MARGIN_SECONDS = 60


def to_scaled(amount: int, currency: str) -> dict[str, Any]:
    return {"value": amount, "scale": exponent(currency.lower()), "currency": currency.upper()}


def from_scaled(value: Any) -> int | None:
    """{"value": 1050, "scale": 2, "currency": "BRL"} → 1050 minor units of BRL."""
    if not isinstance(value, dict):
        return None
    amount, scale = value.get("value"), value.get("scale")
    currency = str(value.get("currency", "")).lower()
    if not isinstance(amount, int) or not isinstance(scale, int) or not currency:
        return None
    shift = exponent(currency) - scale
    if shift >= 0:
        return amount * 10**shift
    return amount // 10**-shift if amount % 10**-shift == 0 else None


def request_signature(secret: str, timestamp: str, method: str, raw_path: str,
                      body: bytes) -> str:
    message = "\n".join([timestamp, method, raw_path, hashlib.sha256(body).hexdigest()])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


# -- settlement file: `,`-separated, ISO 8601 UTC datetimes, integers at AMOUNT_SCALE digits
def _getnet_amounts(values: tuple[str, ...], currency: str) -> tuple[int, int, int]:
    value, scale_text, fee, net = values
    scale = settlement.read_int(scale_text, "AMOUNT_SCALE")
    if not 0 <= scale <= 6:
        raise MalformedLine(f"AMOUNT_SCALE {scale} is out of range")
    gross, fee_minor, net_minor = (
        settlement.scaled_minor(settlement.read_int(text, name), scale, currency, name)
        for text, name in ((value, "AMOUNT_VALUE"), (fee, "FEE_VALUE"), (net, "NET_VALUE")))
    return gross, fee_minor, net_minor


SETTLEMENT = settlement.Layout(
    delimiter=",", day="TRANSACTION_DATETIME", reference="PAYMENT_ID", order="ORDER_ID",
    kind="TRANSACTION_TYPE", currency="CURRENCY", refund="REFUND_ID",
    amounts=("AMOUNT_VALUE", "AMOUNT_SCALE", "FEE_VALUE", "NET_VALUE"),
    kinds={"CAPTURE": settlement.CAPTURE, "REFUND": settlement.REFUND},
    read_day=settlement.iso_datetime_day, read_amounts=_getnet_amounts)
read_settlement = SETTLEMENT.parse


class GetnetProvider(HttpAdapter):
    code = "getnet"
    parse_settlement = staticmethod(read_settlement)
    idempotency_header = "Idempotency-Key"
    error_codes = ERROR_CODES
    vault = VaultFields(path="/v1/tokens/card", network="network_token", issued="number_token",
                        brand="brand", masked="card_number", expiry="expiration_date")

    def __init__(self) -> None:
        super().__init__()
        self._token: tuple[str, str, float] | None = None  # (base_url, token, expires)
        self._token_lock = threading.Lock()

    # -- auth: a cached bearer token and a per-request HMAC ----------------------------------
    def _fetch_token(self) -> Sent | None:
        """Get a fresh token into the cache; on failure, the Sent that explains why."""
        config = self.config()
        basic = base64.b64encode(
            f"{config['client_id']}:{config['client_secret']}".encode()).decode()
        url = config["base_url"].rstrip("/") + OAUTH_PATH
        started = time.monotonic()
        try:
            response = self.client().post(
                url, content=b"grant_type=client_credentials&scope=oob",
                headers={"Authorization": f"Basic {basic}",
                         "Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout())
        except httpx.TransportError as exc:
            return self._token_failure(exc, started, url)
        try:
            grant = response.json() if response.status_code == 200 else {}
        except ValueError:
            grant = {}
        token = grant.get("access_token") if isinstance(grant, dict) else None
        if isinstance(token, str):
            expires = time.monotonic() + int(grant.get("expires_in", 300))
            self._token = (config["base_url"], token, expires)
            return None
        # 401 (bad client credentials) and 503 keep their meaning; the payment was not sent.
        exchange = {"request": {"method": "POST", "url": url},
                    "response": {"status": response.status_code,
                                 "body": response.text[:500]}}
        return Sent(Delivery.ANSWERED, int((time.monotonic() - started) * 1000), exchange,
                    response, None)

    def _token_failure(self, exc: Exception, started: float, url: str) -> Sent:
        exchange = {"request": {"method": "POST", "url": url},
                    "response": {"error": f"{type(exc).__name__}: {exc}"[:500],
                                 "delivery": Delivery.NOT_SENT.value}}
        # Whatever happened to the token call, the payment request itself never left.
        return Sent(Delivery.NOT_SENT, int((time.monotonic() - started) * 1000), exchange)

    def _current_token(self) -> str | None:
        token = self._token
        if token is None or token[0] != self.config()["base_url"] or (
                token[2] - TOKEN_REFRESH_MARGIN_SECONDS < time.monotonic()):
            return None
        return token[1]

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        signature = request_signature(self.config()["signing_secret"], timestamp, method,
                                      url.raw_path.decode("ascii"), body)
        return {"Authorization": f"Bearer {self._current_token()}",
                "X-Getnet-Timestamp": timestamp, "X-Getnet-Signature": signature}

    def send(self, method: str, path: str, **kwargs: Any) -> Sent:
        for attempt in range(2):
            with self._token_lock:
                if self._current_token() is None:
                    failed = self._fetch_token()
                    if failed is not None:
                        return failed
            sent = super().send(method, path, **kwargs)
            # A 401 invalid_token was refused before anything happened: safe to re-send once.
            if attempt == 0 and sent.status_code == 401 and (
                    sent.field("error") == "invalid_token"):
                self._token = None
                continue
            return sent
        return sent

    # -- answers -------------------------------------------------------------------------------
    def error_key(self, sent: Sent) -> Any:
        return str(sent.field("details", 0, "error_code"))

    def _payment(self, sent: Sent, payment: Mapping[str, Any]) -> ProviderResult:
        return self.charge_answer(
            sent, STATUS.get(payment.get("status"), ProviderStatus.UNKNOWN),
            decline_code=DECLINE_CODES.get(str((payment.get("credit") or {}).get("reason_code")),
                                           "card_declined"),
            provider_reference=str(payment.get("payment_id", "")),
            amount=from_scaled(payment.get("amount_captured"))
            or from_scaled(payment.get("amount")),
            action_url=str((payment.get("authentication") or {}).get("redirect_url") or ""))

    # -- the port -------------------------------------------------------------------------------
    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        body = {
            "seller_id": self.config()["seller_id"],
            "amount": to_scaled(request.amount, request.currency),
            "order": {"order_id": request.merchant_reference},
            "credit": {"delayed": not request.capture, "number_token": request.payment_method,
                       "soft_descriptor": request.description[:22]},
        }
        if request.stored_credential != StoredCredential.NONE:
            body["credit"]["credentials_on_file_type"] = (
                "RECURRING" if request.stored_credential == StoredCredential.MERCHANT
                else "ONE_CLICK")
        if request.return_url:
            body["authentication"] = {"return_url": request.return_url}
        sent = self.send("POST", "/v1/payments/credit", body=body,
                         idempotency_key=request.idempotency_key)
        if sent.status_code == 200 and sent.field("payment_id"):
            return self._payment(sent, sent.data)
        if sent.status_code == 402:
            return self.declined(
                sent, DECLINE_CODES.get(str(sent.field("details", 0, "error_code")),
                                        "card_declined"),
                reference=str(sent.field("payment_id", default="")))
        return self.failure(sent)

    def _operation(self, request: CaptureRequest | RefundRequest | VoidRequest | IncrementRequest,
                   action: str,
                   body: dict[str, Any] | None) -> Sent:
        ref = segment(request.provider_reference)
        return self.send("POST", f"/v1/payments/credit/{ref}/{action}",
                         body=body if body is not None else {},
                         idempotency_key=request.idempotency_key)

    def capture(self, request: CaptureRequest) -> ProviderResult:
        sent = self._operation(request, "confirm",
                               {"amount": to_scaled(request.amount, request.currency)})
        if sent.status_code == 200 and sent.field("status") == "CONFIRMED":
            return self._payment(sent, sent.data)
        return self.failure(sent, request.provider_reference)

    def increment_authorization(self, request: IncrementRequest) -> ProviderResult:
        """Raise the open authorization to `amount` (its new total): Getnet answers with the
        payment, still AUTHORIZED, for the raised amount."""
        sent = self._operation(request, "increment",
                               {"amount": to_scaled(request.amount, request.currency)})
        if sent.status_code == 200 and sent.field("status") == "AUTHORIZED":
            return self._payment(sent, sent.data)
        return self.failure(sent, request.provider_reference)

    def void(self, request: VoidRequest) -> ProviderResult:
        sent = self._operation(request, "cancel", None)
        if sent.status_code == 200 and sent.field("status") == "CANCELED":
            return self._payment(sent, sent.data)
        return self.failure(sent, request.provider_reference)

    def refund(self, request: RefundRequest) -> ProviderResult:
        sent = self._operation(request, "refund",
                               {"amount": to_scaled(request.amount, request.currency)})
        refund_id = sent.field("refund_id")
        if sent.status_code == 200 and refund_id:
            return self.approved(sent, ProviderStatus.REFUNDED, str(refund_id),
                                 from_scaled(sent.field("amount")))
        return self.failure(sent, request.provider_reference)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        if request.provider_reference:
            sent = self.send("GET", f"/v1/payments/{segment(request.provider_reference)}")
            payment = sent.data
        else:
            sent = self.send("GET", "/v1/payments",
                             params={"order_id": request.merchant_reference})
            payment = sent.field("payments", 0)  # Getnet lists the live payment first
        if sent.status_code == 200 and isinstance(payment, dict):
            return self._payment(sent, payment)
        if sent.status_code == 200:  # an empty list: no payment for this order
            return self.declined(sent, "not_found", status=ProviderStatus.NOT_FOUND)
        return self.failure(sent, request.provider_reference, mutation=False)

    # -- payouts and deposits (the calls are HttpAdapter's) -----------------------------------
    movement_paths = {"payout": "/v1/payouts", "deposit": "/v1/deposits"}
    movement_ids = {"payout": "payout_id", "deposit": "deposit_id"}
    movement_ok = (200,)

    def movement_body(self, kind: str, request: PayoutRequest | DepositRequest
                      ) -> dict[str, Any]:
        body = {"seller_id": self.config()["seller_id"], "order_id": request.merchant_reference,
                "amount": to_scaled(request.amount, request.currency)}
        if isinstance(request, PayoutRequest):
            return {**body, "destination": {"bank_account_token": request.destination}}
        return {**body, "method": request.method}

    def movement_fields(self, sent: Sent) -> dict[str, Any]:
        return {"amount": from_scaled(sent.field("amount")),
                "status": MOVEMENT_STATUS.get(sent.field("status"), MovementStatus.UNKNOWN)}

    # -- inbound webhooks --------------------------------------------------------------------
    def webhook_signature(self, headers: Mapping[str, str], body: bytes, secret: str
                          ) -> tuple[float, str, list[str]] | None:
        """`X-Getnet-Webhook-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret,
        "<t>." + hex(SHA-256(body)))>`; several `v1=` may appear while a secret rotates."""
        parts = [p.strip().partition("=") for p in
                 headers.get("x-getnet-webhook-signature", "").split(",")]
        stamps = [value for key, _, value in parts if key == "t"]
        given = [value for key, _, value in parts if key == "v1"]
        # Exactly one ASCII-numeric `t`: a second one is an attempt to confuse the parser.
        if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()):
            return None
        millis = stamps[0]
        message = f"{millis}.{hashlib.sha256(body).hexdigest()}".encode()
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        return int(millis) / 1000, expected, given

    # -- disputes (the calls are HttpAdapter's) ------------------------------------------------
    dispute_statuses = {"WAITING_EVIDENCE": DisputeState.NEEDS_RESPONSE,
                        "UNDER_REVIEW": DisputeState.UNDER_REVIEW, "WON": DisputeState.WON,
                        "LOST": DisputeState.LOST}

    dispute_path, dispute_evidence_suffix = "/v1/disputes/{ref}", "/evidence"
    dispute_evidence_keys = ("evidence", "text", "files",
                             ("category", "file_name", "content_type", "content_base64"))

    def dispute_evidence_body(self, request: DisputeEvidenceRequest) -> dict[str, Any]:
        return {"seller_id": self.config()["seller_id"], **super().dispute_evidence_body(request)}

    def dispute_fields(self, sent: Sent) -> dict[str, Any]:
        amount = sent.field("amount")
        return {"dispute_reference": sent.field("dispute_id"),
                "provider_reference": sent.field("payment_id"), "amount": from_scaled(amount),
                "currency": str((amount or {}).get("currency", "")).lower()
                if isinstance(amount, dict) else "",
                "status": sent.field("status"),
                "evidence_due_by": sent.field("evidence_due_date")}

    def provider_message(self, sent: Sent) -> str:
        return str(sent.field("message", default="") or "")

    def parse_webhook(self, body: bytes) -> InboundEvent:
        data = parse_json_object(body)
        type = EVENTS.get(data.get("event_type", ""))
        if type is None or not data.get("notification_id"):
            raise WebhookPayloadError(f"Unknown Getnet event {data.get('event_type')!r}.")
        payment = data.get("payment") or {}
        dispute = data.get("dispute") or {}
        kind = type.partition(".")[0]
        status = ""
        if kind in ("payout", "deposit"):
            movement = data.get(kind) or {}
            reference, merchant_reference = movement.get(f"{kind}_id", ""), movement.get(
                "order_id", "")
            amount = from_scaled(movement.get("amount"))
            currency = str((movement.get("amount") or {}).get("currency", "")).lower()
            status = MOVEMENT_STATUS.get(movement.get("status"), MovementStatus.UNKNOWN).value
        else:
            reference, merchant_reference = payment.get("payment_id", ""), payment.get(
                "order_id", "")
            currency = str((payment.get("amount") or {}).get("currency", "")).lower()
            status = STATUS.get(payment.get("status"), ProviderStatus.UNKNOWN).value
            amount = {"payment.captured": from_scaled(payment.get("amount_captured")),
                      "refund.succeeded": from_scaled((data.get("refund") or {}).get("amount")),
                      }.get(type, from_scaled(payment.get("amount")))
            if kind == "dispute":
                amount = from_scaled(dispute.get("amount"))
        return InboundEvent(
            provider=self.code, event_id=str(data["notification_id"]), type=type,
            occurred_at=parse_time(data.get("created_at")), provider_reference=str(reference),
            merchant_reference=str(merchant_reference), amount=amount, currency=currency,
            status=status, refund_reference=str((data.get("refund") or {}).get("refund_id", "")),
            dispute_reference=str(dispute.get("dispute_id", "")),
            error_code=DECLINE_CODES.get(str(payment.get("error_code")), "card_declined")
            if type == "payment.declined" else "",
            evidence_due_by=parse_time(dispute["evidence_due_date"])
            if isinstance(dispute.get("evidence_due_date"), str) else None,
            payload=data,
        )
