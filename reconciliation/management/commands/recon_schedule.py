"""`manage.py recon_schedule [--sync]`: show beat's schedule, or reset it from the settings
(e.g. `RECON_JANITOR_INTERVAL_SECONDS=5 manage.py recon_schedule --sync` before `make run`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django_celery_beat.models import PeriodicTask

from reconciliation.services import SCHEDULED_JOBS, schedule_sync


class Command(BaseCommand):
    help = ("List the scheduled jobs' PeriodicTasks; --sync creates missing ones and resets "
            "their intervals/crontabs from RECON_* settings (edits made in the admin are lost).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sync", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sync"]:
            schedule_sync()
        names = [job.name for job in SCHEDULED_JOBS]
        tasks = PeriodicTask.objects.filter(name__in=names).select_related("interval", "crontab")
        found = {task.name: task for task in tasks}
        for name in names:
            task = found.get(name)
            if task is None:
                self.stdout.write(f"{name:20} MISSING (run with --sync)")
                continue
            when = task.interval or task.crontab
            self.stdout.write(f"{name:20} {'on ' if task.enabled else 'off'} {when}  "
                              f"{task.task}  last run {task.last_run_at or 'never'}")
