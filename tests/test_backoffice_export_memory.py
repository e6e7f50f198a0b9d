"""A 100,000-row export takes the memory of one chunk: the peak Python allocation (tracemalloc)
while streaming 100,000 payments as CSV, and while building them as XLSX, is within a small
factor of the peak for 10,000 rows. XLSX is measured at 20,000 against 2,000 rows (openpyxl
writes a few thousand rows a second under tracemalloc) with 250-row chunks, so that the smaller
export is already several chunks long (one chunk is the flat part: 2,000 rows is one default
chunk). A memory bound, not a timing: figures are printed and recorded in docs/BENCHMARKS.md."""

from __future__ import annotations

import tracemalloc

import pytest
from django.db import connection
from django.urls import reverse

from backoffice import exports
from core.models import Merchant
from tests.factories import MerchantFactory, payments_insert, staff_user

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
SIZES = {"csv": (10_000, 100_000), "xlsx": (2_000, 20_000)}


@pytest.fixture
def merchants(client) -> dict[int, Merchant]:
    """A merchant per export size, with that many payments."""
    by_size = {}
    for size in sorted({size for sizes in SIZES.values() for size in sizes}):
        by_size[size] = MerchantFactory(name=f"{size:,} payments")
        payments_insert(by_size[size], size, prefix=f"pay_{size}_", reference=f"{size}-{{i}}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payments_payment")
    staff_user("operator", "fin", client=client)
    return by_size


def _peak(client, merchant, fmt: str) -> tuple[int, int, int]:
    """(peak bytes allocated while the export ran, bytes sent, data rows)."""
    url = reverse("admin:payments_payment_export", args=[fmt])
    tracemalloc.start()
    try:
        response = client.get(url, {"q": merchant.id})
        assert response.status_code == 200
        size = rows = 0
        for block in response.streaming_content:  # read and dropped, as a client would
            size += len(block)
            rows += block.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size, rows - 1


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_peak_memory_of_an_export_does_not_grow_with_its_rows(client, merchants, fmt, capsys,
                                                              monkeypatch):
    if fmt == "xlsx":
        monkeypatch.setattr(exports, "CHUNK_ROWS", 250)
    small_rows, large_rows = SIZES[fmt]
    small, large = merchants[small_rows], merchants[large_rows]
    _peak(client, small, fmt)  # warm: imports, templates, the admin's first-use caches
    peak_small, size_small, rows_small = _peak(client, small, fmt)
    peak_large, size_large, rows_large = _peak(client, large, fmt)
    if fmt == "csv":
        assert (rows_small, rows_large) == (small_rows, large_rows)
    assert size_large > 8 * size_small  # ten times the rows went out...
    with capsys.disabled():
        print(f"\n{fmt} export peak memory: {small_rows:,} rows {peak_small / 2**20:.2f} MiB "
              f"({size_small / 2**20:.1f} MiB sent), {large_rows:,} rows "
              f"{peak_large / 2**20:.2f} "
              f"MiB ({size_large / 2**20:.1f} MiB sent), ratio {peak_large / peak_small:.2f}")
    assert peak_large < 1.5 * peak_small  # ...in the memory of about one chunk
