"""`manage.py history_partitions`: create the coming months' partitions (daily on beat), list
them, or detach an old month (core.partitions)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import partitions


class Command(BaseCommand):
    help = ("Create this month's and the next months' partitions of every partitioned history "
            "table (the default), --list them, or --detach TABLE YYYY-MM.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--months-ahead", type=int, default=partitions.MONTHS_AHEAD)
        parser.add_argument("--list", action="store_true")
        parser.add_argument("--detach", nargs=2, metavar=("TABLE", "YYYY-MM"))

    def handle(self, *args: Any, **options: Any) -> None:
        if options["detach"]:
            table, month = options["detach"]
            try:
                name = partitions.month_detach(table, date.fromisoformat(f"{month}-01"))
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{name} detached: its rows are no longer part of {table}; "
                              f"archive it (pg_dump -t {name}) and then DROP TABLE {name}")
            return
        if not options["list"]:
            for name in partitions.months_ensure(months_ahead=options["months_ahead"]):
                self.stdout.write(f"created {name}")
        for table, column in partitions.partitioned_tables():
            self.stdout.write(f"{table} (by month of {column}):")
            for partition in partitions.partitions_list(table):
                month = f"{partition.month:%Y-%m}" if partition.month else "DEFAULT"
                self.stdout.write(f"  {month}  {partition.name}  ~{partition.rows_estimate} rows")
