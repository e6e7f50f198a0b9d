"""How a task that takes an id and calls one service is declared: acknowledged only after it
ran and requeued if its worker dies (so it may run twice, which the idempotent services it calls
allow), with no result stored."""

from celery import shared_task

service_task = shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
