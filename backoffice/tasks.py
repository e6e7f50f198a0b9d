"""Celery tasks of the back-office: each takes an id and calls one service."""

from backoffice import services
from core.tasks_base import service_task


@service_task
def ledger_verify_run(run_id: int) -> None:
    """Run one queued ledger verification; a redelivered message finds it claimed."""
    services.ledger_verify_execute(run_id=run_id)
