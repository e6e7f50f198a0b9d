"""Reads every app's selectors share: one row by id (or a 404 that names it) and list filters
that narrow only when given."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from core.errors import NotFound

RowT = TypeVar("RowT", bound=Model)


def one_or_404(rows: QuerySet[RowT], pk: Any, *, noun: str, param: str = "id") -> RowT:
    """The row of `rows` (already scoped to its merchant where the caller is one) with this id,
    or NotFound: "No such <noun>: '<pk>'." (another merchant's row is not found either)."""
    row = rows.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"No such {noun}: '{pk}'.", param=param)
    return row


def narrowed(rows: QuerySet[RowT], **lookups: Any) -> QuerySet[RowT]:
    """`rows` filtered by each lookup given a value; a missing (None) or blank one does not
    narrow, as a list's optional query parameters expect."""
    return rows.filter(**{lookup: value for lookup, value in lookups.items() if value})
