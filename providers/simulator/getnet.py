"""Simulated Getnet: snake_case JSON, amounts as {"value", "scale", "currency"}, OAuth2 client
credentials for a Bearer token plus an HMAC signature on every request, declines answered 402."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import secrets
import time
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from core.money import exponent
from providers.simulator.engine import Book, Charge, Draws, Movement, Result, SimEvent
from providers.simulator.wire import (
    BadRequest,
    Dialect,
    Mutation,
    Reply,
    Request,
    VaultWire,
    challenge_base,
    iso,
    require_currency,
    require_str,
    routes,
    scaled_to_minor,
)
from providers.webhook_names import event_names

if TYPE_CHECKING:
    from providers.simulator.engine import DisputeCase

TOKEN_TTL_SECONDS = 3600
SIGNATURE_TOLERANCE_SECONDS = 300
DECLINES = {  # reason → (error_code, description_detail)
    "card_declined": ("PAYMENTS-001", "01 - TRANSACTION DENIED"),
    "do_not_honor": ("PAYMENTS-005", "05 - DO NOT HONOR"),
    "insufficient_funds": ("PAYMENTS-051", "51 - INSUFFICIENT FUNDS"),
    "expired_card": ("PAYMENTS-054", "54 - EXPIRED CARD"),
    "fraud_suspected": ("PAYMENTS-063", "63 - SECURITY VIOLATION"),
    "issuer_unavailable": ("PAYMENTS-091", "91 - ISSUER UNAVAILABLE, RETRY"),
    "processing_error": ("PAYMENTS-096", "96 - SYSTEM MALFUNCTION, RETRY"),
    "invalid_token": ("PAYMENTS-014", "14 - INVALID CARD TOKEN"),
    "authentication_failed": ("PAYMENTS-3DS-01", "3DS AUTHENTICATION FAILED"),
    "authentication_abandoned": ("PAYMENTS-3DS-02", "3DS AUTHENTICATION NOT COMPLETED"),
}
ERRORS = {  # kind → (HTTP status, error_code, name)
    "invalid_request": (400, "GENERIC-400", "BadRequest"),
    "not_found": (404, "PAYMENTS-404", "NotFound"),
    "idempotency_mismatch": (422, "IDEMPOTENCY-422", "IdempotencyKeyReused"),
    "invalid_state": (409, "PAYMENTS-409", "InvalidStatus"),
    "invalid_amount": (400, "PAYMENTS-400", "InvalidAmount"),
    "unavailable": (503, "SERVICE-503", "ServiceUnavailable"),
    "server_error": (500, "GENERIC-500", "InternalServerError"),
}
EVENTS = event_names("getnet")


DISPUTE_STATUS = {"needs_response": "WAITING_EVIDENCE", "under_review": "UNDER_REVIEW",
                  "won": "WON", "lost": "LOST"}


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"value": amount, "scale": exponent(currency), "currency": currency.upper()}


def _status(charge: dict[str, Any]) -> str:
    if charge["status"] == "captured":
        if charge["refunded"]:
            return "PARTIALLY_REFUNDED"
        # Getnet says APPROVED for a sale captured at once, CONFIRMED for a later capture.
        return "APPROVED" if charge["captured_at"] == charge["created_at"] else "CONFIRMED"
    return {"pending_authentication": "WAITING_AUTHENTICATION",
            "authorized": "AUTHORIZED", "declined": "DENIED", "voided": "CANCELED",
            "refunded": "REFUNDED"}[charge["status"]]


def _payment(charge: Charge) -> dict[str, Any]:
    currency = charge.currency
    body: dict[str, Any] = {
        "payment_id": charge.reference, "order_id": charge.order_id,
        "amount": _money(charge.amount, currency),
        "amount_captured": _money(charge.captured, currency),
        "amount_refunded": _money(charge.refunded, currency),
        "status": _status(charge.snapshot()), "received_at": iso(charge.created_at),
        "credit": {"authorization_code": charge.authorization_code,
                   "terminal_nsu": charge.proof_of_sale,
                   "captured_at": iso(charge.captured_at)},
    }
    if charge.decline_reason:
        body["credit"]["reason_code"], body["credit"]["reason_message"] = DECLINES[
            charge.decline_reason]
    if charge.status == "pending_authentication":
        body["authentication"] = {"redirect_url": charge.challenge_url,
                                  "return_url": charge.return_url}
    return body


def _movement(movement: Movement) -> dict[str, Any]:
    return {f"{movement.kind}_id": movement.reference, "order_id": movement.order_id,
            "amount": _money(movement.amount, movement.currency),
            "status": movement.status.upper(), "failure_reason": movement.failure_reason,
            "created_at": iso(movement.created_at), "updated_at": iso(movement.updated_at)}


def request_signature(secret: str, timestamp: str, method: str, raw_path: str,
                      body: bytes) -> str:
    """The HMAC Getnet wants on every API request (not to be confused with webhook signing)."""
    message = "\n".join([timestamp, method, raw_path, hashlib.sha256(body).hexdigest()])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


class GetnetDialect(Dialect):
    code = "getnet"
    movement_created_status = 200
    idempotency_header = "Idempotency-Key"
    vault_wire = VaultWire(number="card_number", expiry="expiration_date",
                           network="network_token", issued="number_token",
                           brand="brand", masked="card_number")
    route_table = routes(
        ("POST", r"/auth/oauth/v2/token", "token"),
        ("POST", r"/v1/payments/credit/?", "authorize"),
        ("POST", r"/v1/tokens/card/?", "tokenize"),
        ("GET", r"/v1/tokens/card/(?P<token>[^/]+)", "get_token"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/confirm", "capture"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/cancel", "void"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/increment", "increment"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/refund", "refund"),
        ("GET", r"/v1/payments/(?P<ref>[^/]+)", "get_charge"),
        ("GET", r"/v1/payments/?", "find_payments"),
        ("POST", r"/v1/disputes/(?P<dispute>[^/]+)/evidence", "dispute_submit"),
        ("GET", r"/v1/disputes/(?P<dispute>[^/]+)", "get_dispute"),
        movements="/v1",
    )
    errors = ERRORS
    charge_not_found = "Payment not found."
    amount_from_wire = staticmethod(scaled_to_minor)

    def authenticate(self, request: Request, book: Book) -> Reply | None:
        creds = book.config.credentials
        if request.path.rstrip("/") == "/auth/oauth/v2/token":
            basic = base64.b64encode(
                f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
            if hmac.compare_digest(request.header("Authorization"), f"Basic {basic}"):
                return None
            return self._oauth_error("invalid_client", "Client authentication failed.")
        token = request.header("Authorization").removeprefix("Bearer ")
        expires = book.tokens.get(token)
        if expires is None or expires < time.monotonic():
            return self._oauth_error("invalid_token", "The access token is invalid or expired.")
        timestamp = request.header("X-Getnet-Timestamp")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > (
                SIGNATURE_TOLERANCE_SECONDS):
            return self._oauth_error("invalid_signature", "Missing or stale X-Getnet-Timestamp.")
        expected = request_signature(creds["signing_secret"], timestamp, request.method,
                                     request.raw_path, request.body)
        if not hmac.compare_digest(request.header("X-Getnet-Signature"), expected):
            return self._oauth_error("invalid_signature", "X-Getnet-Signature does not match.")
        return None

    def _oauth_error(self, error: str, description: str) -> Reply:
        return Reply.json(401, {"error": error, "error_description": description},
                          {"WWW-Authenticate": f'Bearer error="{error}"'})

    def error(self, kind: str, message: str) -> Reply:
        if kind == "unauthorized":
            return self._oauth_error("invalid_token", message)
        return super().error(kind, message)

    def error_body(self, status: int, message: str, *codes: Any) -> Any:
        code, name = codes
        return {"message": message, "name": name, "status_code": status,
                "details": [{"status": "ERROR", "error_code": code, "description": message}]}

    def token(self, request: Request, book: Book) -> Reply:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return Reply.json(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(24)
        book.tokens[token] = time.monotonic() + TOKEN_TTL_SECONDS
        return Reply.json(200, {"access_token": token, "token_type": "Bearer",
                                "expires_in": TOKEN_TTL_SECONDS, "scope": "oob"})

    def _seller_amount(self, data: dict[str, Any], book: Book) -> tuple[int, str]:
        """The request's seller must be these credentials'; its `amount` object → (minor
        units, currency)."""
        if data.get("seller_id") != book.config.credentials["seller_id"]:
            raise BadRequest("seller_id does not belong to these credentials.", "seller_id")
        raw_amount = data.get("amount")
        currency = require_currency(
            raw_amount.get("currency", "BRL") if isinstance(raw_amount, dict) else None,
            "amount.currency")
        return scaled_to_minor(raw_amount, currency, "amount"), currency

    # -- payments ------------------------------------------------------------------------------
    def authorize(self, request: Request, book: Book) -> Mutation:
        data = request.json()
        amount, currency = self._seller_amount(data, book)
        order = data.get("order")
        order_id = require_str(order if isinstance(order, dict) else {}, "order_id")
        credit = data.get("credit")
        if not isinstance(credit, dict):
            raise BadRequest("credit is required.", "credit")
        token = require_str(credit, "number_token", max_length=100)
        delayed = credit.get("delayed", False)
        if not isinstance(delayed, bool):
            raise BadRequest("credit.delayed must be a boolean.", "credit.delayed")
        stored = str(credit.get("credentials_on_file_type", ""))
        authentication = data.get("authentication")
        return_url = (str(authentication.get("return_url", ""))
                      if isinstance(authentication, dict) else "")
        key = request.header(self.idempotency_header)

        def apply(draws: Draws) -> Result:
            return book.authorize(reference=book.new_uuid(), order_id=order_id, amount=amount,
                                  currency=currency, payment_method=token,
                                  capture=not delayed, idempotency_key=key, draws=draws,
                                  stored_credential=stored, return_url=return_url,
                                  challenge_base=challenge_base(request))

        def render(result: Result) -> Reply:
            charge = result.charge
            assert charge is not None
            if result.kind == "declined":
                code, detail = DECLINES[result.reason]
                return Reply.json(402, {
                    "message": "Transaction denied", "name": "PaymentDenied",
                    "status_code": 402, "payment_id": charge.reference,
                    "details": [{"status": "DENIED", "error_code": code,
                                 "description": "Transaction denied.",
                                 "description_detail": detail,
                                 "payment_id": charge.reference}],
                })
            return Reply.json(200, {**_payment(charge), "seller_id": data["seller_id"]})

        return Mutation("authorize", apply, render, payment_method=token)

    def captured(self, result: Result) -> Reply:
        return Reply.json(200, {**_payment(result.charge), "credit_confirm": {
            "confirm_date": iso(result.charge.captured_at),
            "message": "Credit transaction confirmed successfully"}})

    def incremented(self, result: Result) -> Reply:
        return Reply.json(200, {**_payment(result.charge), "credit_increment": {
            "message": "Credit authorization incremented successfully"}})

    def voided(self, result: Result) -> Reply:
        return Reply.json(200, {**_payment(result.charge), "credit_cancel": {
            "message": "Credit transaction cancelled successfully"}})

    def refunded(self, result: Result) -> Reply:
        charge, refund = result.charge, result.refund
        return Reply.json(200, {"payment_id": charge.reference, "refund_id": refund.reference,
                                "status": _status(charge.snapshot()),
                                "amount": _money(refund.amount, charge.currency),
                                "refunded_at": iso(refund.created_at)})

    def charge_body(self, charge: Charge) -> dict[str, Any]:
        return _payment(charge)

    def find_payments(self, request: Request, book: Book) -> Reply:
        charges = self.order_charges(request, book, "order_id")
        return Reply.json(200, {"payments": [_payment(c) for c in charges],
                                "total": len(charges)})

    # -- payouts and deposits --------------------------------------------------------------------
    def movement_request(self, request: Request, book: Book, kind: str
                         ) -> tuple[str, int, str, str]:
        data = request.json()
        amount, currency = self._seller_amount(data, book)
        order_id = require_str(data, "order_id")
        if kind == "payout":
            destination = data.get("destination")
            target = require_str(destination if isinstance(destination, dict) else {},
                                 "bank_account_token")
        else:
            target = require_str(data, "method")

        return order_id, amount, currency, target

    def movement_body(self, movement: Movement) -> dict[str, Any]:
        return _movement(movement)

    # -- webhooks and settlement -------------------------------------------------------------
    # -- disputes -----------------------------------------------------------------------------
    dispute_evidence_keys = ("evidence", "text", "files",
                             ("category", "file_name", "content_type", "content_base64"))

    def dispute_body(self, case: DisputeCase) -> dict[str, Any]:
        return {"dispute_id": case.reference, "payment_id": case.charge_reference,
                "order_id": case.order_id, "amount": _money(case.amount, case.currency),
                "reason": case.reason, "status": DISPUTE_STATUS[case.status],
                "evidence_due_date": iso(case.evidence_due_by),
                "opened_at": iso(case.opened_at), "decided_at": iso(case.decided_at),
                "files": [{"category": d["field"], "file_name": d["filename"], "size": d["size"]}
                          for d in case.documents]}

    def webhook_payload(self, event: SimEvent, book: Book) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "notification_id": event.id, "event_type": EVENTS[event.type],
            "created_at": iso(event.occurred_at),
            "seller_id": book.config.credentials["seller_id"],
        }
        if event.charge:
            charge = event.charge
            currency = charge["currency"]
            payload["payment"] = {
                "payment_id": charge["reference"], "order_id": charge["order_id"],
                "status": _status(charge), "amount": _money(charge["amount"], currency),
                "amount_captured": _money(charge["captured"], currency),
                "amount_refunded": _money(charge["refunded"], currency),
            }
            if charge["decline_reason"]:
                payload["payment"]["error_code"] = DECLINES[charge["decline_reason"]][0]
            if event.refund:
                payload["refund"] = {"refund_id": event.refund["reference"],
                                     "amount": _money(event.refund["amount"], currency)}
            if event.dispute:
                payload["dispute"] = {"dispute_id": event.dispute["reference"],
                                      "amount": _money(event.dispute["amount"], currency),
                                      "reason": event.dispute["reason"],
                                      "status": DISPUTE_STATUS[event.dispute["status"]],
                                      "evidence_due_date": event.dispute["evidence_due_by"]}
        if event.movement:
            payload[event.movement.kind] = _movement(event.movement)
        return payload

    def webhook_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        millis = str(int(now * 1000))
        message = f"{millis}.{hashlib.sha256(body).hexdigest()}".encode()
        digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        return {"X-Getnet-Webhook-Signature": f"t={millis},v1={digest}"}

    def settlement_csv(self, book: Book, day: date) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["SELLER_ID", "TRANSACTION_DATETIME", "PAYMENT_ID", "ORDER_ID",
                         "REFUND_ID", "TRANSACTION_TYPE", "CURRENCY", "AMOUNT_VALUE",
                         "AMOUNT_SCALE", "FEE_VALUE", "NET_VALUE", "TERMINAL_NSU"])
        seller = book.config.credentials["seller_id"]
        for row in book.settlement_rows(day):
            charge = row["charge"]
            is_capture = row["type"] == "capture"
            writer.writerow([
                seller, iso(row["at"]), charge.reference, charge.order_id,
                "" if is_capture else row["reference"], "CAPTURE" if is_capture else "REFUND",
                charge.currency.upper(), row["gross"], exponent(charge.currency), row["fee"],
                row["gross"] - row["fee"], charge.proof_of_sale,
            ])
        return out.getvalue()
