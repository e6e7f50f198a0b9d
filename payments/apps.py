"""Django app config for `payments`: registers the applier of inbound provider events about
payments, refunds and disputes with the inbox (`webhooks.inbound`)."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from payments import checks  # noqa: F401 - registers the evidence storage checks
        from payments.inbound import provider_event_apply
        from webhooks.inbound import register_event_applier

        register_event_applier(("payment", "refund", "dispute"), provider_event_apply)
        _register_gauges()


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
