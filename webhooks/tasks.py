"""Celery tasks for webhooks: each takes an id (or nothing), and calls one service.

Both are idempotent: a delivery that is already delivered, failed or leased to another worker
is left alone, so a redelivered task message (acks_late) sends nothing twice.
"""

from celery import shared_task

from webhooks import inbound, services

SWEEP_TIME_BUDGET_SECONDS = 25.0  # under the 30 s beat interval, so sweeps rarely overlap


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def webhook_deliver(delivery_id: str) -> None:
    services.delivery_execute(delivery_id=delivery_id)


@shared_task(acks_late=True, ignore_result=True)
def webhook_sweep() -> int:
    """Beat task: retries that are due, and first tries whose task message was lost."""
    return services.delivery_sweep(time_budget=SWEEP_TIME_BUDGET_SECONDS)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def provider_event_process(event_id: int) -> None:
    inbound.provider_event_process(event_id=event_id)


@shared_task(acks_late=True, ignore_result=True)
def provider_events_sweep() -> int:
    return inbound.provider_events_sweep()
