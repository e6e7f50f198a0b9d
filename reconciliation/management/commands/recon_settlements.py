"""`manage.py recon_settlements [--date YYYY-MM-DD] [--provider cielo ...]`: fetch, import, match
and settle settlement files now. Importing a file already imported changes nothing."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reconciliation import jobs


class Command(BaseCommand):
    help = ("Import each provider's settlement file (default: the lookback days up to "
            "yesterday), match it, settle matched captures and open breaks.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", type=date.fromisoformat, default=None,
                            help="One file day (UTC), e.g. 2026-01-05.")
        parser.add_argument("--provider", action="append", default=None,
                            help="Only this provider (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        run = jobs.settlements_job(day=options["date"], providers=options["provider"])
        self.stdout.write(json.dumps({"job_run": run.pk, "lines": run.examined,
                                      "settled": run.fixed, "breaks": run.broken,
                                      **run.details}, default=str))
        if run.error:
            raise CommandError(run.error, returncode=1)
