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
from typing import Any
from urllib.parse import parse_qs

from core.money import exponent
from providers.simulator.engine import Book, Charge, Draws, Movement, Result, SimEvent
from providers.simulator.wire import (
    BadRequest,
    Dialect,
    Mutation,
    Reply,
    Request,
    iso,
    pick_charge_for_order,
    require_currency,
    require_str,
    routes,
    scaled_to_minor,
)

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
EVENTS = {
    "payment.authorized": "PAYMENT_AUTHORIZED", "payment.captured": "PAYMENT_CONFIRMED",
    "payment.declined": "PAYMENT_DENIED", "payment.voided": "PAYMENT_CANCELED",
    "refund.succeeded": "REFUND_APPROVED", "dispute.opened": "DISPUTE_OPENED",
    "payout.paid": "PAYOUT_PAID", "payout.failed": "PAYOUT_FAILED",
    "deposit.confirmed": "DEPOSIT_CONFIRMED", "deposit.failed": "DEPOSIT_FAILED",
}


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"value": amount, "scale": exponent(currency), "currency": currency.upper()}


def _status(charge: dict[str, Any]) -> str:
    if charge["status"] == "captured":
        if charge["refunded"]:
            return "PARTIALLY_REFUNDED"
        # Getnet says APPROVED for a sale captured at once, CONFIRMED for a later capture.
        return "APPROVED" if charge["captured_at"] == charge["created_at"] else "CONFIRMED"
    return {"authorized": "AUTHORIZED", "declined": "DENIED", "voided": "CANCELED",
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
    route_table = routes(
        ("POST", r"/auth/oauth/v2/token", "token"),
        ("POST", r"/v1/payments/credit/?", "authorize"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/confirm", "capture"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/cancel", "void"),
        ("POST", r"/v1/payments/credit/(?P<ref>[^/]+)/refund", "refund"),
        ("GET", r"/v1/payments/(?P<ref>[^/]+)", "get_payment"),
        ("GET", r"/v1/payments/?", "find_payments"),
        ("POST", r"/v1/payouts/?", "payout"),
        ("GET", r"/v1/payouts/(?P<ref>[^/]+)", "get_payout"),
        ("POST", r"/v1/deposits/?", "deposit"),
        ("GET", r"/v1/deposits/(?P<ref>[^/]+)", "get_deposit"),
    )

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
        status, code, name = ERRORS[kind]
        headers = {"Retry-After": "1"} if status == 503 else {}
        return Reply.json(status, {
            "message": message, "name": name, "status_code": status,
            "details": [{"status": "ERROR", "error_code": code, "description": message}],
        }, headers)

    def token(self, request: Request, book: Book) -> Reply:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return Reply.json(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(24)
        book.tokens[token] = time.monotonic() + TOKEN_TTL_SECONDS
        return Reply.json(200, {"access_token": token, "token_type": "Bearer",
                                "expires_in": TOKEN_TTL_SECONDS, "scope": "oob"})

    def _seller(self, data: dict[str, Any], book: Book) -> None:
        if data.get("seller_id") != book.config.credentials["seller_id"]:
            raise BadRequest("seller_id does not belong to these credentials.", "seller_id")

    # -- payments ------------------------------------------------------------------------------
    def authorize(self, request: Request, book: Book) -> Mutation:
        data = request.json()
        self._seller(data, book)
        raw_amount = data.get("amount")
        currency = require_currency(
            raw_amount.get("currency", "BRL") if isinstance(raw_amount, dict) else None,
            "amount.currency")
        amount = scaled_to_minor(raw_amount, currency, "amount")
        order = data.get("order")
        order_id = require_str(order if isinstance(order, dict) else {}, "order_id")
        credit = data.get("credit")
        if not isinstance(credit, dict):
            raise BadRequest("credit is required.", "credit")
        token = require_str(credit, "number_token", max_length=100)
        delayed = credit.get("delayed", False)
        if not isinstance(delayed, bool):
            raise BadRequest("credit.delayed must be a boolean.", "credit.delayed")
        key = request.header(self.idempotency_header)

        def apply(draws: Draws) -> Result:
            return book.authorize(reference=book.new_uuid(), order_id=order_id, amount=amount,
                                  currency=currency, payment_method=token,
                                  capture=not delayed, idempotency_key=key, draws=draws)

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

    def _amount(self, request: Request, book: Book) -> int | None:
        data = request.json()
        charge = book.charge(request.params["ref"])
        if "amount" not in data or charge is None:
            return None
        return scaled_to_minor(data["amount"], charge.currency, "amount")

    def capture(self, request: Request, book: Book) -> Mutation:
        ref, amount = request.params["ref"], self._amount(request, book)

        def render(result: Result) -> Reply:
            if result.kind != "ok":
                return self.failure(result)
            return Reply.json(200, {**_payment(result.charge), "credit_confirm": {
                "confirm_date": iso(result.charge.captured_at),
                "message": "Credit transaction confirmed successfully"}})

        return Mutation("capture", lambda draws: book.capture(ref, amount), render)

    def void(self, request: Request, book: Book) -> Mutation:
        ref = request.params["ref"]

        def render(result: Result) -> Reply:
            if result.kind != "ok":
                return self.failure(result)
            return Reply.json(200, {**_payment(result.charge), "credit_cancel": {
                "message": "Credit transaction cancelled successfully"}})

        return Mutation("void", lambda draws: book.void(ref), render)

    def refund(self, request: Request, book: Book) -> Mutation:
        ref, amount = request.params["ref"], self._amount(request, book)

        def render(result: Result) -> Reply:
            if result.kind != "ok":
                return self.failure(result)
            charge, refund = result.charge, result.refund
            return Reply.json(200, {"payment_id": charge.reference,
                                    "refund_id": refund.reference,
                                    "status": _status(charge.snapshot()),
                                    "amount": _money(refund.amount, charge.currency),
                                    "refunded_at": iso(refund.created_at)})

        return Mutation("refund", lambda draws: book.refund(ref, amount, book.new_uuid()),
                        render)

    def get_payment(self, request: Request, book: Book) -> Reply:
        charge = book.charge(request.params["ref"])
        if charge is None:
            return self.error("not_found", "Payment not found.")
        return Reply.json(200, _payment(charge))

    def find_payments(self, request: Request, book: Book) -> Reply:
        order_id = request.query.get("order_id", "")
        if not order_id:
            raise BadRequest("order_id is required.", "order_id")
        charges = book.charges_for_order(order_id)
        ordered = []
        if charges:
            best = pick_charge_for_order(charges)
            ordered = [best, *[c for c in reversed(charges) if c is not best]]
        return Reply.json(200, {"payments": [_payment(c) for c in ordered],
                                "total": len(ordered)})

    # -- payouts and deposits --------------------------------------------------------------------
    def movement_request(self, request: Request, book: Book, kind: str
                         ) -> tuple[str, int, str, str]:
        data = request.json()
        self._seller(data, book)
        raw_amount = data.get("amount")
        currency = require_currency(
            raw_amount.get("currency", "BRL") if isinstance(raw_amount, dict) else None,
            "amount.currency")
        amount = scaled_to_minor(raw_amount, currency, "amount")
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
                                      "reason": event.dispute["reason"]}
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
