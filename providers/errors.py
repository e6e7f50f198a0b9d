"""The normalised decline and error codes every adapter maps its provider's codes onto."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    code: str
    message: str
    retryable: bool  # true only when another provider may be tried without risk of a charge


CODES = {
    c.code: c
    for c in [
        ErrorCode("card_declined", "The card was declined.", False),
        ErrorCode("insufficient_funds", "The card has insufficient funds.", False),
        ErrorCode("do_not_honor", "The issuer declined the payment (do not honor).", False),
        ErrorCode("expired_card", "The card has expired.", False),
        ErrorCode("fraud_suspected", "The payment was declined as suspected fraud.", False),
        ErrorCode("issuer_unavailable", "The issuer could not be reached; try again.", True),
        ErrorCode("processing_error", "The provider could not process the payment.", True),
        ErrorCode("provider_unavailable", "The provider refused the connection or is down.", True),
        ErrorCode("timeout", "The provider did not answer in time; the outcome is unknown.",
                  False),
        ErrorCode("invalid_request", "The provider rejected the request as malformed.", False),
        # The acquirer's vault has no such card token (never one of ours to send there).
        ErrorCode("invalid_payment_method",
                  "The provider does not know this payment method's token.", False),
        ErrorCode("not_found", "The provider has no record of this reference.", False),
        # The provider refused our credentials or signature before doing anything.
        ErrorCode("provider_authentication_failed",
                  "The provider rejected Clearhouse's credentials.", True),
        # Sent, and the answer was lost (connection reset, 5xx after send, unreadable body).
        ErrorCode("outcome_unknown",
                  "The provider's answer was lost; the outcome is unknown.", False),
        # 3-D Secure: the cardholder failed the issuer's challenge, or never finished it.
        ErrorCode("authentication_failed",
                  "The customer did not pass the card issuer's authentication.", False),
        ErrorCode("authentication_abandoned",
                  "The customer did not complete the card issuer's authentication in time.",
                  False),
        ErrorCode("invalid_state",
                  "The provider's record does not allow this operation in its state.", False),
        ErrorCode("idempotency_conflict",
                  "The provider saw this idempotency key with different parameters.", False),
    ]
}


def error(code: str) -> ErrorCode:
    return CODES.get(code, CODES["processing_error"])
