"""The provider port: dataclass requests and results, and the Protocol every adapter implements.

Every call carries `idempotency_key`, derived from the attempt id: the provider must treat a
repeated key as the same operation, so a retried attempt can never become a second charge.
`Outcome.UNKNOWN` means "we sent it and do not know what happened" (timeout, 5xx after send,
connection reset): the caller must not fail over or re-send with a new key, only look it up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class Outcome(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    PENDING = "pending"
    UNKNOWN = "unknown"


class ProviderStatus(enum.StrEnum):
    """What a status lookup says the provider holds for a reference."""

    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    DECLINED = "declined"
    PENDING = "pending"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AuthorizeRequest:
    idempotency_key: str
    amount: int
    currency: str
    payment_method: str
    capture: bool
    merchant_reference: str
    description: str = ""


@dataclass(frozen=True)
class CaptureRequest:
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


@dataclass(frozen=True)
class ProviderResult:
    """The normalised answer of any operation.

    `error_code` comes from the normalised table in `providers.errors`; `retryable` says whether
    another provider may be tried (only ever true when the provider cannot have charged).
    `exchange` is the redacted request/response kept on the attempt for operators.
    """

    outcome: Outcome
    provider_reference: str = ""
    status: ProviderStatus = ProviderStatus.UNKNOWN
    amount: int | None = None
    error_code: str = ""
    error_message: str = ""
    retryable: bool = False
    latency_ms: int = 0
    exchange: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    code: str

    def authorize(self, request: AuthorizeRequest) -> ProviderResult: ...

    def capture(self, request: CaptureRequest) -> ProviderResult: ...

    def void(self, request: VoidRequest) -> ProviderResult: ...

    def refund(self, request: RefundRequest) -> ProviderResult: ...

    def retrieve(self, request: RetrieveRequest) -> ProviderResult: ...
