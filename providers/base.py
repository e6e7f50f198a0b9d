"""The provider port: dataclass requests and results, and the Protocol every adapter implements.

Every call carries `idempotency_key`, derived from the attempt id: the provider must treat a
repeated key as the same operation, so a retried attempt can never become a second charge.
`Outcome.UNKNOWN` means "we sent it and do not know what happened" (timeout, 5xx after send,
connection reset): the caller must not fail over or re-send with a new key, only look it up.

Payouts and deposits (wallet movements) have their own port, `MovementProvider`: a payout or a
deposit is accepted `pending` and finishes later (`paid` / `confirmed` / `failed`), learned from a
status lookup or a webhook.

Disputes (chargebacks the cardholder's bank opened) are worked through the same port:
`dispute_submit_evidence` sends the merchant's evidence once (its idempotency key is the
evidence attempt's id) and `dispute_retrieve` answers where a dispute stands; the provider
decides, and says so by notice (`dispute.won` / `dispute.lost`) or in a lookup.

Every adapter also says what comes back from the provider unasked: its webhooks
(`verify_webhook`, `parse_webhook` → `InboundEvent`) and its daily settlement file
(`settlement_report` fetches it, `parse_settlement` reads it into `SettlementRow`s).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable


class Outcome(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    PENDING = "pending"
    UNKNOWN = "unknown"
    # The issuer wants the customer authenticated (3-D Secure): `action_url` is the challenge.
    # Nothing is charged until the challenge is passed; the answer follows by notice or lookup.
    ACTION_REQUIRED = "action_required"


class ProviderStatus(enum.StrEnum):
    """What a status lookup says the provider holds for a reference."""

    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    DECLINED = "declined"
    PENDING = "pending"
    ACTION_REQUIRED = "action_required"  # waiting for the customer's authentication challenge
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


class StoredCredential(enum.StrEnum):
    """How a stored card is used (the schemes' stored-credential framework): each adapter sends
    its provider's own flags for it."""

    NONE = "none"  # a one-off token, not stored with us
    CUSTOMER = "customer"  # the customer is present and uses a card stored with us (CIT)
    MERCHANT = "merchant"  # merchant-initiated, the customer absent (MIT, off_session)


@dataclass(frozen=True)
class AuthorizeRequest:
    idempotency_key: str
    amount: int
    currency: str
    payment_method: str  # a test alias (pm_card_visa) or this provider's own vault token
    capture: bool
    merchant_reference: str
    description: str = ""
    stored_credential: StoredCredential = StoredCredential.NONE
    # Where the provider sends the customer after an authentication challenge (ours, per attempt).
    return_url: str = ""


@dataclass(frozen=True)
class CaptureRequest:
    idempotency_key: str
    provider_reference: str
    amount: int
    currency: str
    # False: a partial capture that leaves the rest of the authorization open for more
    # (multicapture; only adapters with `multicapture = True` take it). True: the last one,
    # which releases whatever stays uncaptured.
    final: bool = True


@dataclass(frozen=True)
class IncrementRequest:
    """Raise an open authorization to `amount`, the new total (incremental authorization)."""

    idempotency_key: str
    provider_reference: str
    amount: int
    currency: str


@dataclass(frozen=True)
class VoidRequest:
    idempotency_key: str
    provider_reference: str


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str
    provider_reference: str
    amount: int
    currency: str


@dataclass(frozen=True)
class RetrieveRequest:
    provider_reference: str = ""
    merchant_reference: str = ""


@dataclass(frozen=True, kw_only=True)
class CallResult:
    """What every provider call answers besides its own fields (each result's `outcome`):
    the normalised error, whether another provider may be tried, the latency, and the redacted
    request/response kept for operators."""

    error_code: str = ""
    error_message: str = ""
    retryable: bool = False
    latency_ms: int = 0
    exchange: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRetrieveRequest:
    """What the provider's vault holds for one of its card tokens."""

    token: str


@dataclass(frozen=True)
class TokenEnrollRequest:
    """Store a card already saved at another acquirer in this provider's vault, from the
    scheme's card-on-file (network) token: this provider answers with its own token."""

    idempotency_key: str
    network_token: str


@dataclass(frozen=True)
class TokenResult(CallResult):
    """A vault's answer: the provider's token and what it says about the card (never the card
    number). `outcome` as for payments; DECLINED when the vault refuses or knows no such token."""

    outcome: Outcome
    token: str = ""
    network_token: str = ""
    brand: str = ""
    last4: str = ""
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True)
class ProviderResult(CallResult):
    """The normalised answer of any operation.

    `error_code` comes from the normalised table in `providers.errors`; `retryable` says whether
    another provider may be tried (only ever true when the provider cannot have charged).
    `exchange` is the redacted request/response kept on the attempt for operators.
    """

    outcome: Outcome
    provider_reference: str = ""
    status: ProviderStatus = ProviderStatus.UNKNOWN
    amount: int | None = None
    currency: str = ""  # lower-case ISO 4217 when the provider said; compared with ours
    # A lookup's running totals of the charge, when the provider reports them: what confirms a
    # refund or chargeback notice from a provider whose notices are only hints.
    amount_refunded: int | None = None
    amount_disputed: int | None = None
    # What the charge has captured so far (all its captures): how a lookup shows that a partial
    # capture, which leaves the charge `authorized`, happened.
    amount_captured: int | None = None
    # Our id as the provider holds it (its merchant order id), when a lookup says: a notice that
    # is only a hint is bound to this, never to the id the notice itself names.
    merchant_reference: str = ""
    # ACTION_REQUIRED: the provider's challenge page the customer must visit.
    action_url: str = ""


@dataclass(frozen=True)
class InboundEvent:
    """A provider webhook in normalised form. `type` is one of payment.authorized,
    payment.captured, payment.declined, payment.voided, refund.succeeded, dispute.opened,
    dispute.won, dispute.lost, payout.paid, payout.failed, deposit.confirmed, deposit.failed.
    `provider_reference` is the charge (or payout/deposit) reference; `amount` is the
    refund/dispute amount for those events, the captured amount for payment.captured, the
    payment amount otherwise. `status` is a ProviderStatus value for payment events and a
    MovementStatus value for the others."""

    provider: str
    event_id: str
    type: str
    occurred_at: datetime
    provider_reference: str = ""
    merchant_reference: str = ""
    amount: int | None = None
    currency: str = ""
    status: str = ""
    refund_reference: str = ""
    dispute_reference: str = ""
    error_code: str = ""
    # dispute.opened: when the provider needs the evidence by (its deadline, not ours).
    evidence_due_by: datetime | None = None
    payload: dict[str, Any] = field(default_factory=dict)


class WebhookPayloadError(ValueError):
    """A verified webhook whose body cannot be read as an event."""


class MalformedLine(ValueError):
    """A settlement line (or header) that cannot be trusted; kept, never matched."""


@dataclass(slots=True)
class SettlementRow:
    """A settlement-file line normalised across providers. `type` is "capture" or "refund";
    amounts are positive minor units of `currency` (the type gives the direction). `error`
    says why a line could not be read; such a line carries nothing else."""

    line_number: int
    raw: str
    type: str = ""
    provider_reference: str = ""
    refund_reference: str = ""
    merchant_reference: str = ""
    transaction_date: date | None = None
    currency: str = ""
    gross: int = 0
    fee: int = 0
    net: int = 0
    error: str = ""


class DisputeState(enum.StrEnum):
    """Where the provider says a dispute stands."""

    NEEDS_RESPONSE = "needs_response"  # waiting for the merchant's evidence
    UNDER_REVIEW = "under_review"  # evidence received, the card network is deciding
    WON = "won"
    LOST = "lost"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class EvidenceDocument:
    """One evidence file: `field` names what it proves (receipt, shipping_documentation, …)."""

    field: str
    filename: str
    content_type: str  # application/pdf, image/png or image/jpeg (checked by content)
    content: bytes


@dataclass(frozen=True)
class DisputeEvidenceRequest:
    idempotency_key: str
    dispute_reference: str  # the provider's case id
    provider_reference: str  # the disputed charge
    text: Mapping[str, str] = field(default_factory=dict)
    documents: tuple[EvidenceDocument, ...] = ()


@dataclass(frozen=True)
class DisputeRetrieveRequest:
    dispute_reference: str
    provider_reference: str = ""


@dataclass(frozen=True)
class DisputeResult(CallResult):
    """The normalised answer of a dispute call or lookup (`outcome` as for payments: UNKNOWN
    means sent and the answer lost; DECLINED means refused, e.g. evidence past its due date)."""

    outcome: Outcome
    dispute_reference: str = ""
    provider_reference: str = ""
    status: DisputeState = DisputeState.UNKNOWN
    amount: int | None = None
    currency: str = ""
    evidence_due_by: datetime | None = None


@runtime_checkable
class Provider(Protocol):
    code: str
    # False: a verified notice is trusted as it stands (signed by the provider). True: a notice
    # is only a hint (Cielo's real notification post is unsigned and names a PaymentId): what
    # moves money is the provider's own lookup, made when the notice is processed.
    notices_need_lookup: bool

    def authorize(self, request: AuthorizeRequest) -> ProviderResult: ...

    def capture(self, request: CaptureRequest) -> ProviderResult: ...

    def void(self, request: VoidRequest) -> ProviderResult: ...

    def refund(self, request: RefundRequest) -> ProviderResult: ...

    def retrieve(self, request: RetrieveRequest) -> ProviderResult: ...

    def dispute_submit_evidence(self, request: DisputeEvidenceRequest) -> DisputeResult: ...

    def dispute_retrieve(self, request: DisputeRetrieveRequest) -> DisputeResult: ...

    # -- optional features (see providers.calls.supports) ------------------------------------
    # multicapture: bool  -- True: captures with `final=False` may follow one another
    # def increment_authorization(self, request: IncrementRequest) -> ProviderResult
    #     (the answer's `amount` is the new authorized total)

    # -- the card vault (adapters without one leave these out: see providers.calls.supports) --
    # def token_retrieve(self, request: TokenRetrieveRequest) -> TokenResult
    # def token_enroll(self, request: TokenEnrollRequest) -> TokenResult

    # -- what the provider sends unasked ------------------------------------------------------
    def verify_webhook(self, *, headers: Mapping[str, str], body: bytes,
                       now: float | None = None, tolerance_seconds: int = 300) -> bool:
        """True only for a correctly signed notice inside the ±`tolerance_seconds` window;
        an adapter that receives no webhooks answers False."""
        ...

    def parse_webhook(self, body: bytes) -> InboundEvent:
        """The verified body as an event; WebhookPayloadError when it is not one."""
        ...

    def settlement_report(self, day: date) -> bytes:
        """The provider's settlement file for `day`, raw, in its own format."""
        ...

    def parse_settlement(self, lines: Iterable[str]) -> Iterator[SettlementRow]:
        """One row per data line of a settlement file; MalformedLine for a bad header."""
        ...


# -- wallet movements: payouts (money out to a merchant's bank) and deposits (money in) --------
class MovementStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"  # payout reached the bank account
    CONFIRMED = "confirmed"  # deposit received
    FAILED = "failed"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PayoutRequest:
    idempotency_key: str
    amount: int
    currency: str
    destination: str  # a bank-account token; never raw account numbers
    merchant_reference: str


@dataclass(frozen=True)
class DepositRequest:
    idempotency_key: str
    amount: int
    currency: str
    method: str  # e.g. "pix", "boleto"
    merchant_reference: str


@dataclass(frozen=True)
class MovementResult(CallResult):
    """The normalised answer of a payout or deposit call or lookup; `outcome` as for payments
    (PENDING: accepted, not finished; UNKNOWN: sent, answer lost)."""

    outcome: Outcome
    provider_reference: str = ""
    status: MovementStatus = MovementStatus.UNKNOWN
    amount: int | None = None
    currency: str = ""  # lower-case ISO 4217 when the provider said; compared with ours
    merchant_reference: str = ""  # our payout/deposit id as the provider holds it (lookups)


@runtime_checkable
class MovementProvider(Protocol):
    """Separate from `Provider` so an adapter without payouts still satisfies the payment port.
    Lookups take the provider's reference, which every adapter's create answer carries."""

    code: str

    def payout_create(self, request: PayoutRequest) -> MovementResult: ...

    def payout_retrieve(self, provider_reference: str) -> MovementResult: ...

    def deposit_create(self, request: DepositRequest) -> MovementResult: ...

    def deposit_retrieve(self, provider_reference: str) -> MovementResult: ...
