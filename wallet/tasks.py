"""Celery tasks for deposits and payouts: each takes an id, loads fresh rows, calls one service."""

from core.tasks_base import service_task
from wallet import services


@service_task
def payout_refresh(payout_id: str) -> None:
    """Ask the provider what became of an open payout (the reconciliation janitor enqueues it)."""
    services.payout_refresh(payout_id=payout_id)


@service_task
def deposit_refresh(deposit_id: str) -> None:
    services.deposit_refresh(deposit_id=deposit_id)
