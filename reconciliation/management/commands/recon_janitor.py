"""`manage.py recon_janitor`: ask providers about stuck payments, refunds, payouts and deposits
now (what beat runs every five minutes). Safe to run while beat's janitor runs: claims are
leased rows."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reconciliation import jobs


class Command(BaseCommand):
    help = ("Look up stuck authorizations, captures, voids, refunds, payouts and deposits at "
            "their providers and apply definite answers.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--time-budget", type=float, default=None,
                            help="Stop claiming new checks after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        run = jobs.janitor_job(time_budget=options["time_budget"])
        if run is None:
            self.stdout.write(json.dumps({"job_run": None, "skipped": "another janitor is "
                                          "running; it covers what is due"}))
            return
        self.stdout.write(json.dumps({"job_run": run.pk, "examined": run.examined,
                                      "fixed": run.fixed, "broken": run.broken,
                                      **run.details}, default=str))
