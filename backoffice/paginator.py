"""A paginator for tables with millions of rows: it counts at most CAP + 1 of them.

The admin's change list asks the paginator for a count on every page view; an exact COUNT(*) of
a large table (or of a broad filter) scans it all. Past the cap the page says "more than …".
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if hasattr(rows, "order_by"):
            return rows.order_by()[: self.cap + 1].count()
        return len(rows)

    @property
    def is_capped(self) -> bool:
        return self.count > self.cap
