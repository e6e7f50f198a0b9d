"""`manage.py idempotency_reap`: delete idempotency keys past their TTL now (hourly on beat)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from reconciliation import jobs


class Command(BaseCommand):
    help = "Delete idempotency keys older than IDEMPOTENCY_KEY_TTL_HOURS, in batches."

    def handle(self, *args: Any, **options: Any) -> None:
        run = jobs.idempotency_reap_job()
        self.stdout.write(f"{run.fixed} idempotency key(s) deleted, "
                          f"{run.details['job_runs_pruned']} old job run(s) pruned")
