"""Send every due webhook delivery now (what the beat sweeper does), e.g. after a broker outage."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webhooks import services


class Command(BaseCommand):
    help = "Send due webhook deliveries (lost tasks and retries). Safe to run concurrently."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=services.SWEEP_BATCH_SIZE)
        parser.add_argument("--concurrency", type=int, default=services.SWEEP_CONCURRENCY)
        parser.add_argument("--time-budget", type=float, default=None,
                            help="Stop starting new batches after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        attempts = services.delivery_sweep(batch_size=options["batch_size"],
                                           concurrency=options["concurrency"],
                                           time_budget=options["time_budget"])
        self.stdout.write(f"{attempts} delivery attempt(s) made")
