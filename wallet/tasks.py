"""Celery tasks for deposits and payouts: each takes an id, loads fresh rows, calls one service."""

from celery import shared_task

from wallet import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def payout_refresh(payout_id: str) -> None:
    """Ask the provider what became of an open payout (the reconciliation janitor enqueues it)."""
    services.payout_refresh(payout_id=payout_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deposit_refresh(deposit_id: str) -> None:
    services.deposit_refresh(deposit_id=deposit_id)
