"""Django app config for `webhooks`: registers the gauges of the outbox, the inbox and the
event relays, and the event type webhooks emit."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Events and webhooks"

    def ready(self) -> None:
        from core.crypto import at_rest_register
        from core.metrics import gauge_register, oldest_work_register
        from core.partitions import detachable_register
        from webhooks import selectors
        from webhooks.rotation import endpoint_secrets_reencrypt

        at_rest_register("webhook endpoint secret(s)", endpoint_secrets_reencrypt)

        def queue() -> list[tuple[tuple[str], float]]:
            count, oldest_seconds = selectors.pending_deliveries()
            return [(("count",), count), (("oldest_age_seconds",), oldest_seconds)]

        detachable_register("webhooks_event")  # old months may be archived (OPERATIONS)
        gauge_register("clearhouse_webhook_queue", "Pending outbound deliveries", ["measure"],
                       queue)
        gauge_register("clearhouse_provider_inbox", "Inbound provider events", ["status"],
                       lambda: [((status,), count) for status, count in selectors.inbox_counts()])
        gauge_register("clearhouse_event_relay_lag",
                       "Events each stream relay has not published yet (events) and the age "
                       "of the oldest of them (seconds)", ["relay", "measure"],
                       lambda: [row for name, events, seconds in selectors.event_relay_lags()
                                for row in (((name, "events"), events),
                                            ((name, "seconds"), seconds))])
        oldest_work_register("inbound", selectors.oldest_pending_inbound_seconds)
        oldest_work_register("webhooks", selectors.oldest_due_delivery_seconds)

        from core.events import event_types_register
        from webhooks.api import WebhookEndpointOutput
        from webhooks.services import ENDPOINT_DISABLED_EVENT

        event_types_register(object="webhook_endpoint", serializer=WebhookEndpointOutput, types={
            ENDPOINT_DISABLED_EVENT: "The endpoint was disabled after every delivery failed "
                                     "for 3 days; re-enable it with `disabled: false`.",
        })
