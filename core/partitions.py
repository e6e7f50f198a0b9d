"""Monthly history partitions (PostgreSQL declarative partitioning by RANGE on a timestamp):
turning a table into one, creating the months ahead, listing and detaching old months.

A partitioned table here has one partition per calendar month (UTC), named
`<table>_yYYYYmMM`, and a DEFAULT partition `<table>_default` so an insert never fails because
the job that creates months ahead did not run; rows landing there show up in `partitions_list`
and stop that month's partition from being created until they are moved (the job says so).
Generic on purpose: it reads the table's definition from the catalog and names no app's table.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db import connection, transaction

logger = logging.getLogger(__name__)

MONTHS_AHEAD = 3
_DETACHABLE: set[str] = set()
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Partition:
    table: str  # the partitioned table
    name: str
    month: date | None  # the month's first day; None for the DEFAULT partition
    rows_estimate: int


def _month(value: date) -> date:
    return date(value.year, value.month, 1)


def _next_month(value: date) -> date:
    return date(value.year + value.month // 12, value.month % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def _bound(month: date) -> str:
    return f"{month.isoformat()} 00:00:00+00"


def partitioned_tables() -> list[tuple[str, str]]:
    """(table, partition key column) of every range-partitioned table in the schema."""
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.relname, a.attname FROM pg_partitioned_table p
              JOIN pg_class c ON c.oid = p.partrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
             WHERE p.partstrat = 'r' AND NOT c.relispartition ORDER BY c.relname""")
        return [(table, column) for table, column in cursor.fetchall()]


def partitions_list(table: str) -> list[Partition]:
    """The table's attached partitions, months in order, then the DEFAULT one."""
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), greatest(c.reltuples, 0)::bigint
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = %s::regclass ORDER BY c.relname""", [table])
        rows = cursor.fetchall()
    months, default = [], []
    for name, bound, estimate in rows:
        if bound == "DEFAULT":
            default.append(Partition(table, name, None, estimate))
        else:
            start = bound.split("'")[1][:10]  # FOR VALUES FROM ('2026-12-01 00:00:00+00') TO …
            months.append(Partition(table, name, date.fromisoformat(start), estimate))
    return sorted(months, key=lambda p: p.month) + default


def _checked(name: str) -> str:
    """A table or column name this module puts into SQL: plain identifiers only."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def month_create(table: str, month: date) -> bool:
    """Create `month`'s partition of `table` unless it exists; True when it was created."""
    month = _month(month)
    name = partition_name(_checked(table), month)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        if cursor.fetchone()[0]:
            return False
        cursor.execute(f'CREATE TABLE "{name}" PARTITION OF "{table}" '
                       f"FOR VALUES FROM ('{_bound(month)}') TO ('{_bound(_next_month(month))}')")
    return True


def months_ensure(*, months_ahead: int = MONTHS_AHEAD, today: date | None = None
                  ) -> list[str]:
    """Create this month's and the next `months_ahead` months' partitions of every partitioned
    table; the names created. A month whose rows already sit in the DEFAULT partition cannot be
    created (PostgreSQL refuses): that is logged, and the other months still are."""
    month = _month(today or datetime.now(tz=UTC).date())
    created = []
    for table, _column in partitioned_tables():
        current = month
        for _ in range(months_ahead + 1):
            try:
                with transaction.atomic():
                    if month_create(table, current):
                        created.append(partition_name(table, current))
            except Exception:
                logger.exception("partitions: could not create %s (rows for that month in "
                                 "%s_default? move them out, then run history_partitions again)",
                                 partition_name(table, current), table)
            current = _next_month(current)
    return created


def detachable_register(table: str) -> None:
    """Let `month_detach` retire `table`'s old months (an app registers its own tables; the
    ledger registers none: ledger_verify sums every posting ever made)."""
    _DETACHABLE.add(table)


def month_detach(table: str, month: date) -> str:
    """Detach `month`'s partition from `table`: its rows leave every query of the table (and
    the API) but stay in a plain table of the same name, to archive (pg_dump -t) and drop."""
    if table not in _DETACHABLE:
        raise ValueError(f"{table}'s months may not be detached (only "
                         f"{', '.join(sorted(_DETACHABLE)) or 'none'})")
    name = partition_name(_checked(table), _month(month))
    if name not in {p.name for p in partitions_list(table)}:
        raise ValueError(f"{table} has no attached partition for {month:%Y-%m}")
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')
    return name


@dataclass(frozen=True)
class _Definition:
    """What `CREATE TABLE … (LIKE …)` does not copy: indexes, unique constraints, foreign keys,
    triggers."""

    indexes: list[str]
    uniques: list[tuple[str, str]]
    foreign_keys: list[tuple[str, str]]
    triggers: list[str]


def _definition(table: str) -> _Definition:
    with connection.cursor() as cursor:
        # Indexes that back a constraint come back with their constraint, below.
        cursor.execute("""SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()
                           AND tablename = %s AND indexname NOT IN (
                               SELECT conindid::regclass::text FROM pg_constraint
                                WHERE conrelid = %s::regclass AND contype IN ('p', 'u'))""",
                       [table, table])
        indexes = [row[0] for row in cursor.fetchall()]
        constraints = {}
        for kind in ("u", "f"):
            cursor.execute("""SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
                               WHERE conrelid = %s::regclass AND contype = %s
                               ORDER BY conname""", [table, kind])
            constraints[kind] = cursor.fetchall()
        cursor.execute("""SELECT pg_get_triggerdef(oid) FROM pg_trigger
                           WHERE tgrelid = %s::regclass AND NOT tgisinternal
                             AND tgparentid = 0""", [table])
        return _Definition(indexes, constraints["u"], constraints["f"],
                           [row[0] for row in cursor.fetchall()])


def _unique_with(definition: str, column: str, *, partitioned: bool) -> str:
    """`UNIQUE (a, b)` → `UNIQUE (a, b, column)` for a partitioned table (its unique keys must
    hold the partition key), and back for a plain one."""
    head, columns = definition.split("(", 1)
    names = [name.strip() for name in columns.rsplit(")", 1)[0].split(",")]
    names = [name for name in names if name.strip('"') != column]
    if partitioned:
        names.append(column)
    return f"{head}({', '.join(names)})"


def _rebuild(table: str, *, partition_by: str | None, key: tuple[str, ...], column: str,
             months: tuple[date, date] | None = None) -> None:
    """Copy `table` into a new table of the same name (partitioned by month on `partition_by`,
    or plain), with `key` as its primary key and the old one's definition; unique constraints
    gain (or lose) the month `column`."""
    definition = _definition(_checked(table))
    old = f"{table}_before_rebuild"
    partitioned = f' PARTITION BY RANGE ("{partition_by}")' if partition_by else ""
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{old}"')
        cursor.execute(f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS '
                       f"INCLUDING CONSTRAINTS){partitioned}")
    if months is not None:
        month, last = months
        while month <= last:
            month_create(table, month)
            month = _next_month(month)
    columns = ", ".join(f'"{name}"' for name in key)
    with connection.cursor() as cursor:
        if partition_by:
            cursor.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
        cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{old}"')  # noqa: S608 (names: _checked)
        cursor.execute(f'DROP TABLE "{old}" CASCADE')
        cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" '
                       f"PRIMARY KEY ({columns})")
        for statement in definition.indexes:
            cursor.execute(statement)
        for name, constraint in definition.uniques:
            cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" '
                           f"{_unique_with(constraint, column, partitioned=bool(partition_by))}")
        for name, constraint in definition.foreign_keys:
            cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {constraint}')
        for statement in definition.triggers:
            cursor.execute(statement)


def table_partition_by_month(table: str, column: str, *, keep_unique: str,
                             today: date | None = None) -> None:
    """Rebuild `table` (with its rows) as a table partitioned by month on `column`: same
    columns, defaults, CHECK and NOT NULL constraints, outgoing foreign keys, indexes and
    triggers; the primary key becomes (`keep_unique`, `column`). Foreign keys pointing at the
    table must be dropped first (a partitioned table's unique keys include the partition key).
    Partitions: every month that has rows, through MONTHS_AHEAD months from now, and DEFAULT.
    One transaction (the migration's); it copies every row, so plan a window for big tables."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT min("{column}") FROM "{_checked(table)}"')  # noqa: S608
        oldest = cursor.fetchone()[0]
    now = today or datetime.now(tz=UTC).date()
    last = _month(now)
    for _ in range(MONTHS_AHEAD):
        last = _next_month(last)
    first = _month(oldest.astimezone(UTC).date() if oldest else now)
    _rebuild(table, partition_by=column, key=(keep_unique, column), column=column,
             months=(first, last))


def table_unpartition(table: str, *, primary_key: str, column: str = "created_at") -> None:
    """The reverse of `table_partition_by_month` (the attached partitions' rows): a plain
    table again, keyed by `primary_key`, with the same indexes, foreign keys and triggers, and
    its unique constraints without the month `column`."""
    _rebuild(table, partition_by=None, key=(primary_key,), column=column)
