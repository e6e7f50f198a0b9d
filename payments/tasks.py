"""Celery tasks for payments: each takes an id, loads fresh rows and calls one service."""

from core.tasks_base import service_task
from payments import services


@service_task
def payment_authorize(attempt_id: str) -> None:
    services.payment_authorization_execute(attempt_id=attempt_id)
