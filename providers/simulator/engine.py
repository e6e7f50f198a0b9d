"""The simulator's books and dice: charges, refunds, payouts and deposits per provider, the
idempotency store, fault configuration and seeded draws. It knows nothing about wire formats."""

from __future__ import annotations

import enum
import hashlib
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

PROVIDERS = ("cielo", "rede", "getnet")

# Payment-method tokens that decline, with the simulator's neutral reason; each dialect turns
# the reason into its own wire code. Every other `pm_card_*` token approves.
DECLINE_TOKENS = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_card_do_not_honor": "do_not_honor",
    "pm_card_expired": "expired_card",
    "pm_card_fraud": "fraud_suspected",
    "pm_card_issuer_unavailable": "issuer_unavailable",
    "pm_card_processing_error": "processing_error",
}
# A token this acquirer's vault never issued (another acquirer's, or made up): declined.
FOREIGN_CARD = "invalid_token"
# The issuer wants the cardholder authenticated (3-D Secure): the charge waits, pending, for the
# challenge page (approve, fail or abandon). Its outcomes' neutral decline reasons:
CHALLENGE_TOKEN = "pm_card_threeDSecureRequired"  # noqa: S105 (a test alias, not a secret)
AUTHENTICATION_FAILED = "authentication_failed"
AUTHENTICATION_ABANDONED = "authentication_abandoned"


# The card numbers the vaults treat specially (the schemes' test cards); any other Luhn-valid
# number is an approving card. A vaulted card behaves as its alias at authorization.
TEST_CARDS = {
    "4000000000000002": "pm_card_declined",
    "4000000000009995": "pm_card_insufficient_funds",
    "4000000000000069": "pm_card_expired",
    "4100000000000019": "pm_card_fraud",
    "4000000000000119": "pm_card_processing_error",
    "4000000000000101": "pm_card_issuer_unavailable",
    "4000000000003220": CHALLENGE_TOKEN,
}


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


@dataclass
class SchemeCard:
    """A card as its scheme knows it: its card-on-file (network) token and what any acquirer
    may learn about it. The card number itself never leaves the vault that took it."""

    network_token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    alias: str  # the behaviour at authorization (a pm_card_* test alias)


class Scheme:
    """The card networks, shared by the three simulated acquirers: a card tokenized at one can
    be enrolled at another from its network token."""

    def __init__(self) -> None:
        self.cards: dict[str, SchemeCard] = {}
        self.by_number: dict[str, str] = {}  # card number hash → network token


class Fault(enum.StrEnum):
    NONE = "none"
    UNAVAILABLE = "unavailable"  # 503 before anything happens: nothing charged
    SERVER_ERROR = "server_error"  # 500 after the operation happened
    TIMEOUT = "timeout"  # operation happened, answer held past the client's read timeout
    DROP = "drop"  # operation happened, connection reset without an answer


FAULT_TOKENS = {
    "pm_card_unavailable": Fault.UNAVAILABLE,
    "pm_card_server_error": Fault.SERVER_ERROR,
    "pm_card_timeout": Fault.TIMEOUT,
    "pm_card_drop": Fault.DROP,
}

MUTATIONS = ("authorize", "capture", "void", "refund", "payout", "deposit", "dispute_evidence",
             "increment")


class ConfigError(ValueError):
    pass


@dataclass
class ProviderConfig:
    """Behaviour of one simulated provider; every field can be changed through the control API."""

    latency_ms: int = 0
    latency_jitter_ms: int = 0
    spike_rate: float = 0.0
    spike_ms: int = 0
    decline_rate: float = 0.0
    unavailable_rate: float = 0.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_ms: int = 30_000
    drop_rate: float = 0.0
    fault_operations: list[str] = field(default_factory=lambda: list(MUTATIONS))
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_events: list[str] | None = None  # None: every event type
    webhook_delay_ms: int = 0
    webhook_delay_jitter_ms: int = 0
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_duplicates: int = 1
    webhook_reorder_rate: float = 0.0
    webhook_reorder_window_ms: int = 2_000
    webhook_max_attempts: int = 3
    webhook_retry_ms: int = 500
    async_completion_ms: int | None = 200  # payouts and deposits; None: only via control API
    payout_fail_rate: float = 0.0
    # Disputes: the evidence deadline after opening, how long the network takes to decide once
    # evidence arrived (None: only via the control API), and the odds of winning when the
    # evidence does not decide it (`winning_evidence` / `losing_evidence` in the text do).
    dispute_response_days: int = 7
    dispute_decision_ms: int | None = 300
    dispute_win_rate: float = 0.5
    # How long a 3-D Secure challenge stays open; after it the charge is declined (abandoned).
    challenge_timeout_ms: int = 15 * 60 * 1000
    fee_bps: int = 0
    fee_fixed: int = 0
    credentials: dict[str, str] = field(default_factory=dict)

    def update(self, data: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        for name, value in data.items():
            current = getattr(self, name)
            if name.endswith("_rate") and not (
                    isinstance(value, int | float) and not isinstance(value, bool)
                    and 0 <= value <= 1):
                raise ConfigError(f"{name} must be a number between 0 and 1")
            if (name.endswith("_ms") or name in ("fee_bps", "fee_fixed", "webhook_duplicates",
                                                 "webhook_max_attempts",
                                                 "dispute_response_days")):
                nullable = name in ("async_completion_ms", "dispute_decision_ms")
                if not ((nullable and value is None)
                        or (isinstance(value, int) and not isinstance(value, bool)
                            and value >= 0)):
                    raise ConfigError(f"{name} must be a non-negative integer")
            if name == "fault_operations" and not (
                    isinstance(value, list) and set(value) <= set(MUTATIONS)):
                raise ConfigError(f"fault_operations must be a subset of {list(MUTATIONS)}")
            if name == "credentials":
                if not isinstance(value, dict):
                    raise ConfigError("credentials must be an object")
                value = {**current, **{str(k): str(v) for k, v in value.items()}}
            if name in ("webhook_url", "webhook_secret") and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            if name == "webhook_url" and value and not value.startswith(("http://", "https://")):
                raise ConfigError("webhook_url must be an http(s) URL")
            if name == "webhook_events" and not (
                    value is None or (isinstance(value, list)
                                      and all(isinstance(v, str) for v in value))):
                raise ConfigError("webhook_events must be null or a list of event types")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Development credentials and fees. Clearhouse's `providers/conf.py` has the same dev defaults
# on its side (a real provider and its client never share code, so neither do these two).
DEFAULTS: dict[str, dict[str, Any]] = {
    "cielo": {
        "fee_bps": 239,
        "credentials": {"merchant_id": "9d2d8b1e-5c8f-4f3e-9a57-000000c1e10a",
                        "merchant_key": "dev-cielo-merchant-key"},
        "webhook_secret": "whsec_dev_cielo",
    },
    "rede": {
        "fee_bps": 199, "fee_fixed": 10,
        "credentials": {"pv": "10000001", "token": "dev-rede-token"},
        "webhook_secret": "whsec_dev_rede",
    },
    "getnet": {
        "fee_bps": 250,
        "credentials": {"client_id": "dev-getnet-client",
                        "client_secret": "dev-getnet-client-secret",
                        "seller_id": "6eb2412c-165a-41cd-b1d9-76c575d70a28",
                        "signing_secret": "dev-getnet-signing-secret"},
        "webhook_secret": "whsec_dev_getnet",
    },
}


def default_config(provider: str) -> ProviderConfig:
    config = ProviderConfig()
    config.update(DEFAULTS[provider])
    return config


@dataclass
class Draws:
    """The dice for one request, thrown in a fixed order so a seeded run replays exactly."""

    latency_ms: int
    fault: Fault
    decline: bool

    @classmethod
    def throw(cls, rng: random.Random, config: ProviderConfig, operation: str,
              payment_method: str) -> Draws:
        jitter, spike, unavailable, decline, server_error, timeout, drop = (
            rng.random() for _ in range(7))
        latency = config.latency_ms + int(jitter * config.latency_jitter_ms)
        if spike < config.spike_rate:
            latency += config.spike_ms
        fault = Fault.NONE
        if operation in config.fault_operations:
            if unavailable < config.unavailable_rate:
                fault = Fault.UNAVAILABLE
            elif server_error < config.server_error_rate:
                fault = Fault.SERVER_ERROR
            elif timeout < config.timeout_rate:
                fault = Fault.TIMEOUT
            elif drop < config.drop_rate:
                fault = Fault.DROP
        if operation == "authorize" and payment_method in FAULT_TOKENS:
            fault = FAULT_TOKENS[payment_method]
        return cls(latency_ms=latency, fault=fault,
                   decline=operation == "authorize" and decline < config.decline_rate)


# -- the books -------------------------------------------------------------------------------
@dataclass
class RefundRecord:
    reference: str
    amount: int
    created_at: datetime


@dataclass
class Charge:
    provider: str
    reference: str
    order_id: str
    amount: int
    currency: str
    payment_method: str
    status: str  # pending_authentication | authorized | captured | voided | refunded | declined
    created_at: datetime
    idempotency_key: str
    proof_of_sale: str  # NSU: the acquirer's short sequence number, printed on settlement rows
    authorization_code: str = ""
    decline_reason: str = ""
    captured: int = 0
    refunded: int = 0
    captured_at: datetime | None = None
    disputed: int = 0
    refunds: list[RefundRecord] = field(default_factory=list)
    stored_credential: str = ""  # the merchant's stored-credential flag, as sent on the wire
    # 3-D Secure: the challenge page, where it sends the customer back, whether the approved
    # charge is captured at once, and when an unfinished challenge counts as abandoned.
    challenge_url: str = ""
    return_url: str = ""
    capture_requested: bool = False
    challenge_expires_at: datetime | None = None
    voids: int = 0  # void requests this charge received (a replay under its key is not one)

    @property
    def is_charged(self) -> bool:
        """Did money move (or is it held) on the card? Declines and voids leave nothing."""
        return self.status in ("authorized", "captured", "refunded")

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "captured_at", "challenge_expires_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["refunds"] = [{"reference": r.reference, "amount": r.amount,
                            "created_at": r.created_at.isoformat()} for r in self.refunds]
        data["is_charged"] = self.is_charged
        return data


@dataclass
class Movement:
    """A payout (money out to the merchant's bank) or a deposit (money in from a payer)."""

    provider: str
    kind: str  # payout | deposit
    reference: str
    order_id: str
    amount: int
    currency: str
    target: str  # payout destination or deposit method
    status: str  # pending | in_transit | paid | failed (payout); pending | confirmed | failed
    created_at: datetime
    updated_at: datetime
    failure_reason: str = ""

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data


@dataclass
class DisputeCase:
    """A chargeback the cardholder's bank opened on a charge, and where it stands:
    needs_response → under_review (evidence received) → won | lost; lost also when the
    deadline passes without evidence."""

    provider: str
    reference: str
    charge_reference: str
    order_id: str
    amount: int
    currency: str
    reason: str
    status: str
    opened_at: datetime
    evidence_due_by: datetime
    evidence: dict[str, str] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)  # field, name, type, size, sha
    submitted_at: datetime | None = None
    decided_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in ("needs_response", "under_review")

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("opened_at", "evidence_due_by", "submitted_at", "decided_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@dataclass
class SimEvent:
    """Something a provider tells its merchant through a webhook, before any wire format."""

    id: str
    provider: str
    type: str  # payment.authorized|captured|declined|voided, refund.succeeded, dispute.opened,
    #            dispute.won|lost, payout.paid|failed, deposit.confirmed
    occurred_at: datetime
    charge: dict[str, Any] | None = None
    refund: dict[str, Any] | None = None
    movement: Movement | None = None  # a copy, frozen at the time of the event
    dispute: dict[str, Any] | None = None


@dataclass
class Result:
    """The neutral answer of an operation; the dialect renders it in its own wire format."""

    kind: str  # ok | declined | not_found | invalid_state | invalid_amount
    charge: Charge | None = None
    refund: RefundRecord | None = None
    movement: Movement | None = None
    dispute: DisputeCase | None = None
    reason: str = ""
    events: list[SimEvent] = field(default_factory=list)
    token: str = ""  # the vault's token (tokenize, enroll)


class IdempotencyStore:
    """First answer per key, replayed byte for byte; a concurrent duplicate waits for it."""

    NEW, REPLAY, MISMATCH = "new", "replay", "mismatch"

    @dataclass
    class _Entry:
        fingerprint: str
        done: threading.Event
        reply: Any = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, IdempotencyStore._Entry] = {}

    def begin(self, key: str, fingerprint: str, stop: threading.Event) -> tuple[str, Any]:
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    self._entries[key] = self._Entry(fingerprint, threading.Event())
                    return self.NEW, None
            if entry.fingerprint != fingerprint:
                return self.MISMATCH, None
            while not entry.done.wait(0.05):
                if stop.is_set():
                    return self.MISMATCH, None
            if entry.reply is not None:
                return self.REPLAY, entry.reply
            # The first request was refused before acting (503): this one may act instead.

    def complete(self, key: str, reply: Any) -> None:
        with self._lock:
            entry = self._entries[key]
            entry.reply = reply
        entry.done.set()

    def abort(self, key: str) -> None:
        with self._lock:
            entry = self._entries.pop(key)
        entry.done.set()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    # Saved with the books (a restart keeps answering every key as before): finished entries
    # only; one still running when the state was written never got its answer out.
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {key: (entry.fingerprint, entry.reply)
                    for key, entry in self._entries.items() if entry.reply is not None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._entries = {}
        for key, (stored_fingerprint, reply) in state.items():
            done = threading.Event()
            done.set()
            self._entries[key] = self._Entry(stored_fingerprint, done, reply)


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


class Clock:
    """Wall-clock UTC unless frozen or shifted through the control API (for settlement days)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen_at: datetime | None = None

    def now(self) -> datetime:
        if self.frozen_at is not None:
            return self.frozen_at
        return datetime.now(UTC) + self.offset


class Book:
    """Everything one simulated provider knows. Callers hold `Simulator.lock` while mutating."""

    def __init__(self, provider: str, seed: str, clock: Clock, scheme: Scheme) -> None:
        self.provider = provider
        self.clock = clock
        self.scheme = scheme
        self.vault: dict[str, str] = {}  # this acquirer's card token → network token
        self.config = default_config(provider)
        self.fault_rng = random.Random(f"{seed}:{provider}:faults")
        self.id_rng = random.Random(f"{seed}:{provider}:ids")
        self.webhook_rng = random.Random(f"{seed}:{provider}:webhooks")
        self.idempotency = IdempotencyStore()
        self.charges: dict[str, Charge] = {}
        self.movements: dict[str, Movement] = {}
        self.disputes: dict[str, DisputeCase] = {}
        self.pending_events: list[SimEvent] = []  # made while answering a read; sent after it
        self.tokens: dict[str, float] = {}  # bearer tokens issued (Getnet) → monotonic expiry

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Books saved before disputes existed load with none."""
        self.__dict__.update({"disputes": {}, "pending_events": [], **state})

    # -- identifiers ---------------------------------------------------------------------------
    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    def new_digits(self, length: int) -> str:
        return "".join(self.id_rng.choice("0123456789") for _ in range(length))

    def event(self, type: str, **objects: Any) -> SimEvent:
        return SimEvent(id=self.new_uuid(), provider=self.provider, type=type,
                        occurred_at=self.clock.now(), **objects)

    # -- lookups ---------------------------------------------------------------------------------
    def charge(self, reference: str) -> Charge | None:
        """A charge as it stands now: a challenge left open past its time is declined
        (abandoned), its notice waiting in `pending_events` for the server to send."""
        charge = self.charges.get(reference)
        if (charge is not None and charge.status == "pending_authentication"
                and charge.challenge_expires_at is not None
                and self.clock.now() > charge.challenge_expires_at):
            self.pending_events.extend(self._authenticated(charge, AUTHENTICATION_ABANDONED))
        return charge

    def charges_for_order(self, order_id: str) -> list[Charge]:
        found = [self.charge(c.reference) for c in self.charges.values() if c.order_id == order_id]
        return sorted((c for c in found if c is not None), key=lambda c: c.created_at)

    def movement(self, kind: str, reference: str) -> Movement | None:
        found = self.movements.get(reference)
        return found if found is not None and found.kind == kind else None

    # -- the vault -----------------------------------------------------------------------------
    def card_for(self, token: str) -> SchemeCard | None:
        network_token = self.vault.get(token)
        return None if network_token is None else self.scheme.cards[network_token]

    def alias(self, payment_method: str) -> str:
        """How a payment method behaves here: a test alias as itself, a token of this vault as
        its card, anything else as a token this acquirer does not know."""
        if payment_method.startswith("pm_card_"):
            return payment_method
        card = self.card_for(payment_method)
        return card.alias if card is not None else FOREIGN_CARD

    def tokenize(self, *, number: str, exp_month: int, exp_year: int) -> Result:
        """The merchant's front-end hands a card to this acquirer's vault: one token per card
        (the same card again gets the same token)."""
        digest = hashlib.sha256(number.encode()).hexdigest()
        network_token = self.scheme.by_number.get(digest)
        if network_token is None:
            network_token = f"ntk_{self.new_uuid().replace('-', '')}"
            brand = {"4": "visa", "5": "mastercard", "3": "amex"}.get(number[0], "unknown")
            self.scheme.cards[network_token] = SchemeCard(
                network_token=network_token, brand=brand, last4=number[-4:],
                exp_month=exp_month, exp_year=exp_year,
                alias=TEST_CARDS.get(number, f"pm_card_{brand}"))
            self.scheme.by_number[digest] = network_token
        return self.enroll(network_token)

    def enroll(self, network_token: str) -> Result:
        """Store a card the scheme knows in this vault (from its network token)."""
        if network_token not in self.scheme.cards:
            return Result("not_found")
        token = next((t for t, n in self.vault.items() if n == network_token), None)
        if token is None:
            token = self.new_uuid()
            self.vault[token] = network_token
        return Result("ok", token=token)

    # -- operations ------------------------------------------------------------------------------
    def authorize(self, *, reference: str, order_id: str, amount: int, currency: str,
                  payment_method: str, capture: bool, idempotency_key: str,
                  draws: Draws, stored_credential: str = "", return_url: str = "",
                  challenge_base: str = "") -> Result:
        now = self.clock.now()
        behaviour = self.alias(payment_method)
        reason = DECLINE_TOKENS.get(behaviour, "")
        if behaviour == FOREIGN_CARD:
            reason = FOREIGN_CARD
        if not reason and draws.decline:
            reason = "card_declined"
        charge = Charge(
            provider=self.provider, reference=reference, order_id=order_id, amount=amount,
            currency=currency.lower(), payment_method=payment_method,
            status="declined" if reason else ("captured" if capture else "authorized"),
            created_at=now, idempotency_key=idempotency_key,
            proof_of_sale=self.new_digits(6), decline_reason=reason,
            authorization_code="" if reason else self.new_digits(6),
            stored_credential=stored_credential,
        )
        if behaviour == CHALLENGE_TOKEN and not reason:
            # Nothing is authorized until the cardholder passes the issuer's challenge.
            charge.status, charge.authorization_code = "pending_authentication", ""
            charge.capture_requested, charge.return_url = capture, return_url
            charge.challenge_url = f"{challenge_base}/_challenge/{self.provider}/{reference}"
            charge.challenge_expires_at = now + timedelta(
                milliseconds=self.config.challenge_timeout_ms)
            self.charges[reference] = charge
            return Result("ok", charge=charge)
        if capture and not reason:
            charge.captured, charge.captured_at = amount, now
        self.charges[reference] = charge
        if reason:
            return Result("declined", charge=charge, reason=reason,
                          events=[self.event("payment.declined", charge=charge.snapshot())])
        kind = "payment.captured" if capture else "payment.authorized"
        return Result("ok", charge=charge, events=[self.event(kind, charge=charge.snapshot())])

    def challenge_complete(self, reference: str, *, approved: bool) -> Result:
        """The cardholder finished the challenge page: approved authorizes (and captures, when
        the merchant asked for it), failed declines. Once only; a late or repeated answer is
        `invalid_state`."""
        charge = self.charge(reference)
        if charge is None:
            return Result("not_found")
        if charge.status != "pending_authentication":
            return Result("invalid_state", charge=charge)
        return Result("ok", charge=charge, events=self._authenticated(
            charge, "" if approved else AUTHENTICATION_FAILED))

    def _authenticated(self, charge: Charge, reason: str) -> list[SimEvent]:
        """End a pending challenge: declined with `reason`, or (no reason) authorized and
        captured as the merchant asked; the notice of the outcome."""
        now = self.clock.now()
        if reason:
            charge.status, charge.decline_reason = "declined", reason
            return [self.event("payment.declined", charge=charge.snapshot())]
        charge.authorization_code = self.new_digits(6)
        charge.status = "captured" if charge.capture_requested else "authorized"
        if charge.capture_requested:
            charge.captured, charge.captured_at = charge.amount, now
        return [self.event(f"payment.{charge.status}", charge=charge.snapshot())]

    def capture(self, reference: str, amount: int | None) -> Result:
        charge = self.charges.get(reference)
        if charge is None:
            return Result("not_found")
        amount = charge.amount if amount is None else amount
        if charge.status != "authorized":
            return Result("invalid_state", charge=charge)
        if not 0 < amount <= charge.amount:
            return Result("invalid_amount", charge=charge)
        charge.status, charge.captured, charge.captured_at = "captured", amount, self.clock.now()
        return Result("ok", charge=charge,
                      events=[self.event("payment.captured", charge=charge.snapshot())])

    def increment(self, reference: str, amount: int | None) -> Result:
        """Raise an authorization not yet captured to `amount`, its new total (the dialects that
        route it: incremental authorization)."""
        charge = self.charges.get(reference)
        if charge is None:
            return Result("not_found")
        if charge.status != "authorized" or charge.captured:
            return Result("invalid_state", charge=charge)
        if amount is None or amount <= charge.amount:
            return Result("invalid_amount", charge=charge)
        charge.amount = amount
        return Result("ok", charge=charge)

    def void(self, reference: str) -> Result:
        """Release an authorization, or end a 3-D Secure challenge still open (the merchant
        gave up waiting): nothing was charged, and the cardholder can no longer complete it."""
        charge = self.charge(reference)  # a challenge past its time reads declined
        if charge is None:
            return Result("not_found")
        charge.voids += 1
        if charge.status not in ("authorized", "pending_authentication"):
            return Result("invalid_state", charge=charge)
        charge.status = "voided"
        return Result("ok", charge=charge,
                      events=[self.event("payment.voided", charge=charge.snapshot())])

    def refund(self, reference: str, amount: int | None, refund_reference: str) -> Result:
        charge = self.charges.get(reference)
        if charge is None:
            return Result("not_found")
        if charge.status != "captured":
            return Result("invalid_state", charge=charge)
        amount = charge.captured - charge.refunded if amount is None else amount
        if not 0 < amount <= charge.captured - charge.refunded:
            return Result("invalid_amount", charge=charge)
        record = RefundRecord(refund_reference, amount, self.clock.now())
        charge.refunds.append(record)
        charge.refunded += amount
        if charge.refunded == charge.captured:
            charge.status = "refunded"
        snapshot = {"reference": record.reference, "amount": amount,
                    "created_at": record.created_at.isoformat()}
        return Result("ok", charge=charge, refund=record, events=[
            self.event("refund.succeeded", charge=charge.snapshot(), refund=snapshot)])

    def dispute(self, reference: str, amount: int | None, reason: str) -> Result:
        charge = self.charges.get(reference)
        if charge is None:
            return Result("not_found")
        if charge.captured == 0:
            return Result("invalid_state", charge=charge)
        amount = charge.captured if amount is None else amount
        if not 0 < amount <= charge.captured - charge.disputed:
            return Result("invalid_amount", charge=charge)
        charge.disputed += amount
        now = self.clock.now()
        case = DisputeCase(
            provider=self.provider, reference=self.new_uuid(), charge_reference=charge.reference,
            order_id=charge.order_id, amount=amount, currency=charge.currency, reason=reason,
            status="needs_response", opened_at=now,
            evidence_due_by=now + timedelta(days=self.config.dispute_response_days))
        self.disputes[case.reference] = case
        return Result("ok", charge=charge, dispute=case, events=[
            self.event("dispute.opened", charge=charge.snapshot(),
                       dispute=self._dispute_notice(case))])

    @staticmethod
    def _dispute_notice(case: DisputeCase) -> dict[str, Any]:
        return {"reference": case.reference, "amount": case.amount, "reason": case.reason,
                "status": case.status, "opened_at": case.opened_at.isoformat(),
                "evidence_due_by": case.evidence_due_by.isoformat()}

    def dispute_case(self, reference: str) -> DisputeCase | None:
        """A case as it stands now: one still waiting for evidence past its deadline is lost
        (the network decides against a merchant who did not answer); its event waits in
        `pending_events` for the server to send."""
        case = self.disputes.get(reference)
        if (case is not None and case.status == "needs_response"
                and self.clock.now() > case.evidence_due_by):
            self.pending_events.extend(self.dispute_decide(case, won=False).events)
        return case

    def dispute_submit(self, reference: str, evidence: dict[str, str],
                       documents: list[dict[str, Any]]) -> Result:
        """The merchant's evidence, once, before the deadline: the case goes under review."""
        case = self.dispute_case(reference)
        if case is None:
            return Result("not_found")
        charge = self.charges[case.charge_reference]
        if case.status != "needs_response":
            reason = ("already_submitted" if case.submitted_at is not None else
                      "past_due" if case.decided_at and case.decided_at > case.evidence_due_by
                      else "closed")
            return Result("invalid_state", charge=charge, dispute=case, reason=reason)
        case.status, case.submitted_at = "under_review", self.clock.now()
        case.evidence, case.documents = dict(evidence), list(documents)
        return Result("ok", charge=charge, dispute=case)

    def dispute_decide(self, case: DisputeCase, won: bool | None = None) -> Result:
        """The network's decision (by timer, deadline or control API), once. Unless told, the
        evidence decides (`winning_evidence` / `losing_evidence`), else a seeded draw. Won gives
        the held amount back to the merchant: the charge's disputed total drops."""
        charge = self.charges[case.charge_reference]
        if not case.is_open:
            return Result("invalid_state", charge=charge, dispute=case)
        if won is None:
            text = " ".join(case.evidence.values())
            won = ("winning_evidence" in text or (
                "losing_evidence" not in text
                and self.webhook_rng.random() < self.config.dispute_win_rate))
        case.status, case.decided_at = ("won" if won else "lost"), self.clock.now()
        if won:
            charge.disputed -= case.amount
        return Result("ok", charge=charge, dispute=case, events=[
            self.event(f"dispute.{case.status}", charge=charge.snapshot(),
                       dispute=self._dispute_notice(case))])

    def movement_create(self, *, kind: str, reference: str, order_id: str, amount: int,
                        currency: str, target: str) -> Result:
        now = self.clock.now()
        movement = Movement(provider=self.provider, kind=kind, reference=reference,
                            order_id=order_id, amount=amount, currency=currency.lower(),
                            target=target, status="pending", created_at=now, updated_at=now)
        self.movements[reference] = movement
        return Result("ok", movement=movement)

    def movement_complete(self, movement: Movement, *, succeed: bool | None = None) -> Result:
        """Finish a pending payout or deposit (by timer or control API); once only."""
        if movement.status not in ("pending", "in_transit"):
            return Result("invalid_state", movement=movement)
        if succeed is None:
            succeed = not ("fail" in movement.target or (
                movement.kind == "payout"
                and self.webhook_rng.random() < self.config.payout_fail_rate))
        movement.updated_at = self.clock.now()
        if movement.kind == "payout":
            movement.status = "paid" if succeed else "failed"
            type = "payout.paid" if succeed else "payout.failed"
        else:
            movement.status = "confirmed" if succeed else "failed"
            type = "deposit.confirmed" if succeed else "deposit.failed"
        if not succeed:
            movement.failure_reason = ("account_closed" if movement.kind == "payout"
                                       else "payer_rejected")
        return Result("ok", movement=movement,
                      events=[self.event(type, movement=replace(movement))])

    # -- settlement --------------------------------------------------------------------------
    def settlement_rows(self, day: date) -> list[dict[str, Any]]:
        """That day's captures (with fees) and refunds, in time order."""
        rows: list[dict[str, Any]] = []
        for charge in self.charges.values():
            if charge.captured_at is not None and charge.captured_at.date() == day:
                fee = round_half_up(charge.captured * self.config.fee_bps, 10_000) + (
                    self.config.fee_fixed)
                rows.append({"type": "capture", "at": charge.captured_at, "charge": charge,
                             "reference": charge.reference, "gross": charge.captured,
                             "fee": fee})
            for refund in charge.refunds:
                if refund.created_at.date() == day:
                    rows.append({"type": "refund", "at": refund.created_at, "charge": charge,
                                 "reference": refund.reference, "gross": -refund.amount,
                                 "fee": 0})
        # A frozen clock gives a sale and its refund one timestamp; the sale still comes first.
        return sorted(rows, key=lambda row: (row["at"], row["type"] != "capture",
                                             row["reference"]))


def round_half_up(numerator: int, denominator: int) -> int:
    return (numerator * 2 + denominator) // (denominator * 2)


def double_charged(books: dict[str, Book]) -> list[str]:
    """Merchant order ids with more than one live charge at the same provider."""
    seen: dict[tuple[str, str], int] = {}
    for book in books.values():
        for charge in book.charges.values():
            if charge.is_charged or charge.status == "voided":
                key = (book.provider, charge.order_id)
                seen[key] = seen.get(key, 0) + 1
    return sorted(f"{provider}:{order}" for (provider, order), n in seen.items() if n > 1)


Apply = Callable[[Draws], Result]
