"""Schedules as data (django-celery-beat rows from a data migration, resettable from settings),
every job as a task and a management command recording a JobRun, and the nightly ledger
check opening a break when the ledger does not verify."""

from __future__ import annotations

import importlib
import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.models import IdempotencyKey
from reconciliation import tasks
from reconciliation.models import BreakType, JobRun, ReconciliationBreak
from reconciliation.services import SCHEDULED_JOBS, schedule_sync
from tests.factories import pay

NAMES = {"recon-janitor", "recon-settlements", "ledger-verify", "idempotency-reap",
         "webhooks-sweep", "ledger-checkpoint", "recon-disputes", "history-partitions"}


@pytest.mark.django_db
def test_the_data_migration_creates_one_periodic_task_per_job_and_can_be_reversed(monkeypatch):
    migration = importlib.import_module("reconciliation.migrations.0002_beat_schedule")
    names = NAMES - {"ledger-checkpoint", "recon-disputes",
                     "history-partitions"}  # added by 0008, 0010, 0011
    PeriodicTask.objects.filter(name__in=names).delete()
    monkeypatch.setenv("RECON_JANITOR_INTERVAL_SECONDS", "5")
    migration.create_schedule(django_apps, None)
    migration.create_schedule(django_apps, None)  # idempotent: no duplicates
    tasks_by_name = {t.name: t for t in PeriodicTask.objects.filter(name__in=names)}
    assert set(tasks_by_name) == names
    janitor = tasks_by_name["recon-janitor"]
    assert (janitor.task, janitor.interval.every, janitor.interval.period,
            janitor.expire_seconds) == ("reconciliation.tasks.recon_janitor", 5, "seconds", 5)
    assert tasks_by_name["webhooks-sweep"].interval.every == 30
    nightly = tasks_by_name["ledger-verify"].crontab
    assert (nightly.minute, nightly.hour, str(nightly.timezone)) == ("30", "2", "UTC")
    assert tasks_by_name["recon-settlements"].crontab.hour == "6"
    assert tasks_by_name["idempotency-reap"].crontab.minute == "15"
    migration.remove_schedule(django_apps, None)
    assert not PeriodicTask.objects.filter(name__in=names).exists()


@pytest.mark.django_db
def test_beat_signs_a_ledger_checkpoint_on_its_interval_and_records_a_job_run(merchant):
    task = PeriodicTask.objects.get(name="ledger-checkpoint")  # from migration 0008
    assert (task.task, task.interval.every) == ("reconciliation.tasks.ledger_checkpoint", 300)
    _captured_payment(merchant)
    assert tasks.ledger_checkpoint() == 1
    assert tasks.ledger_checkpoint() == 2
    run = JobRun.objects.filter(job="ledger_checkpoint").latest("started_at")
    assert (run.error, run.details["number"]) == ("", 2) and run.examined >= 2
    assert tasks.ledger_verify_nightly() is True


@pytest.mark.django_db
def test_every_scheduled_task_is_registered_with_acks_late_and_reject_on_worker_lost():
    from config.celery_app import app

    schedule_sync()
    for name in NAMES:
        task = app.tasks[PeriodicTask.objects.get(name=name).task]
        assert task.acks_late and task.reject_on_worker_lost, name
    assert {job.name for job in SCHEDULED_JOBS} == NAMES


@pytest.mark.django_db
def test_recon_schedule_resets_intervals_from_settings_and_lists_them(settings):
    settings.RECON_JANITOR_INTERVAL_SECONDS = 7
    settings.RECON_SETTLEMENTS_CRONTAB = "5 4 * * *"
    out = StringIO()
    call_command("recon_schedule", "--sync", stdout=out)
    task = PeriodicTask.objects.get(name="recon-janitor")
    # No expiry: the janitor is single-flight by a lock, so a queued run is never dropped.
    assert (task.interval.every, task.expire_seconds) == (7, None)
    assert PeriodicTask.objects.get(name="recon-settlements").crontab.hour == "4"
    text = out.getvalue()
    assert "recon-janitor" in text and "every 7 seconds" in text
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)
    assert PeriodicTask.objects.filter(name__in=NAMES).count() == len(NAMES)


@pytest.mark.django_db
def test_the_janitor_task_and_command_record_job_runs():
    assert tasks.recon_janitor() == 0  # nothing stuck; the task body called directly
    out = StringIO()
    call_command("recon_janitor", stdout=out)
    assert json.loads(out.getvalue())["examined"] == 0
    runs = JobRun.objects.filter(job="recon_janitor")
    assert runs.count() == 2
    assert all(run.finished_at and run.error == "" for run in runs)


@pytest.mark.django_db
def test_idempotency_reap_job_deletes_old_keys_and_old_job_runs(merchant):
    now = timezone.now()
    for key in ("old", "new"):
        IdempotencyKey.objects.create(merchant=merchant, key=key, fingerprint="f",
                                      method="POST", path="/v1/payments", status="completed",
                                      response_status=200, locked_at=now)
    IdempotencyKey.objects.filter(key="old").update(created_at=now - timedelta(hours=25))
    JobRun.objects.create(job="webhooks_sweep", started_at=now - timedelta(days=400))
    out = StringIO()
    call_command("idempotency_reap", stdout=out)
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    assert "1 idempotency key(s) deleted, 1 old job run(s) pruned" in out.getvalue()
    assert tasks.idempotency_reap() == 0


@pytest.mark.django_db
def test_webhooks_sweep_task_records_a_job_run():
    assert tasks.webhooks_sweep() == 0
    assert JobRun.objects.get(job="webhooks_sweep").examined == 0


def _captured_payment(merchant) -> None:
    """A payment captured through the services (sandbox provider), so the ledger has entries."""
    assert pay(merchant, amount=2500, currency="usd").status == "captured"


@pytest.mark.django_db
def test_nightly_ledger_verify_is_clean_on_a_good_ledger(merchant):
    _captured_payment(merchant)
    assert tasks.ledger_verify_nightly() is True
    run = JobRun.objects.get(job="ledger_verify")
    assert (run.broken, run.error, run.details["ok"]) == (0, "", True)
    assert run.examined >= 1
    assert not ReconciliationBreak.objects.exists()


@pytest.mark.django_db
def test_nightly_ledger_verify_opens_a_break_and_logs_at_error_on_failure(merchant, caplog):
    _captured_payment(merchant)
    with connection.cursor() as cursor:
        # Judge the deferred checks now, then edit behind the triggers' back (a superuser).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE ledger_account SET balance = balance + 1 "
                       "WHERE id = (SELECT min(id) FROM ledger_account)")
        cursor.execute("SET session_replication_role = origin")
    with caplog.at_level(logging.ERROR, logger="reconciliation.jobs"):
        assert tasks.ledger_verify_nightly() is False
        assert tasks.ledger_verify_nightly() is False  # same night: same break
    brk = ReconciliationBreak.objects.get()
    assert (brk.type, brk.status, brk.key) == (BreakType.LEDGER_VERIFY_FAILED, "open",
                                               timezone.now().date().isoformat())
    assert "account_balance" in brk.our_data["report"]
    runs = JobRun.objects.filter(job="ledger_verify").order_by("started_at")
    assert [run.broken for run in runs] == [1, 0]
    assert all("FAILED" in run.error for run in runs)
    assert any(r.levelno == logging.ERROR and "ledger_verify FAILED" in r.getMessage()
               for r in caplog.records)


@pytest.mark.django_db
def test_recon_settlements_command_reports_a_provider_it_cannot_reach(settings):
    settings.PROVIDERS = {**settings.PROVIDERS,
                          "rede": {**settings.PROVIDERS["rede"],
                                   "base_url": "http://127.0.0.1:9/rede"}}
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="rede 2026-03-01"):
        call_command("recon_settlements", "--date", "2026-03-01", "--provider", "rede",
                     stdout=StringIO())
    run = JobRun.objects.get(job="recon_settlements")
    assert run.finished_at and "rede 2026-03-01" in run.error
