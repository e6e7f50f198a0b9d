"""Read replicas: with `DATABASE_REPLICA_URL` set, reads that may be a little stale (list pages,
inside `replica_reads()`) go to the replica; every other read stays on the primary.

Opt-in, not opt-out: a read goes to the replica only inside `replica_reads()` (core.pagination
wraps every list page in it), and even there it stays on the primary when it must be fresh:
inside a transaction (locks, money decisions, idempotency records are all read in one) and
after this request or task wrote anything (read-your-write). A replica lags by up to its replay
delay, so a payment created a moment ago may be missing from a list page, never from
`GET /payments/{id}`, an idempotent retry or a refund's limit check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"
_replica_allowed: ContextVar[bool] = ContextVar("replica_allowed", default=False)
_wrote: ContextVar[bool] = ContextVar("wrote_to_primary", default=False)


@contextlib.contextmanager
def replica_reads() -> Iterator[None]:
    """Reads in this block may go to the replica (when one is configured and nothing above
    requires the primary)."""
    token = _replica_allowed.set(True)
    try:
        yield
    finally:
        _replica_allowed.reset(token)


def forget_writes(**_kwargs: Any) -> None:
    """A new request (or task) starts unpinned: its own writes pin it again."""
    _wrote.set(False)


def read_alias() -> str:
    """Where a read issued now goes."""
    if (not _replica_allowed.get() or _wrote.get() or REPLICA not in connections.databases
            or connections[DEFAULT_DB_ALIAS].in_atomic_block):
        return DEFAULT_DB_ALIAS
    return REPLICA


class PrimaryReplicaRouter:
    """Writes and migrations: the primary. Reads: `read_alias()`."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        return read_alias()

    def db_for_write(self, model: type, **hints: Any) -> str:
        _wrote.set(True)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS
