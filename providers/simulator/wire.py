"""What every simulated dialect shares: requests, replies, routes, mutations and amount codecs.

A dialect turns HTTP into calls on a `Book` and `Result`s back into its own wire format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from core.money import exponent
from providers.simulator.engine import (
    Apply,
    Book,
    Charge,
    Draws,
    Movement,
    Result,
    SchemeCard,
    SimEvent,
    luhn_valid,
)

if TYPE_CHECKING:
    from providers.simulator.engine import DisputeCase


class BadRequest(Exception):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(),
                   headers=headers or {})


@dataclass
class Request:
    method: str
    path: str  # inside the provider's prefix, without the query string
    raw_path: str  # as sent on the wire, with prefix and query (signatures cover it)
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise BadRequest("The body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise BadRequest("The body must be a JSON object.")
        return data


@dataclass
class Mutation:
    """A state-changing request: the server runs it once per idempotency key, with faults."""

    operation: str
    apply: Apply
    render: Callable[[Result], Reply]
    payment_method: str = ""


Handler = Callable[[Request, Book], "Reply | Mutation"]


@dataclass(frozen=True)
class VaultWire:
    """The field names of one acquirer's card vault: the card number and expiry ("MM/YYYY")
    the front-end sends, the network token an enrolment sends, and the answer's fields."""

    number: str
    expiry: str
    network: str  # the network token's field
    issued: str  # the field of the token this vault issued
    brand: str
    masked: str


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: str


def routes(*table: tuple[str, str, str], movements: str = "") -> list[Route]:
    """The route table; `movements` is the prefix under which the dialect serves the payout
    and deposit endpoints every provider has (`<prefix>/payouts`, `<prefix>/deposits`)."""
    for kind in ("payout", "deposit") if movements else ():
        table += (("POST", rf"{movements}/{kind}s/?", kind),
                  ("GET", rf"{movements}/{kind}s/(?P<ref>[^/]+)", f"get_{kind}"))
    return [Route(method, re.compile(f"^{pattern}$"), handler)
            for method, pattern, handler in table]


class Dialect:
    """Base for the three providers' wire formats; subclasses fill in the details."""

    code: str = ""
    idempotency_header: str = ""
    route_table: list[Route] = []

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for route in self.route_table:
            found = route.pattern.match(path)
            if found and route.method == method:
                return getattr(self, route.handler), found.groupdict()
        return None

    def authenticate(self, request: Request, book: Book) -> Reply | None:
        raise NotImplementedError

    # kind → (HTTP status, the provider's error code, …): what `error_body` is given
    errors: dict[str, tuple[Any, ...]] = {}

    def error(self, kind: str, message: str) -> Reply:
        """kind: unauthorized, invalid_request, not_found, idempotency_mismatch, unavailable,
        server_error, invalid_state, invalid_amount. A 503 asks to retry after a second."""
        status, *codes = self.errors[kind]
        return Reply.json(status, self.error_body(status, message, *codes),
                          {"Retry-After": "1"} if status == 503 else {})

    def error_body(self, status: int, message: str, *codes: Any) -> Any:
        raise NotImplementedError

    def webhook_payload(self, event: SimEvent, book: Book) -> dict[str, Any]:
        raise NotImplementedError

    def webhook_headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        raise NotImplementedError

    def settlement_csv(self, book: Book, day: date) -> str:
        raise NotImplementedError

    # -- payouts and deposits: each dialect reads its request fields and writes its body ------
    movement_created_status: int = 201

    def movement_request(self, request: Request, book: Book, kind: str
                         ) -> tuple[str, int, str, str]:
        """(order id, amount, currency, target) of a payout or deposit request; raises
        BadRequest. The target is the destination token of a payout, the method of a deposit."""
        raise NotImplementedError

    def movement_body(self, movement: Movement) -> dict[str, Any]:
        raise NotImplementedError

    def _movement_create(self, request: Request, book: Book, kind: str) -> Mutation:
        order_id, amount, currency, target = self.movement_request(request, book, kind)

        def apply(draws: Draws) -> Result:
            return book.movement_create(kind=kind, reference=book.new_uuid(), order_id=order_id,
                                        amount=amount, currency=currency, target=target)

        return Mutation(kind, apply, lambda result: Reply.json(
            self.movement_created_status, self.movement_body(result.movement)))

    def payout(self, request: Request, book: Book) -> Mutation:
        return self._movement_create(request, book, "payout")

    def deposit(self, request: Request, book: Book) -> Mutation:
        return self._movement_create(request, book, "deposit")

    def _movement_get(self, request: Request, book: Book, kind: str) -> Reply:
        movement = book.movement(kind, request.params["ref"])
        if movement is None:
            return self.error("not_found", f"No {kind} with this id.")
        return Reply.json(200, self.movement_body(movement))

    def get_payout(self, request: Request, book: Book) -> Reply:
        return self._movement_get(request, book, "payout")

    def get_deposit(self, request: Request, book: Book) -> Reply:
        return self._movement_get(request, book, "deposit")

    # -- a charge: capture, void and refund it, look it up --------------------------------------
    charge_not_found: str = "No transaction with this reference."

    def amount_from_wire(self, value: Any, currency: str, name: str) -> int:
        """The dialect's amount codec (decimal string, scaled object, …) → minor units."""
        raise NotImplementedError

    def requested_amount(self, request: Request, book: Book) -> int | None:
        """The `amount` of a capture or refund body, in the charge's currency; None when the
        body has none (all of it) or the charge is unknown (the book answers not_found)."""
        data = request.json()
        charge = book.charge(request.params["ref"])
        if "amount" not in data or charge is None:
            return None
        return self.amount_from_wire(data["amount"], charge.currency, "amount")

    def _on_charge(self, operation: str, apply: Apply,
                   reply: Callable[[Result], Reply]) -> Mutation:
        """A mutation of one charge: `reply` renders success, `failure` everything else."""
        return Mutation(operation, apply, lambda result: reply(result) if result.kind == "ok"
                        else self.failure(result))

    def capture(self, request: Request, book: Book) -> Mutation:
        ref, amount = request.params["ref"], self.requested_amount(request, book)
        return self._on_charge("capture", lambda draws: book.capture(ref, amount),
                               self.captured)

    def increment(self, request: Request, book: Book) -> Mutation:
        """Incremental authorization, for the dialects whose route table names it."""
        ref, amount = request.params["ref"], self.requested_amount(request, book)
        return self._on_charge("increment", lambda draws: book.increment(ref, amount),
                               self.incremented)

    def void(self, request: Request, book: Book) -> Mutation:
        ref = request.params["ref"]
        return self._on_charge("void", lambda draws: book.void(ref), self.voided)

    def refund(self, request: Request, book: Book) -> Mutation:
        ref, amount = request.params["ref"], self.requested_amount(request, book)
        return self._on_charge("refund", lambda draws: book.refund(ref, amount, book.new_uuid()),
                               self.refunded)

    def captured(self, result: Result) -> Reply:
        raise NotImplementedError

    def voided(self, result: Result) -> Reply:
        raise NotImplementedError

    def incremented(self, result: Result) -> Reply:
        raise NotImplementedError

    def refunded(self, result: Result) -> Reply:
        raise NotImplementedError

    def charge_body(self, charge: Charge) -> dict[str, Any]:
        """The dialect's lookup answer for one charge."""
        raise NotImplementedError

    def get_charge(self, request: Request, book: Book) -> Reply:
        charge = book.charge(request.params["ref"])
        if charge is None:
            return self.error("not_found", self.charge_not_found)
        return Reply.json(200, self.charge_body(charge))

    def order_charges(self, request: Request, book: Book, param: str) -> list[Charge]:
        """The charges of the order named by query parameter `param`, the live one first."""
        order_id = request.query.get(param, "")
        if not order_id:
            raise BadRequest(f"{param} is required.", param)
        charges = book.charges_for_order(order_id)
        if not charges:
            return []
        best = pick_charge_for_order(charges)
        return [best, *[c for c in reversed(charges) if c is not best]]

    # -- disputes: each dialect reads its evidence fields and writes its case body ------------
    # The evidence body's keys: the object wrapping it ("" for none), its text and its
    # documents, and each document's (what it proves, file name, content type, base64 content).
    dispute_evidence_keys: tuple[str, str, str, tuple[str, str, str, str]] = (
        "", "", "", ("", "", "", ""))

    def dispute_evidence(self, request: Request) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """(text fields, documents) of an evidence request; raises BadRequest. Documents come
        back described (field, filename, content type, size, sha256): the bytes are checked
        and hashed, not kept."""
        wrapper, text, documents, keys = self.dispute_evidence_keys
        evidence = request.json()
        if wrapper:
            evidence = evidence.get(wrapper)
            if not isinstance(evidence, dict):
                raise BadRequest(f"{wrapper} is required.", wrapper)
        prefix = f"{wrapper}." if wrapper else ""
        return (read_text(evidence.get(text, {}), prefix + text),
                read_documents(evidence.get(documents, []), prefix + documents, keys))

    def dispute_body(self, case: DisputeCase) -> dict[str, Any]:
        raise NotImplementedError

    def dispute_submit(self, request: Request, book: Book) -> Mutation:
        ref = request.params["dispute"]
        text, documents = self.dispute_evidence(request)

        def reply(result: Result) -> Reply:
            if result.kind == "ok":
                return Reply.json(200, self.dispute_body(result.dispute))
            if result.kind == "invalid_state":
                return self.error("invalid_state", f"The dispute cannot take evidence: "
                                                   f"{result.reason}.")
            return self.error("not_found", "No dispute with this id.")

        return Mutation("dispute_evidence", lambda draws: book.dispute_submit(ref, text, documents),
                        reply)

    def get_dispute(self, request: Request, book: Book) -> Reply:
        case = book.dispute_case(request.params["dispute"])  # may decide it (deadline passed)
        if case is None:
            return self.error("not_found", "No dispute with this id.")
        return Reply.json(200, self.dispute_body(case))

    # -- the card vault: tokenize a card (the merchant's front-end) or enrol a network token ----
    vault_wire: VaultWire | None = None

    def vault_body(self, token: str, card: SchemeCard) -> dict[str, Any]:
        wire = self.vault_wire
        assert wire is not None
        return {wire.issued: token, wire.network: card.network_token,
                wire.brand: card.brand, wire.masked: "*" * 12 + card.last4,
                wire.expiry: f"{card.exp_month:02d}/{card.exp_year}"}

    def tokenize(self, request: Request, book: Book) -> Mutation:
        wire = self.vault_wire
        assert wire is not None
        data = request.json()
        if wire.network in data:
            network_token = require_str(data, wire.network, max_length=100)

            def apply(draws: Draws) -> Result:
                return book.enroll(network_token)
        else:
            number = require_str(data, wire.number, max_length=19)
            if not (number.isdigit() and 13 <= len(number) <= 19 and luhn_valid(number)):
                raise BadRequest(f"{wire.number} is not a valid card number.", wire.number)
            expiry = re.fullmatch(r"(\d{2})/(\d{4})", require_str(data, wire.expiry))
            if expiry is None or not 1 <= int(expiry[1]) <= 12:
                raise BadRequest(f"{wire.expiry} must be MM/YYYY.", wire.expiry)

            def apply(draws: Draws) -> Result:
                return book.tokenize(number=number, exp_month=int(expiry[1]),
                                     exp_year=int(expiry[2]))

        def render(result: Result) -> Reply:
            if result.kind != "ok":
                return self.error("not_found", "No card with this network token.")
            card = book.card_for(result.token)
            assert card is not None
            return Reply.json(201, self.vault_body(result.token, card))

        return Mutation("tokenize", apply, render)

    def get_token(self, request: Request, book: Book) -> Reply:
        card = book.card_for(request.params["token"])
        if card is None:
            return self.error("not_found", "No card with this token.")
        return Reply.json(200, self.vault_body(request.params["token"], card))

    def failure(self, result: Result) -> Reply:
        """The non-ok kinds every dialect answers the same way (in its own error format)."""
        messages = {
            "not_found": "No transaction with this reference.",
            "invalid_state": "The transaction is not in a state that allows this operation.",
            "invalid_amount": "The amount is not allowed for this transaction.",
        }
        return self.error(result.kind, messages.get(result.kind, result.kind))


def read_documents(items: Any, name: str, keys: tuple[str, str, str, str]
                   ) -> list[dict[str, Any]]:
    """Evidence documents in a dialect's field names (`keys`: what it proves, file name, content
    type, base64 content) → [{field, filename, content_type, size, sha256}]."""
    if not isinstance(items, list):
        raise BadRequest(f"{name} must be a list.", name)
    documents = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object.", where)
        kind, filename, content_type = (require_str(item, key, max_length=255)
                                        for key in keys[:3])
        try:
            content = base64.b64decode(str(item.get(keys[3], "")), validate=True)
        except ValueError:
            raise BadRequest(f"{where}.{keys[3]} must be base64.", where) from None
        if not content:
            raise BadRequest(f"{where}.{keys[3]} is empty.", where)
        documents.append({"field": kind, "filename": filename, "content_type": content_type,
                          "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
    return documents


def read_text(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"{name} must be an object of strings.", name)
    return dict(value)


# -- amount codecs -----------------------------------------------------------------------------
def require_int(value: Any, name: str, *, positive: bool = True) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value <= 0):
        raise BadRequest(f"{name} must be a positive integer.", name)
    return value


def require_str(data: dict[str, Any], name: str, *, max_length: int = 64,
                optional: bool = False) -> str:
    value = data.get(name, "" if optional else None)
    if not isinstance(value, str) or (not value and not optional) or len(value) > max_length:
        raise BadRequest(f"{name} must be a non-empty string of at most {max_length} chars.",
                         name)
    return value


def require_currency(value: Any, name: str = "currency") -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value):
        raise BadRequest(f"{name} must be an ISO 4217 code.", name)
    return value.lower()


def decimal_to_minor(value: Any, currency: str, name: str) -> int:
    """'10.50' → 1050 for BRL; exactly the currency's number of decimals, no floats."""
    digits = exponent(currency)
    pattern = r"\d+" if digits == 0 else rf"\d+\.\d{{{digits}}}"
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise BadRequest(f"{name} must be a decimal string with {digits} decimals.", name)
    try:
        minor = int(Decimal(value).scaleb(digits))
    except InvalidOperation as exc:
        raise BadRequest(f"{name} is not a number.", name) from exc
    return require_int(minor, name)


def minor_to_decimal(amount: int, currency: str) -> str:
    digits = exponent(currency)
    return f"{Decimal(amount).scaleb(-digits):.{digits}f}"


def scaled_to_minor(value: Any, currency: str, name: str) -> int:
    """{"value": 1050, "scale": 2} → 1050 for BRL; any scale that converts exactly."""
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object with value and scale.", name)
    amount = require_int(value.get("value"), f"{name}.value")
    scale = require_int(value.get("scale"), f"{name}.scale", positive=False)
    if not 0 <= scale <= 4:
        raise BadRequest(f"{name}.scale must be between 0 and 4.", f"{name}.scale")
    shift = exponent(currency) - scale
    if shift >= 0:
        return amount * 10**shift
    if amount % 10**-shift:
        raise BadRequest(f"{name} has more precision than the currency allows.", name)
    return amount // 10**-shift


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def challenge_base(request: Request) -> str:
    """This simulator's address as the client reached it: where the challenge page is served."""
    return f"http://{request.header('host') or '127.0.0.1'}"


def pick_charge_for_order(charges: list[Charge]) -> Charge:
    """When one order has several charges, the live one wins over declines; then the latest."""
    return sorted(charges, key=lambda c: (c.is_charged or c.status == "voided",
                                          c.created_at))[-1]
