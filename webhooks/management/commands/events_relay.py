"""Publish the event stream to one broker (long-running; one per broker): see webhooks/stream.py."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webhooks import stream


class Command(BaseCommand):
    help = ("Relay every event, in order and at least once, to a broker (redis | nats | kafka). "
            "Runs until SIGTERM/SIGINT, finishing the batch in hand; --once relays what is "
            "there now and exits.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sink", required=True, choices=stream.SINKS)
        parser.add_argument("--batch-size", type=int, default=stream.BATCH_SIZE)
        parser.add_argument("--poll-interval", type=float, default=0.5,
                            help="Seconds between looks at the outbox once caught up.")
        parser.add_argument("--once", action="store_true",
                            help="Publish until caught up, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        sink = stream.sink_from_settings(options["sink"])
        try:
            if options["once"]:
                total = 0
                while count := stream.relay_once(sink, batch_size=options["batch_size"]):
                    total += count
            else:
                stopping: list[int] = []
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda number, _frame: stopping.append(number))
                total = stream.relay_run(sink, batch_size=options["batch_size"],
                                         poll_interval=options["poll_interval"],
                                         should_stop=lambda: bool(stopping))
        finally:
            sink.close()
        self.stdout.write(f"{total} event(s) published to {options['sink']}")
