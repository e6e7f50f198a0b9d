"""Cursor pagination from the contract: `limit`, `starting_after`, `ending_before`, newest first.

Cursors are object ids. Order is (created_at, id) descending, so ties on created_at are stable.
The cursor object is looked up inside the same merchant-scoped queryset, so another merchant's id
is simply "not found" (404 with `param`), as is any id the list does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.request import Request

from core.db import replica_reads
from core.errors import InvalidRequest, NotFound

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# ASCII digits only: str.isdigit() also accepts "²" (int() then fails) and "١٠" (int() says 10).
_LIMIT = re.compile(r"[0-9]{1,3}")


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(raw)


def paginate(
    queryset: QuerySet, request: Request, serialize: Callable[[Any], dict]
) -> dict[str, Any]:
    """One page of `queryset`, read from the replica when one is configured (core.db): a list
    may trail the primary by the replica's replay delay; an object by id never does."""
    with replica_reads():
        return _page(queryset, request, serialize)


def _page(queryset: QuerySet, request: Request, serialize: Callable[[Any], dict]
          ) -> dict[str, Any]:
    params = request.query_params
    limit = parse_limit(params.get("limit"))
    after, before = params.get("starting_after"), params.get("ending_before")
    for param, cursor_id in (("starting_after", after), ("ending_before", before)):
        # A cursor names an object like any id: one this list does not hold (another
        # merchant's included) is 404, whatever else is wrong with the request.
        if cursor_id and not queryset.filter(pk=cursor_id).exists():
            raise NotFound(f"No such object: {cursor_id}.", param=param)
    if after and before:
        raise InvalidRequest("Use starting_after or ending_before, not both.",
                             param="ending_before")
    if after or before:
        cursor = queryset.filter(pk=after or before).values("created_at", "pk").first()
        older = Q(created_at__lt=cursor["created_at"]) | Q(
            created_at=cursor["created_at"], pk__lt=cursor["pk"]
        )
        newer = Q(created_at__gt=cursor["created_at"]) | Q(
            created_at=cursor["created_at"], pk__gt=cursor["pk"]
        )
        queryset = queryset.filter(older if after else newer)
    if before:
        # Walk upwards from the cursor, then present the page newest first like every page.
        rows = list(queryset.order_by("created_at", "pk")[: limit + 1])
        has_more = len(rows) > limit
        rows = list(reversed(rows[:limit]))
    else:
        rows = list(queryset.order_by("-created_at", "-pk")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
    return {"object": "list", "data": [serialize(row) for row in rows], "has_more": has_more}
