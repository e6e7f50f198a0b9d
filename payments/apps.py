"""Django app config for `payments`: registers the applier of inbound provider events about
payments, refunds and disputes with the inbox (`webhooks.inbound`)."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from core.crypto import at_rest_register
        from payments import checks  # noqa: F401 - registers the evidence storage checks
        from payments.inbound import provider_event_apply
        from payments.rotation import evidence_files_reencrypt, network_tokens_reencrypt
        from webhooks.inbound import register_event_applier

        register_event_applier(("payment", "refund", "dispute"), provider_event_apply)
        at_rest_register("saved card network token(s)", network_tokens_reencrypt)
        at_rest_register("dispute evidence file(s)", evidence_files_reencrypt)
        _register_event_types()
        _register_gauges()


def _register_event_types() -> None:
    """The events payments, refunds and disputes emit (core.events: the documented catalogue)."""
    from core.events import event_types_register
    from payments.serializers import (
        CustomerOutput,
        DisputeOutput,
        PaymentMethodOutput,
        PaymentOutput,
        RefundOutput,
    )

    event_types_register(object="payment", serializer=PaymentOutput, types={
        "payment.created": "A payment was created (not yet confirmed).",
        "payment.processing": "The payment was confirmed; the provider is being asked to "
                              "authorize it (status `authorization_requested`).",
        "payment.requires_action": "The provider wants the customer authenticated (3-D "
                                   "Secure): send the customer to `next_action."
                                   "redirect_to_url.url`; the outcome follows as an event.",
        "payment.authorized": "The provider authorized the payment (manual capture): capture "
                              "it before the authorization expires.",
        "payment.captured": "Funds were captured: in full (automatic capture) or up to the "
                            "captured amount. After partial captures: the final capture (or a "
                            "cancel or the authorization's expiry) ended the authorization; "
                            "`amount_captured` is their sum, the rest was released.",
        "payment.partially_captured": "A capture with `final_capture: false` took part of the "
                                      "authorization; the payment stays `authorized` and "
                                      "`amount_captured` grew.",
        "payment.authorization_incremented": "The provider raised the open authorization: "
                                             "`amount` and `amount_authorized` are the new "
                                             "total.",
        "payment.failed": "The provider declined the payment or failed for good; see "
                          "`failure_code`.",
        "payment.canceled": "The payment was canceled (voided at the provider when authorized).",
        "payment.settled": "The provider's settlement file or report confirmed the capture.",
        "payment.refunded": "Refunds reached the captured amount.",
        "payment.charged_back": "A dispute was lost: the disputed amount was charged back.",
        "payment.retry_scheduled": "An off-session payment failed with a retryable decline; "
                                   "it will be tried again at `next_retry_at`.",
    })
    event_types_register(object="customer", serializer=CustomerOutput, types={
        "customer.created": "A customer was created.",
        "customer.updated": "A customer's details changed.",
    })
    event_types_register(object="payment_method", serializer=PaymentMethodOutput, types={
        "payment_method.created": "A payment method was saved for a customer.",
        "payment_method.updated": "A saved payment method changed (e.g. enrolled with another "
                                  "provider).",
        "payment_method.detached": "A payment method was detached from its customer.",
    })
    event_types_register(object="refund", serializer=RefundOutput, types={
        "refund.created": "A refund was requested (status `pending`).",
        "refund.succeeded": "The provider paid the refund.",
        "refund.failed": "The provider refused the refund; the amount is refundable again.",
    })
    event_types_register(object="dispute", serializer=DisputeOutput, types={
        "dispute.created": "A customer disputed the payment; respond before `due_by`.",
        "dispute.updated": "Evidence was submitted; the dispute is `under_review`.",
        "dispute.evidence_due_soon": "The provider's deadline for evidence is near and none "
                                     "was submitted yet (sent once per dispute).",
        "dispute.closed": "The dispute ended: `won` (funds released) or `lost` (charged back).",
    })


def _register_gauges() -> None:
    from core.metrics import gauge_register, oldest_work_register
    from payments import selectors

    gauge_register("clearhouse_payments", "Payments by status and provider",
                   ["status", "provider"],
                   lambda: [((status, provider or "none"), count)
                            for status, provider, count in selectors.payment_counts()])
    gauge_register("clearhouse_payments_awaiting_reconciliation",
                   "Payments authorization_requested with an unknown answer", [],
                   lambda: [((), selectors.payments_with_unknown_answer_count())])
    oldest_work_register("providers", selectors.oldest_unsent_attempt_seconds)
