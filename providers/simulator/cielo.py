"""Simulated Cielo: PascalCase JSON, integer cents, numeric statuses, MerchantId/MerchantKey
headers, `RequestId` as idempotency key, declines answered 201 with Status 3."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from datetime import date, timedelta
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
    iso,
    require_currency,
    require_int,
    require_str,
    routes,
)
from providers.webhook_names import event_names

if TYPE_CHECKING:
    from providers.simulator.engine import DisputeCase

STATUS = {"pending_authentication": 0, "authorized": 1, "captured": 2, "declined": 3,
          "voided": 10, "refunded": 11}
RETURN_CODES = {
    "card_declined": "57", "do_not_honor": "05", "insufficient_funds": "51",
    "expired_card": "54", "fraud_suspected": "59", "issuer_unavailable": "91",
    "processing_error": "96", "invalid_token": "14",
    "authentication_failed": "A1", "authentication_abandoned": "A2",
}
ERRORS = {  # kind → (HTTP status, Cielo error code)
    "unauthorized": (401, 132), "invalid_request": (400, 114), "not_found": (404, 307),
    "idempotency_mismatch": (409, 901), "invalid_state": (400, 308),
    "invalid_amount": (400, 116), "unavailable": (503, 503), "server_error": (500, 500),
}
CHANGE_TYPES = event_names("cielo")
CHARGEBACK_STATUS = {"needs_response": "AwaitingDocuments", "under_review": "UnderAnalysis",
                     "won": "Reversed", "lost": "Accepted"}
MOVEMENT_STATUS = {"pending": "Pending", "in_transit": "InTransit", "paid": "Paid",
                   "confirmed": "Confirmed", "failed": "Failed"}


def _payment(charge: Charge) -> dict[str, Any]:
    approved = charge.status != "declined"
    if charge.status == "pending_authentication":
        # Cielo's "NotFinished" sale: the customer must authenticate at AuthenticationUrl.
        return {"PaymentId": charge.reference, "Type": "CreditCard", "Amount": charge.amount,
                "Currency": charge.currency.upper(), "Status": 0, "ReturnCode": "0",
                "ReturnMessage": "Authentication required",
                "AuthenticationUrl": charge.challenge_url, "ReturnUrl": charge.return_url,
                "ReceivedDate": iso(charge.created_at)}
    return {
        "PaymentId": charge.reference,
        "Type": "CreditCard",
        "Amount": charge.amount,
        "CapturedAmount": charge.captured,
        "VoidedAmount": charge.refunded,
        "DisputedAmount": charge.disputed,
        "Currency": charge.currency.upper(),
        "Status": STATUS[charge.status],
        "ReturnCode": ("6" if charge.captured else "4") if approved
        else RETURN_CODES[charge.decline_reason],
        "ReturnMessage": "Operation Successful" if approved else "Not Authorized",
        "ProofOfSale": charge.proof_of_sale,
        "AuthorizationCode": charge.authorization_code,
        "ReceivedDate": iso(charge.created_at),
        "CapturedDate": iso(charge.captured_at),
    }


def _sale(charge: Charge) -> dict[str, Any]:
    return {"MerchantOrderId": charge.order_id, "Payment": _payment(charge)}


def _movement(movement: Movement) -> dict[str, Any]:
    id_field = "PayoutId" if movement.kind == "payout" else "DepositId"
    order_field = "MerchantPayoutId" if movement.kind == "payout" else "MerchantDepositId"
    return {id_field: movement.reference, order_field: movement.order_id,
            "Amount": movement.amount, "Currency": movement.currency.upper(),
            "Status": MOVEMENT_STATUS[movement.status], "FailureReason": movement.failure_reason,
            "CreatedDate": iso(movement.created_at)}


class CieloDialect(Dialect):
    code = "cielo"
    idempotency_header = "RequestId"
    vault_wire = VaultWire(number="CardNumber", expiry="ExpirationDate",
                           network="NetworkToken", issued="CardToken", brand="Brand",
                           masked="CardNumber")
    route_table = routes(
        ("POST", r"/1/sales/?", "authorize"),
        ("POST", r"/1/card/?", "tokenize"),
        ("GET", r"/1/card/(?P<token>[^/]+)", "get_token"),
        ("PUT", r"/1/sales/(?P<ref>[^/]+)/capture", "capture"),
        ("PUT", r"/1/sales/(?P<ref>[^/]+)/void", "void_or_refund"),
        ("GET", r"/1/sales/(?P<ref>[^/]+)", "get_charge"),
        ("GET", r"/1/sales/?", "find_sales"),
        ("POST", r"/1/chargebacks/(?P<dispute>[^/]+)/evidence", "dispute_submit"),
        ("GET", r"/1/chargebacks/(?P<dispute>[^/]+)", "get_dispute"),
        movements="/1",
    )
    errors = ERRORS
    charge_not_found = "Transaction not found."

    def authenticate(self, request: Request, book: Book) -> Reply | None:
        creds = book.config.credentials
        if hmac.compare_digest(request.header("MerchantId"), creds["merchant_id"]) and (
                hmac.compare_digest(request.header("MerchantKey"), creds["merchant_key"])):
            return None
        return self.error("unauthorized", "MerchantId or MerchantKey is invalid.")

    def error_body(self, status: int, message: str, *codes: Any) -> Any:
        return [{"Code": codes[0], "Message": message}]

    # -- payments ------------------------------------------------------------------------------
    def authorize(self, request: Request, book: Book) -> Mutation:
        data = request.json()
        order_id = require_str(data, "MerchantOrderId", max_length=50)
        payment = data.get("Payment")
        if not isinstance(payment, dict):
            raise BadRequest("Payment is required.", "Payment")
        if payment.get("Type") != "CreditCard":
            raise BadRequest("Payment.Type must be CreditCard.", "Payment.Type")
        amount = require_int(payment.get("Amount"), "Payment.Amount")
        currency = require_currency(payment.get("Currency", "BRL"), "Payment.Currency")
        capture = payment.get("Capture", False)
        if not isinstance(capture, bool):
            raise BadRequest("Payment.Capture must be a boolean.", "Payment.Capture")
        card = payment.get("CreditCard")
        token = require_str(card if isinstance(card, dict) else {}, "CardToken", max_length=100)
        initiated = payment.get("InitiatedTransactionIndicator")
        stored = str(initiated.get("Category", "")) if isinstance(initiated, dict) else ""
        return_url = str(payment.get("ReturnUrl", ""))
        key = request.header(self.idempotency_header)

        def apply(draws: Draws) -> Result:
            return book.authorize(reference=book.new_uuid(), order_id=order_id, amount=amount,
                                  currency=currency, payment_method=token, capture=capture,
                                  idempotency_key=key, draws=draws, stored_credential=stored,
                                  return_url=return_url, challenge_base=challenge_base(request))

        def render(result: Result) -> Reply:
            assert result.charge is not None
            return Reply.json(201, _sale(result.charge))

        return Mutation("authorize", apply, render, payment_method=token)

    def requested_amount(self, request: Request, book: Book) -> int | None:
        """Cielo takes the amount of a capture or refund as a query parameter, in cents."""
        raw = request.query.get("amount")
        if raw is None:
            return None
        if not raw.isdigit():
            raise BadRequest("amount must be an integer number of cents.", "amount")
        return require_int(int(raw), "amount")

    def captured(self, result: Result) -> Reply:
        return Reply.json(200, {"Status": 2, "ReasonCode": 0, "ReasonMessage": "Successful",
                                "ProviderReturnCode": "6",
                                "ProviderReturnMessage": "Operation Successful",
                                "CapturedAmount": result.charge.captured})

    def void_or_refund(self, request: Request, book: Book) -> Mutation:
        """Cielo's one cancel endpoint: without `amount` it voids an authorization, with
        `amount` it refunds (part of) a captured sale."""
        if self.requested_amount(request, book) is None:
            return self.void(request, book)
        return self.refund(request, book)

    def voided(self, result: Result) -> Reply:
        return Reply.json(200, {"Status": 10, "ReasonCode": 0, "ReasonMessage": "Successful",
                                "ProviderReturnCode": "9",
                                "ProviderReturnMessage": "Operation Successful"})

    def refunded(self, result: Result) -> Reply:
        return Reply.json(200, {"Status": STATUS[result.charge.status], "ReasonCode": 0,
                                "ReasonMessage": "Successful", "ProviderReturnCode": "9",
                                "ProviderReturnMessage": "Operation Successful",
                                "RefundId": result.refund.reference,
                                "RefundAmount": result.refund.amount,
                                "VoidedAmount": result.charge.refunded})

    def charge_body(self, charge: Charge) -> dict[str, Any]:
        return _sale(charge)

    def find_sales(self, request: Request, book: Book) -> Reply:
        charges = self.order_charges(request, book, "merchantOrderId")
        if not charges:
            return self.error("not_found", "No sales for this MerchantOrderId.")
        # Like Cielo, the list holds ids only (live one first); the caller fetches the sale.
        return Reply.json(200, {"Payments": [
            {"PaymentId": c.reference, "ReceivedDate": iso(c.created_at)} for c in charges]})

    # -- payouts and deposits --------------------------------------------------------------------
    def movement_request(self, request: Request, book: Book, kind: str
                         ) -> tuple[str, int, str, str]:
        data = request.json()
        order_field = "MerchantPayoutId" if kind == "payout" else "MerchantDepositId"
        target_field = "Destination" if kind == "payout" else "Method"
        order_id = require_str(data, order_field)
        amount = require_int(data.get("Amount"), "Amount")
        currency = require_currency(data.get("Currency", "BRL"), "Currency")
        target = require_str(data, target_field)

        return order_id, amount, currency, target

    def movement_body(self, movement: Movement) -> dict[str, Any]:
        return _movement(movement)

    # -- disputes (chargebacks) ---------------------------------------------------------------
    dispute_evidence_keys = ("Evidence", "Text", "Documents",
                             ("Type", "FileName", "ContentType", "Content"))

    def dispute_body(self, case: DisputeCase) -> dict[str, Any]:
        return {"ChargebackId": case.reference, "PaymentId": case.charge_reference,
                "MerchantOrderId": case.order_id, "Amount": case.amount,
                "Currency": case.currency.upper(), "Reason": case.reason,
                "Status": CHARGEBACK_STATUS[case.status],
                "EvidenceDueDate": iso(case.evidence_due_by),
                "ReceivedDate": iso(case.opened_at), "DecisionDate": iso(case.decided_at),
                "Documents": [{"Type": d["field"], "FileName": d["filename"], "Size": d["size"]}
                              for d in case.documents]}

    # -- webhooks and settlement -------------------------------------------------------------
    def webhook_payload(self, event: SimEvent, book: Book) -> dict[str, Any]:
        payload: dict[str, Any] = {"NotificationId": event.id,
                                   "ChangeType": CHANGE_TYPES[event.type],
                                   "OccurredAt": iso(event.occurred_at)}
        if event.charge:
            charge = event.charge
            payload.update({
                "PaymentId": charge["reference"], "MerchantOrderId": charge["order_id"],
                "Amount": charge["amount"], "CapturedAmount": charge["captured"],
                "VoidedAmount": charge["refunded"], "Currency": charge["currency"].upper(),
                "Status": STATUS[charge["status"]],
            })
            if charge["decline_reason"]:
                payload["ReturnCode"] = RETURN_CODES[charge["decline_reason"]]
        if event.refund:
            payload.update({"RefundId": event.refund["reference"],
                            "RefundAmount": event.refund["amount"]})
        if event.dispute:
            payload.update({"ChargebackId": event.dispute["reference"],
                            "ChargebackAmount": event.dispute["amount"],
                            "ChargebackReason": event.dispute["reason"],
                            "ChargebackStatus": CHARGEBACK_STATUS[event.dispute["status"]],
                            "EvidenceDueDate": event.dispute["evidence_due_by"]})
        if event.movement:
            payload.update(_movement(event.movement))
        return payload

    def webhook_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        timestamp = str(int(now))
        digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                          hashlib.sha256).hexdigest()
        return {"Cielo-Event-Timestamp": timestamp, "Cielo-Signature": f"sha256={digest}"}

    def settlement_csv(self, book: Book, day: date) -> str:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
        writer.writerow(["DataVenda", "DataPrevistaPagamento", "PaymentId", "MerchantOrderId",
                         "NSU", "CodigoAutorizacao", "Tipo", "Moeda", "ValorBruto", "Taxa",
                         "ValorLiquido", "IdentificadorTransacao"])
        pay_day = (day + timedelta(days=2)).strftime("%d/%m/%Y")
        for row in book.settlement_rows(day):
            charge = row["charge"]
            writer.writerow([
                row["at"].strftime("%d/%m/%Y"), pay_day, charge.reference, charge.order_id,
                charge.proof_of_sale, charge.authorization_code,
                "Venda" if row["type"] == "capture" else "Estorno", charge.currency.upper(),
                row["gross"], row["fee"], row["gross"] - row["fee"], row["reference"],
            ])
        return out.getvalue()
