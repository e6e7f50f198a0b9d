"""Scans for card numbers at rest: every table's rows and any log text, for Luhn-valid runs of
13–19 digits. `manage.py pan_scan` runs it in production; the test suite runs it after every
database test and over every log line the suite wrote.

Runs inside hex or base62 strings (hashes, ids, tokens) are not card numbers, so a hit must not
touch letters or digits on either side."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import connection

from core.carddata import card_numbers, postgres_prefilter


@dataclass(frozen=True)
class Hit:
    where: str  # table name, or "log"
    sample: str  # masked: first 6 and last 4 digits only

    def __str__(self) -> str:
        return f"{self.where}: {self.sample}"


def _mask(digits: str) -> str:
    return f"{digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]}"


def find_in_text(text: str) -> Iterator[str]:
    for digits in card_numbers(text, standalone=True):
        yield _mask(digits)


def scan_text(lines: Iterable[str], where: str = "log") -> list[Hit]:
    return [Hit(where, sample) for line in lines for sample in find_in_text(line)]


def scan_database(*, exclude: Iterable[str] = ()) -> list[Hit]:
    """Every user table of the current database. A regex prefilter in SQL keeps it cheap; the
    Luhn check runs here on the few candidate rows."""
    skip = set(exclude)
    hits: list[Hit] = []
    with connection.cursor() as cursor:
        # A partitioned table's rows are read through it, not once more through each partition
        # (a detached month is a plain table again, and scanned).
        cursor.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace AND n.nspname = current_schema() "
                       "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition")
        tables = [row[0] for row in cursor.fetchall() if row[0] not in skip]
        for table in tables:
            cursor.execute(
                f'SELECT t::text FROM "{table}" t WHERE t::text ~ %s LIMIT 1000',  # noqa: S608
                [postgres_prefilter()])
            hits.extend(scan_text((row[0] for row in cursor.fetchall()), where=table))
    return hits
