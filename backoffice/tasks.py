"""Celery tasks of the back-office: each takes an id and calls one service."""

from celery import shared_task

from backoffice import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def ledger_verify_run(run_id: int) -> None:
    """Run one queued ledger verification; a redelivered message finds it claimed."""
    services.ledger_verify_execute(run_id=run_id)
