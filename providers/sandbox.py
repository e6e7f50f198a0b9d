"""Sandbox provider driven by test tokens: no network, deterministic, idempotent on its key.

`pm_card_visa` (and any other `pm_card_*` brand) approves, `pm_card_declined` declines with
`card_declined`, `pm_card_insufficient_funds` with `insufficient_funds`, `pm_card_timeout`
charges but answers `unknown` (as if the connection dropped after sending). The sandbox keeps its
own books (`SandboxCharge`), so a status lookup can later tell what really happened and tests can
count charges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace

from django.db import IntegrityError, transaction

from providers.base import (
    AuthorizeRequest,
    CaptureRequest,
    Outcome,
    ProviderResult,
    ProviderStatus,
    RefundRequest,
    RetrieveRequest,
    VoidRequest,
)
from providers.errors import error
from providers.models import SandboxCharge, SandboxOperation

DECLINES = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_card_do_not_honor": "do_not_honor",
    "pm_card_expired": "expired_card",
}


def _declined(code: str, reference: str = "") -> ProviderResult:
    err = error(code)
    return ProviderResult(
        outcome=Outcome.DECLINED, provider_reference=reference, status=ProviderStatus.DECLINED,
        error_code=err.code, error_message=err.message, retryable=err.retryable,
    )


def _approved(charge: SandboxCharge, amount: int, reference: str = "") -> ProviderResult:
    ref = reference or charge.reference
    return ProviderResult(
        outcome=Outcome.APPROVED, provider_reference=ref, status=ProviderStatus(charge.status),
        amount=amount, exchange={"request": {"reference": charge.reference}, "response":
                                 {"reference": ref, "status": charge.status, "amount": amount}},
    )


def _from_json(data: dict) -> ProviderResult:
    return ProviderResult(**{**data, "outcome": Outcome(data["outcome"]),
                             "status": ProviderStatus(data["status"])})


class SandboxProvider:
    code = "sandbox"

    def _once(self, key: str, operation: str, build: Callable[[], ProviderResult]
              ) -> ProviderResult:
        """Run `build` once per idempotency key; later calls replay the first answer."""
        started = time.monotonic()
        existing = SandboxOperation.objects.filter(pk=key).first()
        if existing is not None:
            return _from_json(existing.result)
        try:
            with transaction.atomic():
                result = build()
                # A timeout is what the *caller* sees; the sandbox itself did charge, so it
                # remembers an approval and a retry with the same key learns the truth.
                stored = result
                if result.outcome == Outcome.UNKNOWN and result.provider_reference:
                    stored = replace(result, outcome=Outcome.APPROVED, error_code="",
                                     error_message="")
                SandboxOperation.objects.create(
                    idempotency_key=key, operation=operation,
                    result={**asdict(stored), "outcome": stored.outcome.value,
                            "status": stored.status.value},
                )
        except IntegrityError:  # a concurrent call with the same key won; replay its answer
            return _from_json(SandboxOperation.objects.get(pk=key).result)
        if result.outcome == Outcome.UNKNOWN:
            result = replace(result, provider_reference="", status=ProviderStatus.UNKNOWN)
        return replace(result, latency_ms=int((time.monotonic() - started) * 1000))

    def authorize(self, request: AuthorizeRequest) -> ProviderResult:
        def build() -> ProviderResult:
            if request.payment_method in DECLINES:
                return _declined(DECLINES[request.payment_method])
            charge = SandboxCharge.objects.create(
                reference=f"sbx_{request.idempotency_key[-24:]}",
                merchant_reference=request.merchant_reference,
                amount=request.amount, currency=request.currency,
                status=ProviderStatus.CAPTURED if request.capture else ProviderStatus.AUTHORIZED,
                captured=request.amount if request.capture else 0,
            )
            result = _approved(charge, request.amount)
            if request.payment_method == "pm_card_timeout":
                err = error("timeout")
                return replace(result, outcome=Outcome.UNKNOWN, error_code=err.code,
                               error_message=err.message)
            return result

        return self._once(request.idempotency_key, "authorize", build)

    def _locked_charge(self, reference: str) -> SandboxCharge | None:
        return SandboxCharge.objects.select_for_update().filter(pk=reference).first()

    def capture(self, request: CaptureRequest) -> ProviderResult:
        def build() -> ProviderResult:
            charge = self._locked_charge(request.provider_reference)
            if charge is None:
                return _declined("not_found", request.provider_reference)
            if charge.status != ProviderStatus.AUTHORIZED or request.amount > charge.amount:
                return _declined("invalid_request", charge.reference)
            charge.status, charge.captured = ProviderStatus.CAPTURED, request.amount
            charge.save(update_fields=["status", "captured"])
            return _approved(charge, request.amount)

        return self._once(request.idempotency_key, "capture", build)

    def void(self, request: VoidRequest) -> ProviderResult:
        def build() -> ProviderResult:
            charge = self._locked_charge(request.provider_reference)
            if charge is None:
                return _declined("not_found", request.provider_reference)
            if charge.status != ProviderStatus.AUTHORIZED:
                return _declined("invalid_request", charge.reference)
            charge.status = ProviderStatus.VOIDED
            charge.save(update_fields=["status"])
            return _approved(charge, charge.amount)

        return self._once(request.idempotency_key, "void", build)

    def refund(self, request: RefundRequest) -> ProviderResult:
        def build() -> ProviderResult:
            charge = self._locked_charge(request.provider_reference)
            if charge is None:
                return _declined("not_found", request.provider_reference)
            if charge.refunded + request.amount > charge.captured:
                return _declined("invalid_request", charge.reference)
            charge.refunded += request.amount
            if charge.refunded == charge.captured:
                charge.status = ProviderStatus.REFUNDED
            charge.save(update_fields=["refunded", "status"])
            return _approved(charge, request.amount, f"sbxr_{request.idempotency_key[-24:]}")

        return self._once(request.idempotency_key, "refund", build)

    def retrieve(self, request: RetrieveRequest) -> ProviderResult:
        charges = SandboxCharge.objects.all()
        if request.provider_reference:
            charge = charges.filter(pk=request.provider_reference).first()
        else:
            charge = charges.filter(merchant_reference=request.merchant_reference).first()
        if charge is None:
            return ProviderResult(outcome=Outcome.DECLINED, status=ProviderStatus.NOT_FOUND,
                                  error_code="not_found")
        return _approved(charge, charge.captured or charge.amount)
