"""Writes of the reconciliation app: job runs, the janitor's checks (discover, claim with a lease,
record), breaks and their resolution with an audit row, and the beat schedule as data."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import JSONField, Q
from django.utils import timezone

from core.breaks import BreakSpec
from core.errors import InvalidRequest, NotFound, StateError
from reconciliation import selectors
from reconciliation.conf import setting
from reconciliation.models import (
    BreakAudit,
    BreakStatus,
    CheckObjectType,
    JobRun,
    ReconciliationBreak,
    ReconciliationCheck,
)


# -- what an import found -------------------------------------------------------------------
@dataclass(kw_only=True)
class ImportCounts:
    """What importing one file (a settlement file, a bank statement) found: whether it was new,
    its lines, how many matched, the breaks it opened, and its lines per match status."""

    created: bool
    lines: int = 0
    matched: int = 0
    breaks: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


# -- job runs --------------------------------------------------------------------------------
def _host() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


@contextmanager
def job_run(*, job: str) -> Iterator[JobRun]:
    """Record one run of `job`; the caller adds to examined / fixed / broken / details. An
    exception is written to `error` and re-raised; a killed process leaves finished_at empty."""
    run = JobRun.objects.create(job=job, started_at=timezone.now(), host=_host())
    try:
        yield run
    except BaseException as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:10_000]
        raise
    finally:
        run.finished_at = timezone.now()
        run.save()


def jobrun_prune(*, older_than: timedelta | None = None) -> int:
    days = setting("RECON_JOBRUN_RETENTION_DAYS")
    cutoff = timezone.now() - (older_than or timedelta(days=days))
    return JobRun.objects.filter(started_at__lt=cutoff).delete()[0]


# -- breaks ----------------------------------------------------------------------------------
_SPEC_FIELDS = frozenset(BreakSpec.__dataclass_fields__)


def breaks_open(*, specs: Sequence[BreakSpec]) -> int:
    """Open the breaks not recorded yet (in any status: a resolved break is not reopened by the
    same finding). Returns how many are new. Joins the caller's transaction when there is one.

    One INSERT ... SELECT FROM unnest(column arrays) for all of them, no model instances (a
    settlement batch opens dozens): the same rows bulk_create would write. The unique
    (type, key) constraint does the dedupe against stored breaks, in any status, and against a
    concurrent run that opened the same break first (ON CONFLICT DO NOTHING)."""
    fresh: dict[tuple[str, str], BreakSpec] = {}
    for spec in specs:
        fresh.setdefault((spec.type, spec.key), spec)  # the same finding twice is one break
    if not fresh:
        return 0
    now = timezone.now()
    columns: list[str] = []
    casts: list[str] = []
    arrays: list[list[Any]] = []
    for model_field in ReconciliationBreak._meta.concrete_fields:
        name = model_field.attname
        if name in _SPEC_FIELDS:
            values = [getattr(spec, name) for spec in fresh.values()]
        elif getattr(model_field, "auto_now_add", False):
            values = [now] * len(fresh)
        elif callable(model_field.default):  # the public id: one per row
            values = [model_field.get_default() for _ in fresh]
        else:
            values = [model_field.get_default()] * len(fresh)
        if isinstance(model_field, JSONField):  # as JSONField would encode it
            values = [json.dumps(value, cls=model_field.encoder) for value in values]
        columns.append(connection.ops.quote_name(model_field.column))
        casts.append(f"%s::{model_field.cast_db_type(connection)}[]")
        arrays.append(values)
    sql = (f"INSERT INTO {ReconciliationBreak._meta.db_table} ({', '.join(columns)}) "  # noqa: S608
           f"SELECT * FROM unnest({', '.join(casts)}) ON CONFLICT DO NOTHING RETURNING 1")
    connection.ensure_connection()
    # Server-side binding (Django's cursor would spell every array out in the SQL text).
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, arrays, prepare=False)
        return len(cursor.fetchall())


def break_resolve(*, break_id: str, user: AbstractBaseUser | None, note: str,
                  status: str = BreakStatus.RESOLVED) -> ReconciliationBreak:
    """Close an open break as resolved or ignored, with the human's note and an audit row."""
    note = (note or "").strip()
    if not note:
        raise InvalidRequest("A note explaining the resolution is required.", param="note",
                             code="note_required")
    if status not in (BreakStatus.RESOLVED, BreakStatus.IGNORED):
        raise InvalidRequest(f"status must be 'resolved' or 'ignored', not {status!r}.",
                             param="status")
    with transaction.atomic():
        brk = ReconciliationBreak.objects.select_for_update().filter(pk=break_id).first()
        if brk is None:
            raise NotFound(f"No such break: '{break_id}'.", param="id")
        if brk.status != BreakStatus.OPEN:
            raise StateError(f"This break is already '{brk.status}'.", param="status",
                             code="break_closed")
        previous = brk.status
        brk.status = status
        brk.resolution_note = note
        brk.resolved_by = user
        brk.resolved_at = timezone.now()
        brk.save(update_fields=["status", "resolution_note", "resolved_by", "resolved_at"])
        BreakAudit.objects.create(reconciliation_break=brk, action=status,
                                  from_status=previous, note=note, user=user)
    return brk


# -- the janitor's checks --------------------------------------------------------------------
def checks_discover(*, first_check_at: Any, now: datetime, grace: timedelta,
                    movements_unchanged_for: timedelta, limit: int = 1000) -> int:
    """Start tracking stuck payments, refunds, captures and voids (one row per attempt),
    payouts and deposits not tracked yet. `first_check_at(stuck_since, attempt_status)` says
    when to ask about one with an attempt first; a payout or deposit unchanged for
    `movements_unchanged_for` is asked about now. Returns how many rows were added."""
    rows: list[ReconciliationCheck] = []
    finders = ((CheckObjectType.PAYMENT, selectors.stuck_payments_unchecked),
               (CheckObjectType.REFUND, selectors.stuck_refunds_unchecked),
               (CheckObjectType.CAPTURE_OR_VOID, selectors.stuck_operations_unchecked))
    for object_type, find in finders:
        for object_id, attempt_id, created_at, attempt_status in find(
                requested_before=now - grace, limit=limit):
            rows.append(ReconciliationCheck(
                object_type=object_type, object_id=object_id, attempt_id=attempt_id,
                stuck_since=created_at,
                next_check_at=max(now, first_check_at(created_at, attempt_status))))
    found = selectors.movements_unchecked(unchanged_since=now - movements_unchanged_for,
                                          limit=limit)
    for object_type, rows_found in found:
        rows += [ReconciliationCheck(object_type=object_type, object_id=object_id,
                                     stuck_since=changed_at, next_check_at=now)
                 for object_id, changed_at in rows_found]
    # Two janitors may discover the same object: the unique constraint keeps one row.
    ReconciliationCheck.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows) + _payment_checks_rearm(first_check_at=first_check_at, now=now,
                                             grace=grace, limit=limit)


def _payment_checks_rearm(*, first_check_at: Any, now: datetime, grace: timedelta,
                          limit: int) -> int:
    """Put each payment check on an earlier attempt's schedule onto the schedule of the
    payment's attempt now without an answer (a delayed retry), from its first slot: its lost
    answer is asked about 5 minutes after it was sent, not at the earlier attempt's next slot
    (a day away) or never (that check was closed). Returns how many were re-armed."""
    rearmed = 0
    for payment_id, attempt_id, created_at, attempt_status in (
            selectors.stuck_payments_checked_for_another_attempt(
                requested_before=now - grace, limit=limit)):
        # Conditional on the schedule: a concurrent janitor's re-arm makes this one a no-op.
        rearmed += (ReconciliationCheck.objects
                    .filter(object_type=CheckObjectType.PAYMENT, object_id=payment_id,
                            stuck_since__lt=created_at)
                    .update(attempt_id=attempt_id, stuck_since=created_at, checks=0,
                            next_check_at=max(now, first_check_at(created_at, attempt_status)),
                            closed_at=None, lease_owner="", leased_until=None))
    return rearmed


def checks_claim(*, owner: str, now: datetime, lease: timedelta, limit: int
                 ) -> list[ReconciliationCheck]:
    """Claim due checks for `owner` until now + lease. SKIP LOCKED: a concurrent janitor takes
    other rows instead of waiting, and the lease keeps them away after this commits. Rows whose
    lease `owner` already holds are taken back at once (a redelivered task keeps its id)."""
    with transaction.atomic():
        ids = list(
            ReconciliationCheck.objects.select_for_update(skip_locked=True)
            .filter(closed_at__isnull=True, next_check_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lte=now)
                    | Q(lease_owner=owner))
            .order_by("next_check_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        ReconciliationCheck.objects.filter(pk__in=ids).update(lease_owner=owner,
                                                              leased_until=now + lease)
    return list(ReconciliationCheck.objects.filter(pk__in=ids).order_by("next_check_at", "id"))


def check_record(*, check_id: int, owner: str, result: str, closed: bool,
                 next_check_at: datetime | None, attempt_id: str = "",
                 break_spec: BreakSpec | None = None) -> bool:
    """Record one check and release the lease. `closed` with a `break_spec` opens the break in
    the same transaction. Returns False (and writes nothing) when the lease was lost to another
    janitor, which then records its own check."""
    now = timezone.now()
    with transaction.atomic():
        check = ReconciliationCheck.objects.select_for_update().get(pk=check_id)
        if check.lease_owner != owner or check.closed_at is not None:
            return False
        check.checks += 1
        check.last_checked_at = now
        check.last_result = result[:64]
        check.lease_owner, check.leased_until = "", None
        if attempt_id:
            check.attempt_id = attempt_id
        if closed:
            check.closed_at = now
        elif next_check_at is not None:
            check.next_check_at = next_check_at
        check.save()
        if break_spec is not None:
            breaks_open(specs=[break_spec])
    return True


def check_release(*, check_id: int, owner: str) -> None:
    """Give a claimed check back without counting a try (the job ran out of time)."""
    ReconciliationCheck.objects.filter(pk=check_id, lease_owner=owner).update(
        lease_owner="", leased_until=None)


# -- the beat schedule -----------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduledJob:
    name: str
    task: str
    description: str
    interval_setting: str = ""
    crontab_setting: str = ""
    expires_with_interval: bool = False


SCHEDULED_JOBS: tuple[ScheduledJob, ...] = (
    ScheduledJob("recon-janitor", "reconciliation.tasks.recon_janitor",
                 "Ask providers about stuck authorizations, captures, voids, refunds, payouts and "
                 "deposits (5 min, 1 h, daily ×5, then a break).",
                 # No expiry: single-flight by a lock (jobs.janitor_job), so a run that waited
                 # in the queue still runs and catches up on whatever is due.
                 interval_setting="RECON_JANITOR_INTERVAL_SECONDS"),
    ScheduledJob("recon-settlements", "reconciliation.tasks.recon_settlements",
                 "Import and match each provider's settlement files.",
                 crontab_setting="RECON_SETTLEMENTS_CRONTAB"),
    ScheduledJob("ledger-verify", "reconciliation.tasks.ledger_verify_nightly",
                 "Prove the ledger consistent; opens a break on failure.",
                 crontab_setting="RECON_LEDGER_VERIFY_CRONTAB"),
    ScheduledJob("ledger-checkpoint", "reconciliation.tasks.ledger_checkpoint",
                 "Sign and export a checkpoint of every ledger account's chain head.",
                 interval_setting="RECON_LEDGER_CHECKPOINT_INTERVAL_SECONDS",
                 expires_with_interval=True),
    ScheduledJob("idempotency-reap", "reconciliation.tasks.idempotency_reap",
                 "Delete idempotency keys past their TTL; prune old job runs.",
                 crontab_setting="RECON_IDEMPOTENCY_REAP_CRONTAB"),
    # Same name as the entry config/settings/base.py used to define in code, so beat never
    # runs two sweepers while that entry still exists (it updates this row by name).
    ScheduledJob("webhooks-sweep", "reconciliation.tasks.webhooks_sweep",
                 "Send due webhook deliveries (retries and lost first tries).",
                 interval_setting="RECON_WEBHOOKS_SWEEP_INTERVAL_SECONDS",
                 expires_with_interval=True),
    ScheduledJob("recon-disputes", "reconciliation.tasks.recon_disputes",
                 "Ask providers where open disputes stand (their decisions move the money); "
                 "remind merchants of evidence due soon.",
                 interval_setting="RECON_DISPUTES_INTERVAL_SECONDS", expires_with_interval=True),
    ScheduledJob("history-partitions", "reconciliation.tasks.history_partitions",
                 "Create the coming months' partitions of the history tables (events, "
                 "postings).",
                 crontab_setting="RECON_HISTORY_PARTITIONS_CRONTAB"),
)


def crontab_fields(expression: str) -> dict[str, str]:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"crontab {expression!r} needs 5 fields: minute hour dom month dow")
    return dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), parts,
                    strict=True))


def schedule_sync(*, models: dict[str, Any] | None = None,
                  values: dict[str, Any] | None = None,
                  names: Collection[str] | None = None) -> list[str]:
    """Create or reset every scheduled job's PeriodicTask (or those in `names`) from the
    settings (or `values`). `models` lets a data migration pass its historical models. Returns
    the names written."""
    if models is None:
        from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
        models = {"PeriodicTask": PeriodicTask, "IntervalSchedule": IntervalSchedule,
                  "CrontabSchedule": CrontabSchedule}
    read = (values or {}).get
    written = []
    for job in SCHEDULED_JOBS:
        if names is not None and job.name not in names:
            continue
        defaults: dict[str, Any] = {"task": job.task, "description": job.description,
                                    "enabled": True, "interval": None, "crontab": None,
                                    "expire_seconds": None}
        if job.interval_setting:
            every = int(read(job.interval_setting) or setting(job.interval_setting))
            defaults["interval"], _ = models["IntervalSchedule"].objects.get_or_create(
                every=every, period="seconds")
            if job.expires_with_interval:
                # A run that waited a whole interval in the queue is superseded by the next.
                defaults["expire_seconds"] = every
        else:
            expression = read(job.crontab_setting) or setting(job.crontab_setting)
            defaults["crontab"], _ = models["CrontabSchedule"].objects.get_or_create(
                timezone="UTC", **crontab_fields(expression))
        models["PeriodicTask"].objects.update_or_create(name=job.name, defaults=defaults)
        written.append(job.name)
    return written
