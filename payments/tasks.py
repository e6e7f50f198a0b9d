"""Celery tasks for payments: each takes an id, loads fresh rows and calls one service."""

from celery import shared_task

from payments import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def payment_authorize(attempt_id: str) -> None:
    services.payment_authorization_execute(attempt_id=attempt_id)
