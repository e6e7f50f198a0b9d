"""Django app config for `payments`: registers the applier of inbound provider events about
payments, refunds and disputes with the inbox (`webhooks.inbound`)."""

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"

    def ready(self) -> None:
        from payments.inbound import provider_event_apply
        from webhooks.inbound import register_event_applier

        register_event_applier(("payment", "refund", "dispute"), provider_event_apply)
