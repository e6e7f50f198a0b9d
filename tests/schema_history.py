"""Shared by the migration tests: run a block on an older schema, then migrate forward again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets) -> None:  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@contextmanager
def migrated_back(targets) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The schema as of `targets` inside the block, the latest one again after it."""
    forward = MigrationExecutor(connection).loader.graph.leaf_nodes()
    migrate(targets)
    try:
        yield
    finally:
        migrate(forward)


def relkind(table: str) -> str:
    """'p' for a partitioned table, 'r' for a plain one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = %s", [table])
        return cursor.fetchone()[0]
