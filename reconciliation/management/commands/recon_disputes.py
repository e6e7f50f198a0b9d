"""`manage.py recon_disputes`: ask providers where open disputes stand and send the "evidence
due soon" reminders now (what beat runs every RECON_DISPUTES_INTERVAL_SECONDS)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from reconciliation import jobs


class Command(BaseCommand):
    help = ("Look up open disputes at their providers (decisions found there are applied) and "
            "remind merchants of evidence due within DISPUTE_REMINDER_HOURS.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = jobs.disputes_job()
        self.stdout.write(json.dumps({"job_run": run.pk, "examined": run.examined,
                                      "decided": run.fixed, **run.details}, default=str))
