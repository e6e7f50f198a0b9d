"""Celery tasks for webhooks: each takes an id (or nothing), and calls one service.

The outbox sweep runs as `reconciliation.tasks.webhooks_sweep` (beat row `webhooks-sweep`,
recording a JobRun). The delivery tasks are idempotent: a delivery that is already delivered,
failed or leased to another worker is left alone, so a redelivered task message (acks_late)
sends nothing twice.
"""

from celery import shared_task

from core.tasks_base import service_task
from webhooks import inbound, services


@service_task
def webhook_deliver(delivery_id: str) -> None:
    services.delivery_execute(delivery_id=delivery_id)


@service_task
def provider_event_process(event_id: int) -> None:
    inbound.provider_event_process(event_id=event_id)


@shared_task(acks_late=True, ignore_result=True)
def provider_events_sweep() -> int:
    return inbound.provider_events_sweep()
