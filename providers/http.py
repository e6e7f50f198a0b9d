"""Shared machinery of the HTTP adapters: one httpx client per adapter, settings read lazily,
transport failures classified by whether the provider could have acted, redacted exchanges.

Each HTTP adapter implements the whole port (`providers.base`) in its own dialect: payments,
payouts and deposits, inbound webhooks and settlement files.
"""

from __future__ import annotations

import base64
import enum
import hmac
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from django.conf import settings

from providers import conf
from providers.base import (
    DepositRequest,
    DisputeEvidenceRequest,
    DisputeResult,
    DisputeRetrieveRequest,
    DisputeState,
    EvidenceDocument,
    MovementResult,
    MovementStatus,
    Outcome,
    PayoutRequest,
    ProviderResult,
    ProviderStatus,
    TokenEnrollRequest,
    TokenResult,
    TokenRetrieveRequest,
    WebhookPayloadError,
)
from providers.errors import error

# Headers worth keeping on an attempt; everything else (credentials, signatures) is dropped.
SAFE_HEADERS = frozenset({
    "content-type", "retry-after", "location", "requestid", "idempotency-key",
    "x-rede-idempotency-key", "x-simulator-replayed",
})
SECRET_FIELDS = frozenset({
    "authorization", "merchantkey", "merchant_key", "access_token", "refresh_token",
    "client_secret", "password", "secret", "signing_secret", "token", "cvv", "securitycode",
    "security_code", "cardnumber", "card_number", "number", "networktoken", "network_token",
})
REDACTED = "[redacted]"
MAX_TEXT_IN_EXCHANGE = 2000
# Evidence files travel base64 in these fields: an attempt keeps their size, never their bytes.
BULKY_FIELDS = frozenset({"content", "content_base64"})


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if str(k).lower() in SECRET_FIELDS else
                f"[{len(v)} base64 characters]" if str(k).lower() in BULKY_FIELDS
                and isinstance(v, str) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def segment(reference: str) -> str:
    """A provider's reference as one path segment. The reference came from the provider and is
    evidence, not a path: a `/`, `?`, `#` or `..` in it must not reach another endpoint."""
    return quote(reference, safe="")


class Delivery(enum.StrEnum):
    ANSWERED = "answered"
    NOT_SENT = "not_sent"  # refused / connect timeout / pool timeout: the provider saw nothing
    TIMED_OUT = "timed_out"  # sent, no answer within the read timeout
    LOST = "lost"  # sent, then the connection broke: the provider may have acted


@dataclass
class Sent:
    """One HTTP call as the adapter saw it."""

    delivery: Delivery
    latency_ms: int
    exchange: dict[str, Any]
    response: httpx.Response | None = None
    data: Any = None  # the parsed JSON body, None when absent or not JSON

    @property
    def status_code(self) -> int:
        return self.response.status_code if self.response is not None else 0

    def field(self, *path: str | int, default: Any = None) -> Any:
        value = self.data
        for key in path:
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                return default
        return value


@dataclass(frozen=True)
class VaultFields:
    """Where an acquirer's card vault lives and what its fields are called: `path` (POST to
    enrol a network token, GET path/<token> to read a card), the network token's field, the
    field of the token it issues, and the brand, masked number and "MM/YYYY" expiry fields."""

    path: str
    network: str
    issued: str
    brand: str
    masked: str
    expiry: str


class ProviderHttpError(RuntimeError):
    """A call whose answer is not a payment result (settlement files): raised, not returned."""


def fresh(timestamp: float, now: float | None, tolerance_seconds: int) -> bool:
    """The contract's ±300 s window on a webhook's signed timestamp."""
    return abs((time.time() if now is None else now) - timestamp) <= tolerance_seconds


def signature_matches(expected: str, candidates: list[str]) -> bool:
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


class HttpAdapter:
    """Base of the HTTP adapters: the call, the answers every provider gives alike (no answer,
    a refusal, a charge's status, a payout or deposit), and the payout/deposit calls themselves.
    Subclasses add auth headers and their wire format."""

    code: ClassVar[str] = ""
    idempotency_header: ClassVar[str] = ""
    notices_need_lookup: ClassVar[bool] = False
    # The provider's error code (as `error_key` reads it from a 4xx body) → normalised code.
    error_codes: ClassVar[Mapping[Any, str]] = {}
    # Payouts and deposits: each kind's collection path, the field naming the created one, and
    # the HTTP statuses its create and lookup answer with.
    movement_paths: ClassVar[Mapping[str, str]] = {}
    movement_ids: ClassVar[Mapping[str, str]] = {}
    movement_ok: ClassVar[tuple[int, ...]] = (200, 201)

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- configuration, read on every call so settings overrides apply at once --------------
    def config(self) -> Mapping[str, Any]:
        providers = getattr(settings, "PROVIDERS", None) or conf.PROVIDERS
        return providers[self.code]

    def timeout(self) -> httpx.Timeout:
        values = {**(getattr(settings, "PROVIDER_TIMEOUTS", None) or conf.PROVIDER_TIMEOUTS),
                  **self.config().get("timeouts", {})}
        return httpx.Timeout(connect=values["connect"], read=values["read"],
                             write=values["write"], pool=values["pool"])

    def client(self) -> httpx.Client:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = httpx.Client(
                        headers={"User-Agent": "Clearhouse/1.0"},
                        limits=httpx.Limits(max_connections=200,
                                            max_keepalive_connections=20),
                    )
        return self._client

    def auth_headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        raise NotImplementedError

    # -- the call ---------------------------------------------------------------------------
    def send(self, method: str, path: str, *, body: Any = None,
             params: Mapping[str, str] | None = None, idempotency_key: str = "",
             accept: str = "application/json") -> Sent:
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        url = httpx.URL(self.config()["base_url"].rstrip("/") + path, params=params)
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers[self.idempotency_header] = idempotency_key
        headers.update(self.auth_headers(method, url, content))
        exchange: dict[str, Any] = {"request": {
            "method": method, "url": str(url.copy_with(username=None, password=None)),
            "headers": {k: v for k, v in headers.items() if k.lower() in SAFE_HEADERS},
            "body": redact(body),
        }}
        started = time.monotonic()
        try:
            response = self.client().request(method, url, content=content, headers=headers,
                                              timeout=self.timeout())
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError) as exc:
            return self._failed(Delivery.NOT_SENT, exc, started, exchange)
        except httpx.TimeoutException as exc:
            return self._failed(Delivery.TIMED_OUT, exc, started, exchange)
        except httpx.TransportError as exc:
            return self._failed(Delivery.LOST, exc, started, exchange)
        latency_ms = int((time.monotonic() - started) * 1000)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        exchange["response"] = {
            "status": response.status_code,
            "headers": {k: v for k, v in response.headers.items() if k.lower() in SAFE_HEADERS},
            "body": redact(data) if data is not None
            else response.text[:MAX_TEXT_IN_EXCHANGE],
        }
        exchange["latency_ms"] = latency_ms
        return Sent(Delivery.ANSWERED, latency_ms, exchange, response, data)

    def _failed(self, delivery: Delivery, exc: Exception, started: float,
                exchange: dict[str, Any]) -> Sent:
        latency_ms = int((time.monotonic() - started) * 1000)
        exchange["response"] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                                "delivery": delivery.value}
        exchange["latency_ms"] = latency_ms
        return Sent(delivery, latency_ms, exchange)

    # -- building results ---------------------------------------------------------------------
    def result(self, sent: Sent, **fields: Any) -> ProviderResult:
        return ProviderResult(latency_ms=sent.latency_ms, exchange=sent.exchange, **fields)

    def approved(self, sent: Sent, status: ProviderStatus, reference: str,
                 amount: int | None = None) -> ProviderResult:
        return self.result(sent, outcome=Outcome.APPROVED, provider_reference=reference,
                           status=status, amount=amount)

    def declined(self, sent: Sent, code: str, *, reference: str = "",
                 status: ProviderStatus = ProviderStatus.DECLINED) -> ProviderResult:
        err = error(code)
        return self.result(sent, outcome=Outcome.DECLINED, provider_reference=reference,
                           status=status, error_code=err.code, error_message=err.message,
                           retryable=err.retryable)

    def unknown(self, sent: Sent, code: str, *, reference: str = "") -> ProviderResult:
        err = error(code)
        return self.result(sent, outcome=Outcome.UNKNOWN, provider_reference=reference,
                           status=ProviderStatus.UNKNOWN, error_code=err.code,
                           error_message=err.message, retryable=False)

    def unanswered(self, sent: Sent, *, mutation: bool = True) -> ProviderResult | None:
        """The result when the provider gave no usable answer; None when it did.

        Only what cannot have reached the provider's books is retryable: no connection, 429,
        503 (documented by all three providers as "not processed") and rejected credentials.
        A timeout, a reset after sending or any other 5xx is UNKNOWN, never retryable.
        A lookup (`mutation=False`) that gets no answer is simply UNKNOWN.
        """
        code = ""
        if sent.delivery == Delivery.NOT_SENT:
            code = "provider_unavailable"
        elif sent.delivery == Delivery.TIMED_OUT:
            return self.unknown(sent, "timeout")
        elif sent.delivery == Delivery.LOST:
            return self.unknown(sent, "outcome_unknown")
        elif sent.status_code in (429, 503):
            code = "provider_unavailable"
        elif sent.status_code >= 500:
            return self.unknown(sent, "outcome_unknown")
        elif sent.status_code in (401, 403):
            code = "provider_authentication_failed"
        if not code:
            return None
        return self.declined(sent, code) if mutation else self.unknown(sent, code)

    def error_key(self, sent: Sent) -> Any:
        """Where the provider puts its error code in a 4xx body (a key of `error_codes`)."""
        raise NotImplementedError

    def refusal_code(self, sent: Sent) -> str:
        """The normalised code of the provider's refusal; a bare 404 is not found."""
        fallback = "not_found" if sent.status_code == 404 else "invalid_request"
        return self.error_codes.get(self.error_key(sent), fallback)

    def failure(self, sent: Sent, reference: str = "", *, mutation: bool = True
                ) -> ProviderResult:
        """A call that did not succeed: no usable answer (`unanswered`) or the provider's
        refusal (`rejected`, with the code `refusal_code` reads)."""
        failed = self.unanswered(sent, mutation=mutation)
        if failed is not None:
            return failed
        return self.rejected(sent, self.refusal_code(sent), reference=reference)

    def charge_answer(self, sent: Sent, status: ProviderStatus, *, decline_code: str,
                      provider_reference: str, **fields: Any) -> ProviderResult:
        """A charge as the provider reports it: declined with `decline_code`, pending or unknown
        as it says, approved in every other status. A pending charge with a challenge page
        (`action_url`) waits for the customer's authentication."""
        if status == ProviderStatus.DECLINED:
            return self.declined(sent, decline_code, reference=provider_reference)
        if status == ProviderStatus.PENDING and fields.get("action_url"):
            status = ProviderStatus.ACTION_REQUIRED
        outcome = {ProviderStatus.PENDING: Outcome.PENDING,
                   ProviderStatus.ACTION_REQUIRED: Outcome.ACTION_REQUIRED,
                   ProviderStatus.UNKNOWN: Outcome.UNKNOWN}.get(status, Outcome.APPROVED)
        return self.result(sent, outcome=outcome, provider_reference=provider_reference,
                           status=status, **fields)

    def rejected(self, sent: Sent, code: str, *, reference: str = "") -> ProviderResult:
        """A 4xx carrying the provider's error (mapped to `code`). Any other answer we could
        not read (a 2xx with an odd body) may mean it happened: UNKNOWN."""
        if not 400 <= sent.status_code < 500:
            return self.unknown(sent, "outcome_unknown", reference=reference)
        status = ProviderStatus.NOT_FOUND if code == "not_found" else ProviderStatus.DECLINED
        return self.declined(sent, code, reference=reference, status=status)

    def movement(self, sent: Sent, **fields: Any) -> MovementResult:
        return MovementResult(latency_ms=sent.latency_ms, exchange=sent.exchange, **fields)

    def _as_movement(self, sent: Sent, result: ProviderResult) -> MovementResult:
        status = {ProviderStatus.NOT_FOUND: MovementStatus.NOT_FOUND,
                  ProviderStatus.DECLINED: MovementStatus.FAILED}.get(result.status,
                                                                      MovementStatus.UNKNOWN)
        return self.movement(sent, outcome=result.outcome, status=status,
                             error_code=result.error_code, error_message=result.error_message,
                             retryable=result.retryable)

    def movement_unanswered(self, sent: Sent, *, mutation: bool) -> MovementResult | None:
        result = self.unanswered(sent, mutation=mutation)
        return None if result is None else self._as_movement(sent, result)

    def movement_rejected(self, sent: Sent, code: str) -> MovementResult:
        return self._as_movement(sent, self.rejected(sent, code))

    # -- inbound webhooks ---------------------------------------------------------------------
    def verify_webhook(self, *, headers: Mapping[str, str], body: bytes,
                       now: float | None = None, tolerance_seconds: int = 300) -> bool:
        """True only for a notice signed with our webhook secret at a time inside the
        ±`tolerance_seconds` window; `webhook_signature` reads the provider's headers."""
        secret = self.config().get("webhook_secret", "")
        signed = self.webhook_signature({k.lower(): v for k, v in headers.items()}, body,
                                        secret) if secret else None
        if signed is None:
            return False
        moment, expected, given = signed
        return fresh(moment, now, tolerance_seconds) and signature_matches(expected, given)

    def webhook_signature(self, headers: Mapping[str, str], body: bytes, secret: str
                          ) -> tuple[float, str, list[str]] | None:
        """From a notice's (lower-cased) headers: its signed time in Unix seconds, the signature
        `secret` gives the body at that time, and the signatures the notice carries; None when
        the headers cannot be read."""
        raise NotImplementedError

    # -- the card vault (saved payment methods) -------------------------------------------------
    vault: ClassVar[VaultFields | None] = None

    def _as_token(self, result: ProviderResult) -> TokenResult:
        return TokenResult(outcome=result.outcome, error_code=result.error_code,
                           error_message=result.error_message, retryable=result.retryable,
                           latency_ms=result.latency_ms, exchange=result.exchange)

    def _vault_answer(self, sent: Sent, *, mutation: bool) -> TokenResult:
        vault = self.vault
        assert vault is not None
        failed = self.unanswered(sent, mutation=mutation)
        if failed is not None:
            return self._as_token(failed)
        token, network_token = sent.field(vault.issued), sent.field(vault.network)
        if sent.status_code in (200, 201) and isinstance(token, str) and token:
            masked, expiry = str(sent.field(vault.masked, default="")), re.fullmatch(
                r"(\d{2})/(\d{4})", str(sent.field(vault.expiry, default="")))
            return TokenResult(
                outcome=Outcome.APPROVED, token=token,
                network_token=network_token if isinstance(network_token, str) else "",
                brand=str(sent.field(vault.brand, default=""))[:32],
                last4=masked[-4:] if masked[-4:].isdigit() else "",
                exp_month=int(expiry[1]) if expiry else None,
                exp_year=int(expiry[2]) if expiry else None,
                latency_ms=sent.latency_ms, exchange=sent.exchange)
        code = "not_found" if sent.status_code == 404 else "invalid_request"
        return self._as_token(self.rejected(sent, code))

    def token_retrieve(self, request: TokenRetrieveRequest) -> TokenResult:
        """What this acquirer's vault holds for one of its tokens (brand, last four, expiry,
        the network token): proof that the token is real before we save it."""
        vault = self.vault
        assert vault is not None
        sent = self.send("GET", f"{vault.path}/{segment(request.token)}")
        return self._vault_answer(sent, mutation=False)

    def token_enroll(self, request: TokenEnrollRequest) -> TokenResult:
        """Store a card saved elsewhere in this acquirer's vault from its network token."""
        vault = self.vault
        assert vault is not None
        sent = self.send("POST", vault.path, body={vault.network: request.network_token},
                         idempotency_key=request.idempotency_key)
        return self._vault_answer(sent, mutation=True)

    def settlement_report(self, day: date) -> bytes:
        """The provider's settlement file for `day`, as raw bytes (each in its own format)."""
        sent = self.send("GET", f"/settlements/{day.isoformat()}.csv", accept="text/csv")
        if sent.delivery != Delivery.ANSWERED or sent.status_code != 200:
            raise ProviderHttpError(
                f"{self.code} settlement {day}: {sent.exchange.get('response')}")
        assert sent.response is not None
        return sent.response.content

    def movement_answer(self, sent: Sent, *, reference: str, status: MovementStatus,
                        amount: int | None, currency: str = "", merchant_reference: str = ""
                        ) -> MovementResult:
        outcome = {MovementStatus.PAID: Outcome.APPROVED,
                   MovementStatus.CONFIRMED: Outcome.APPROVED,
                   MovementStatus.FAILED: Outcome.DECLINED}.get(status, Outcome.PENDING)
        return self.movement(sent, outcome=outcome, provider_reference=reference,
                             status=status, amount=amount, currency=currency.lower(),
                             merchant_reference=merchant_reference)

    # -- payouts and deposits: the same calls for every provider, in its own wire format ----
    def movement_body(self, kind: str, request: PayoutRequest | DepositRequest
                      ) -> dict[str, Any]:
        """The create request's JSON for a payout or deposit (`kind`)."""
        raise NotImplementedError

    def movement_fields(self, sent: Sent) -> dict[str, Any]:
        """`status` and `amount` (and `currency`, `merchant_reference` where the provider
        says them) of a payout or deposit answer, for `movement_answer`."""
        raise NotImplementedError

    def _movement(self, sent: Sent, kind: str, *, mutation: bool) -> MovementResult:
        failed = self.movement_unanswered(sent, mutation=mutation)
        if failed is not None:
            return failed
        reference = sent.field(self.movement_ids[kind])
        if sent.status_code not in self.movement_ok or not isinstance(reference, str):
            return self.movement_rejected(sent, self.refusal_code(sent))
        return self.movement_answer(sent, reference=reference, **self.movement_fields(sent))

    def _movement_create(self, kind: str, request: PayoutRequest | DepositRequest
                         ) -> MovementResult:
        sent = self.send("POST", self.movement_paths[kind], body=self.movement_body(kind, request),
                         idempotency_key=request.idempotency_key)
        return self._movement(sent, kind, mutation=True)

    def _movement_retrieve(self, kind: str, provider_reference: str) -> MovementResult:
        sent = self.send("GET", f"{self.movement_paths[kind]}/{segment(provider_reference)}")
        return self._movement(sent, kind, mutation=False)

    def payout_create(self, request: PayoutRequest) -> MovementResult:
        return self._movement_create("payout", request)

    def payout_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement_retrieve("payout", provider_reference)

    def deposit_create(self, request: DepositRequest) -> MovementResult:
        return self._movement_create("deposit", request)

    def deposit_retrieve(self, provider_reference: str) -> MovementResult:
        return self._movement_retrieve("deposit", provider_reference)


    # -- disputes: the same two calls for every provider, in its own wire format ------------
    # The provider's dispute status (as `dispute_fields` reads it) → where the case stands.
    dispute_statuses: ClassVar[Mapping[str, DisputeState]] = {}

    # The case's path ("{ref}" for its id) and where its evidence goes below it.
    dispute_path: ClassVar[str] = ""
    dispute_evidence_suffix: ClassVar[str] = ""
    # The evidence body's keys: the object wrapping it ("" for none), its text and its
    # documents, and each document's (what it proves, file name, content type, base64 content).
    dispute_evidence_keys: ClassVar[tuple[str, str, str, tuple[str, str, str, str]]] = (
        "", "", "", ("", "", "", ""))

    def dispute_evidence_body(self, request: DisputeEvidenceRequest) -> dict[str, Any]:
        wrapper, text, documents, (kind, name, content_type, content) = (
            self.dispute_evidence_keys)
        evidence = {text: dict(request.text), documents: [
            {kind: doc.field, name: doc.filename, content_type: doc.content_type,
             content: encoded(doc)} for doc in request.documents]}
        return {wrapper: evidence} if wrapper else evidence

    def dispute_fields(self, sent: Sent) -> dict[str, Any]:
        """`dispute_reference`, `provider_reference` (the charge), `amount`, `currency`,
        `status` (the provider's word) and `evidence_due_by` of a case answer."""
        raise NotImplementedError

    def _dispute(self, sent: Sent, *, mutation: bool) -> DisputeResult:
        failed = self.unanswered(sent, mutation=mutation)
        if failed is None and sent.status_code != 200:
            failed = self.rejected(sent, self.refusal_code(sent))
        if failed is not None:
            return DisputeResult(
                outcome=failed.outcome, status=DisputeState.NOT_FOUND
                if failed.status == ProviderStatus.NOT_FOUND else DisputeState.UNKNOWN,
                error_code=failed.error_code, error_message=self.provider_message(sent)
                or failed.error_message, retryable=failed.retryable,
                latency_ms=sent.latency_ms, exchange=sent.exchange)
        fields = self.dispute_fields(sent)
        amount, due = fields.pop("amount"), fields.pop("evidence_due_by")
        return DisputeResult(
            outcome=Outcome.APPROVED, latency_ms=sent.latency_ms, exchange=sent.exchange,
            status=self.dispute_statuses.get(fields.pop("status"), DisputeState.UNKNOWN),
            amount=amount if isinstance(amount, int) else None,
            evidence_due_by=parse_time(due) if isinstance(due, str) else None,
            **{key: str(value or "") for key, value in fields.items()})

    def provider_message(self, sent: Sent) -> str:
        """The provider's own words about a refusal, when it gave any (shown to staff)."""
        return ""

    def _dispute_url_path(self, dispute_reference: str) -> str:
        """The case's path with its id as one percent-encoded segment: a chargeback id arrives
        in a notice (Cielo's are unsigned), so `../` or `?` in it must not reach another URL."""
        return self.dispute_path.format(ref=segment(dispute_reference))

    def dispute_submit_evidence(self, request: DisputeEvidenceRequest) -> DisputeResult:
        path = self._dispute_url_path(request.dispute_reference)
        sent = self.send("POST", path + self.dispute_evidence_suffix,
                         body=self.dispute_evidence_body(request),
                         idempotency_key=request.idempotency_key)
        return self._dispute(sent, mutation=True)

    def dispute_retrieve(self, request: DisputeRetrieveRequest) -> DisputeResult:
        return self._dispute(self.send("GET", self._dispute_url_path(request.dispute_reference)),
                             mutation=False)


def encoded(document: EvidenceDocument) -> str:
    return base64.b64encode(document.content).decode("ascii")


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookPayloadError("The webhook body is not JSON.") from exc
    if not isinstance(data, dict):
        raise WebhookPayloadError("The webhook body is not a JSON object.")
    return data


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise WebhookPayloadError("The webhook has no timestamp.")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise WebhookPayloadError(f"Bad webhook timestamp {value!r}.") from exc
