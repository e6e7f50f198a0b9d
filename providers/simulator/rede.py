"""Simulated Rede: camelCase JSON, decimal-string amounts ("10.50"), string return codes,
HTTP Basic (PV:token), `X-Rede-Idempotency-Key`, declines answered 402."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from providers.simulator.engine import Book, Charge, Draws, Movement, Result, SimEvent
from providers.simulator.wire import (
    BadRequest,
    Dialect,
    Mutation,
    Reply,
    Request,
    VaultWire,
    challenge_base,
    decimal_to_minor,
    iso,
    minor_to_decimal,
    require_currency,
    require_str,
    routes,
)
from providers.webhook_names import event_names

if TYPE_CHECKING:
    from providers.simulator.engine import DisputeCase

RETURN_CODES = {  # decline reason → (returnCode, returnMessage)
    "card_declined": ("101", "Unauthorized. Problems on the card, contact the issuer."),
    "do_not_honor": ("105", "Unauthorized. Restricted card."),
    "issuer_unavailable": ("106", "Error in issuer processing. Try again."),
    "processing_error": ("107", "Unauthorized. Please try again."),
    "insufficient_funds": ("111", "Unauthorized. Insufficient funds."),
    "expired_card": ("112", "Unauthorized. Expiry date expired."),
    "fraud_suspected": ("113", "Unauthorized. Identified moderate risk by the issuer."),
    "invalid_token": ("58", "Unauthorized. Card token not found for this affiliation."),
    "authentication_failed": ("203", "Unauthorized. 3DS authentication failed."),
    "authentication_abandoned": ("204", "Unauthorized. 3DS authentication not completed."),
}
ERRORS = {  # kind → (HTTP status, returnCode)
    "unauthorized": (401, "401"), "invalid_request": (400, "37"), "not_found": (404, "78"),
    "idempotency_mismatch": (409, "42"), "invalid_state": (422, "355"),
    "invalid_amount": (422, "351"), "unavailable": (503, "503"), "server_error": (500, "500"),
}
AUTH_STATUS = {"pending_authentication": "Pending", "authorized": "Approved",
               "captured": "Approved", "refunded": "Canceled", "voided": "Canceled",
               "declined": "Denied"}
EVENTS = event_names("rede")


CHARGEBACK_STATUS = {"needs_response": "PENDING_DEFENSE", "under_review": "IN_ANALYSIS",
                     "won": "WON", "lost": "LOST"}


def _money(amount: int, currency: str) -> str:
    return minor_to_decimal(amount, currency)


def _transaction(charge: Charge) -> dict[str, Any]:
    """Rede's lookup answer: the authorization, its capture (if any) and its refunds."""
    code, message = (RETURN_CODES[charge.decline_reason] if charge.decline_reason
                     else ("00", "Success."))
    currency = charge.currency
    return {
        "requestDateTime": iso(datetime.now(UTC)),
        "authorization": {
            "tid": charge.reference, "nsu": charge.proof_of_sale, "reference": charge.order_id,
            "authorizationCode": charge.authorization_code, "kind": "credit",
            "amount": _money(charge.amount, currency), "currency": currency.upper(),
            "status": AUTH_STATUS[charge.status], "returnCode": code, "returnMessage": message,
            "dateTime": iso(charge.created_at),
        },
        "threeDSecure": {"url": charge.challenge_url} if charge.challenge_url
        and charge.status == "pending_authentication" else None,
        "capture": None if charge.captured_at is None else {
            "dateTime": iso(charge.captured_at), "nsu": charge.proof_of_sale,
            "amount": _money(charge.captured, currency)},
        "refunds": [{"refundId": r.reference, "amount": _money(r.amount, currency),
                     "status": "Done", "refundDateTime": iso(r.created_at)}
                    for r in charge.refunds],
    }


def _movement(movement: Movement) -> dict[str, Any]:
    id_field = "payoutId" if movement.kind == "payout" else "depositId"
    return {"returnCode": "00", "returnMessage": "Success.", id_field: movement.reference,
            "reference": movement.order_id,
            "amount": _money(movement.amount, movement.currency),
            "currency": movement.currency.upper(), "status": movement.status.upper(),
            "failureReason": movement.failure_reason, "dateTime": iso(movement.created_at)}


class RedeDialect(Dialect):
    code = "rede"
    idempotency_header = "X-Rede-Idempotency-Key"
    vault_wire = VaultWire(number="cardNumber", expiry="expirationDate",
                           network="networkToken", issued="tokenizationId", brand="brand",
                           masked="cardNumber")
    route_table = routes(
        ("POST", r"/v1/transactions/?", "authorize"),
        ("POST", r"/v1/tokenization/?", "tokenize"),
        ("GET", r"/v1/tokenization/(?P<token>[^/]+)", "get_token"),
        ("PUT", r"/v1/transactions/(?P<ref>[^/]+)", "capture"),
        ("DELETE", r"/v1/transactions/(?P<ref>[^/]+)", "void"),
        ("POST", r"/v1/transactions/(?P<ref>[^/]+)/refunds", "refund"),
        ("GET", r"/v1/transactions/(?P<ref>[^/]+)", "get_charge"),
        ("GET", r"/v1/transactions/?", "find_transaction"),
        ("POST", r"/v1/chargebacks/(?P<dispute>[^/]+)/defense", "dispute_submit"),
        ("GET", r"/v1/chargebacks/(?P<dispute>[^/]+)", "get_dispute"),
        movements="/v1",
    )
    errors = ERRORS
    charge_not_found = "Transaction does not exist."
    amount_from_wire = staticmethod(decimal_to_minor)

    def authenticate(self, request: Request, book: Book) -> Reply | None:
        creds = book.config.credentials
        expected = base64.b64encode(f"{creds['pv']}:{creds['token']}".encode()).decode()
        if hmac.compare_digest(request.header("Authorization"), f"Basic {expected}"):
            return None
        return self.error("unauthorized", "Unauthorized. Check affiliation (PV) and token.")

    def error_body(self, status: int, message: str, *codes: Any) -> Any:
        return {"returnCode": codes[0], "returnMessage": message}

    # -- payments ------------------------------------------------------------------------------
    def authorize(self, request: Request, book: Book) -> Mutation:
        data = request.json()
        if data.get("kind", "credit") != "credit":
            raise BadRequest("kind must be credit.", "kind")
        order_id = require_str(data, "reference", max_length=50)
        currency = require_currency(data.get("currency", "BRL"))
        amount = decimal_to_minor(data.get("amount"), currency, "amount")
        capture = data.get("capture", True)  # Rede captures unless told not to
        if not isinstance(capture, bool):
            raise BadRequest("capture must be a boolean.", "capture")
        token = require_str(data, "cardToken", max_length=100)
        stored = (f"{data.get('storageCard', '')}:{data.get('transactionInitiator', '')}"
                  if "storageCard" in data else "")
        urls = data.get("urls")
        return_url = next((str(item.get("url", "")) for item in urls if isinstance(item, dict)
                           and item.get("kind") == "threeDSecureSuccess"),
                          "") if isinstance(urls, list) else ""
        key = request.header(self.idempotency_header)

        def apply(draws: Draws) -> Result:
            return book.authorize(reference=book.new_digits(20), order_id=order_id,
                                  amount=amount, currency=currency, payment_method=token,
                                  capture=capture, idempotency_key=key, draws=draws,
                                  stored_credential=stored, return_url=return_url,
                                  challenge_base=challenge_base(request))

        def render(result: Result) -> Reply:
            charge = result.charge
            assert charge is not None
            body = {"reference": charge.order_id, "tid": charge.reference,
                    "nsu": charge.proof_of_sale, "dateTime": iso(charge.created_at),
                    "amount": _money(charge.amount, currency), "currency": currency.upper()}
            if result.kind == "declined":
                code, message = RETURN_CODES[result.reason]
                return Reply.json(402, {"returnCode": code, "returnMessage": message, **body})
            if charge.status == "pending_authentication":
                return Reply.json(200, {
                    "returnCode": "220", "returnMessage": "Transaction request with "
                    "authentication received. Redirect URL sent.", **body,
                    "threeDSecure": {"url": charge.challenge_url}})
            return Reply.json(200, {"returnCode": "00", "returnMessage": "Success.", **body,
                                    "authorizationCode": charge.authorization_code})

        return Mutation("authorize", apply, render, payment_method=token)

    def captured(self, result: Result) -> Reply:
        charge = result.charge
        return Reply.json(200, {"returnCode": "00", "returnMessage": "Success.",
                                "tid": charge.reference, "nsu": charge.proof_of_sale,
                                "dateTime": iso(charge.captured_at),
                                "amount": _money(charge.captured, charge.currency)})

    def voided(self, result: Result) -> Reply:
        return Reply.json(200, {"returnCode": "359", "returnMessage": "Cancellation successful.",
                                "tid": result.charge.reference})

    def refunded(self, result: Result) -> Reply:
        charge, refund = result.charge, result.refund
        return Reply.json(200, {"returnCode": "359", "returnMessage": "Refund successful.",
                                "refundId": refund.reference, "tid": charge.reference,
                                "nsu": charge.proof_of_sale,
                                "refundDateTime": iso(refund.created_at),
                                "amount": _money(refund.amount, charge.currency)})

    def charge_body(self, charge: Charge) -> dict[str, Any]:
        return _transaction(charge)

    def find_transaction(self, request: Request, book: Book) -> Reply:
        charges = self.order_charges(request, book, "reference")
        if not charges:
            return self.error("not_found", "Transaction does not exist.")
        return Reply.json(200, _transaction(charges[0]))

    # -- payouts and deposits --------------------------------------------------------------------
    def movement_request(self, request: Request, book: Book, kind: str
                         ) -> tuple[str, int, str, str]:
        data = request.json()
        order_id = require_str(data, "reference")
        currency = require_currency(data.get("currency", "BRL"))
        amount = decimal_to_minor(data.get("amount"), currency, "amount")
        target = require_str(data, "bankAccount" if kind == "payout" else "method")

        return order_id, amount, currency, target

    def movement_body(self, movement: Movement) -> dict[str, Any]:
        return _movement(movement)

    # -- webhooks and settlement -------------------------------------------------------------
    # -- disputes (chargebacks) ---------------------------------------------------------------
    dispute_evidence_keys = ("", "text", "documents", ("type", "fileName", "mimeType", "content"))

    def dispute_body(self, case: DisputeCase) -> dict[str, Any]:
        return {"chargebackId": case.reference, "tid": case.charge_reference,
                "reference": case.order_id, "amount": _money(case.amount, case.currency),
                "currency": case.currency.upper(), "reason": case.reason,
                "status": CHARGEBACK_STATUS[case.status], "dueDate": iso(case.evidence_due_by),
                "openedAt": iso(case.opened_at), "decidedAt": iso(case.decided_at),
                "documents": [{"type": d["field"], "fileName": d["filename"], "size": d["size"]}
                              for d in case.documents]}

    def webhook_payload(self, event: SimEvent, book: Book) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if event.charge:
            charge = event.charge
            currency = charge["currency"]
            data.update({"tid": charge["reference"], "reference": charge["order_id"],
                         "amount": _money(charge["amount"], currency),
                         "capturedAmount": _money(charge["captured"], currency),
                         "refundedAmount": _money(charge["refunded"], currency),
                         "currency": currency.upper(),
                         "status": AUTH_STATUS[charge["status"]]})
            if charge["decline_reason"]:
                data["returnCode"] = RETURN_CODES[charge["decline_reason"]][0]
            if event.refund:
                data.update({"refundId": event.refund["reference"],
                             "refundAmount": _money(event.refund["amount"], currency)})
            if event.dispute:
                data["chargeback"] = {"id": event.dispute["reference"],
                                      "amount": _money(event.dispute["amount"], currency),
                                      "reason": event.dispute["reason"],
                                      "status": CHARGEBACK_STATUS[event.dispute["status"]],
                                      "dueDate": event.dispute["evidence_due_by"]}
        if event.movement:
            data.update(_movement(event.movement))
            data.pop("returnCode")
            data.pop("returnMessage")
        return {"id": event.id, "event": EVENTS[event.type], "occurredAt": iso(event.occurred_at),
                "data": data}

    def webhook_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        timestamp = datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hmac.new(secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha512)
        return {"X-Rede-Timestamp": timestamp,
                "X-Rede-Signature": base64.b64encode(digest.digest()).decode()}

    def settlement_csv(self, book: Book, day: date) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["settlement_date", "sale_date", "tid", "nsu", "reference", "type",
                         "currency", "gross_amount", "mdr_amount", "net_amount", "refund_id"])
        settle_day = (day + timedelta(days=1)).isoformat()
        for row in book.settlement_rows(day):
            charge = row["charge"]
            currency = charge.currency
            writer.writerow([
                settle_day, row["at"].date().isoformat(), charge.reference,
                charge.proof_of_sale, charge.order_id,
                "sale" if row["type"] == "capture" else "refund", currency.upper(),
                _signed(row["gross"], currency), _signed(row["fee"], currency),
                _signed(row["gross"] - row["fee"], currency),
                row["reference"] if row["type"] == "refund" else "",
            ])
        return out.getvalue()


def _signed(amount: int, currency: str) -> str:
    return ("-" if amount < 0 else "") + _money(abs(amount), currency)
