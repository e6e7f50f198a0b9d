"""Beat's tasks: each runs one job from `reconciliation.jobs` and records a JobRun.

All use acks_late with reject_on_worker_lost: a worker killed mid-run leaves the message to be
delivered again, and every job is idempotent (the janitor's leases carry the task id, so the
redelivered task takes its own claims back at once instead of waiting for them to expire).
"""

from __future__ import annotations

from datetime import date

from celery import shared_task

from reconciliation import jobs

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(bind=True, **TASK_OPTIONS)
def recon_janitor(self) -> int:  # type: ignore[no-untyped-def]
    owner = f"task-{self.request.id}" if self.request.id else ""
    run = jobs.janitor_job(owner=owner)
    return run.examined if run is not None else 0


@shared_task(**TASK_OPTIONS)
def recon_settlements(day: str | None = None, providers: list[str] | None = None) -> int:
    return jobs.settlements_job(day=date.fromisoformat(day) if day else None,
                                providers=providers).examined


@shared_task(**TASK_OPTIONS)
def ledger_verify_nightly() -> bool:
    return bool(jobs.ledger_verify_job().details["ok"])


@shared_task(**TASK_OPTIONS)
def ledger_checkpoint() -> int:
    return int(jobs.ledger_checkpoint_job().details["number"])


@shared_task(**TASK_OPTIONS)
def idempotency_reap() -> int:
    return jobs.idempotency_reap_job().fixed


@shared_task(**TASK_OPTIONS)
def webhooks_sweep() -> int:
    return jobs.webhooks_sweep_job().examined


@shared_task(**TASK_OPTIONS)
def recon_disputes() -> int:
    return jobs.disputes_job().examined


@shared_task(**TASK_OPTIONS)
def history_partitions() -> int:
    return jobs.history_partitions_job().fixed
