"""The scheduled jobs, each recording a JobRun: the Celery tasks and the management commands
both call these, so a job run by hand is the same job that beat runs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date

from django.db import connection
from django.utils import timezone

from core import partitions
from core.idempotency import idempotency_reap
from core.ratelimit import rate_windows_reap
from ledger.checkpoints import checkpoint_create
from ledger.verify import ledger_verify
from payments import services as payments
from reconciliation import janitor, services, settlements
from reconciliation.models import BreakType, JobRun
from webhooks import services as webhooks

logger = logging.getLogger(__name__)

WEBHOOKS_SWEEP_TIME_BUDGET_SECONDS = 25.0  # under the 30 s beat interval


# pg_try_advisory_lock key of the janitor: one runs at a time across every worker and host.
JANITOR_LOCK = 0x4A414E49


@contextmanager
def _single_flight(key: int) -> Iterator[bool]:
    """A session-level advisory lock, taken without waiting and released at the end (or by
    PostgreSQL when a killed worker's connection drops)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        taken = bool(cursor.fetchone()[0])
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def janitor_job(*, owner: str = "", time_budget: float | None = None) -> JobRun | None:
    """One janitor pass, unless another is running (then None: that one covers what is due)."""
    with _single_flight(JANITOR_LOCK) as taken:
        if not taken:
            logger.info("janitor already running elsewhere; this run has nothing to add")
            return None
        with services.job_run(job="recon_janitor") as run:
            result = janitor.janitor_run(
                owner=owner, time_budget=time_budget or janitor.DEFAULT_TIME_BUDGET_SECONDS)
            run.examined, run.fixed, run.broken = result.examined, result.fixed, result.broken
            run.details = {"discovered": result.discovered, "retries": result.retries,
                           "expired": result.expired, "answers": result.answers}
    return run


def settlements_job(*, day: date | None = None, providers: Iterable[str] | None = None
                    ) -> JobRun:
    with services.job_run(job="recon_settlements") as run:
        result = settlements.settlements_run(day=day, providers=providers)
        run.examined, run.fixed, run.broken = result.lines, result.settled, result.breaks
        run.details = {"matched": result.matched, "files": result.files}
        run.error = "\n".join(result.errors)
    return run


def ledger_verify_job() -> JobRun:
    """Nightly proof of the ledger; a failure opens a `ledger_verify_failed` break (one per
    day) and is logged at error."""
    with services.job_run(job="ledger_verify") as run:
        result = ledger_verify()
        run.examined = result.entries
        run.details = {"ok": result.ok, "entries": result.entries,
                       "postings": result.postings, "accounts": result.accounts}
        if not result.ok:
            logger.error("ledger_verify FAILED: %s", result.report())
            today = timezone.now().date().isoformat()
            run.broken = services.breaks_open(specs=[services.BreakSpec(
                type=BreakType.LEDGER_VERIFY_FAILED, key=today,
                our_data={"report": result.report(),
                          "problems": [str(problem) for problem in result.problems],
                          "entries": result.entries, "postings": result.postings})])
            run.error = result.report()[:10_000]
    return run


def ledger_checkpoint_job() -> JobRun:
    """Sign and export where every account's chain stands (ledger.checkpoints)."""
    with services.job_run(job="ledger_checkpoint") as run:
        checkpoint = checkpoint_create()
        run.examined = int(checkpoint.body["accounts"])
        run.details = {"number": checkpoint.number, "root": checkpoint.body["root"]}
    return run


def idempotency_reap_job() -> JobRun:
    with services.job_run(job="idempotency_reap") as run:
        run.fixed = idempotency_reap()
        # Old job runs go with the hourly housekeeping: the sweeper alone records 2,880 a day.
        run.details = {"job_runs_pruned": services.jobrun_prune(),
                       "rate_windows_reaped": rate_windows_reap()}
    return run


def webhooks_sweep_job(*, time_budget: float | None = WEBHOOKS_SWEEP_TIME_BUDGET_SECONDS
                       ) -> JobRun:
    with services.job_run(job="webhooks_sweep") as run:
        run.examined = webhooks.delivery_sweep(time_budget=time_budget)
    return run


def disputes_job() -> JobRun:
    """Open disputes looked up at their providers (a decision found there is applied exactly
    as a notice would be), then the once-per-dispute "evidence due soon" reminders."""
    with services.job_run(job="recon_disputes") as run:
        looked_up = payments.disputes_refresh_due()
        reminded = payments.dispute_reminders_send()
        run.examined = sum(looked_up.values())
        run.fixed = looked_up.get("won", 0) + looked_up.get("lost", 0)
        run.details = {"after_lookup": looked_up, "reminded": reminded}
        run.error = (f"{looked_up['error']} lookups failed (see the log)"
                     if looked_up.get("error") else "")
    return run


def history_partitions_job() -> JobRun:
    """Create this month's and the next months' partitions of every partitioned history table
    (events, core.partitions), so no insert ever lands in the DEFAULT partition."""
    with services.job_run(job="history_partitions") as run:
        created = partitions.months_ensure()
        run.fixed = len(created)
        run.examined = len(partitions.partitioned_tables())
        run.details = {"created": created}
    return run
