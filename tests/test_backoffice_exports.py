"""Exports from the back-office lists: the rows the list shows under its filters and search,
amounts in minor and major units, CSV and XLSX read back with their readers, formula-looking
text kept as text, an audit row per export, and the export permission."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import openpyxl
import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from backoffice.exports import header_of
from backoffice.models import AuditEntry
from tests.factories import MerchantFactory, payments_insert, staff_user

pytestmark = pytest.mark.django_db

EVERY_LIST = ["payments_payment", "payments_refund", "payments_dispute", "wallet_payout",
              "wallet_deposit", "ledger_posting", "reconciliation_reconciliationbreak",
              "reconciliation_settlementline", "backoffice_approvalrequest",
              "backoffice_auditentry"]


@pytest.fixture
def operator(client):
    return staff_user("operator", client=client)


def export_url(name: str, fmt: str = "csv") -> str:
    return reverse(f"admin:{name}_export", args=[fmt])


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content[:500]
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def sheet_rows(response) -> list[tuple]:
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    return list(sheet.iter_rows(values_only=True))


def read_xlsx(response) -> list[dict[str, object]]:
    rows = sheet_rows(response)
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.fixture
def shops():
    """Three merchants' payments: 40 in USD, 6 in JPY (no minor unit) with formula-looking
    descriptions, 3 in KWD (three decimals)."""
    usd, jpy, kwd = (MerchantFactory(name=name) for name in ("Usd Shop", "Yen Shop", "Dinar"))
    payments_insert(usd, 40, prefix="pay_usd", amount=1_000, step=25, reference="u{i}")
    payments_insert(jpy, 6, prefix="pay_jpy", currency="jpy", amount=500, reference="j{i}",
                    description="=HYPERLINK(\"http://evil.test\",\"{i}\")")
    payments_insert(kwd, 3, prefix="pay_kwd", currency="kwd", amount=1_000, step=1_001,
                    reference="k{i}", description="@SUM(A1:A9) -{i} +x")
    return usd, jpy, kwd


def test_the_csv_holds_the_rows_the_list_shows_with_minor_and_major_amounts(client, operator,
                                                                             shops):
    usd, jpy, kwd = shops
    # The list's own search (a merchant id) and filter (status) carry over to the export.
    rows = read_csv(client.get(export_url("payments_payment"),
                               {"q": usd.id, "status__exact": "created"}))
    assert len(rows) == 40 and {row["merchant_id"] for row in rows} == {usd.id}
    assert sum(int(row["amount"]) for row in rows) == sum(1_000 + i * 25 for i in range(1, 41))
    assert sum(Decimal(row["amount_major"]) for row in rows) == Decimal(
        sum(1_000 + i * 25 for i in range(1, 41))) / 100
    first = rows[0]  # newest first, like the list
    assert (first["id"], first["amount"], first["amount_major"]) == (
        "pay_usd0000000000000001", "1025", "10.25")

    yen = read_csv(client.get(export_url("payments_payment"), {"q": jpy.id}))
    assert {(row["amount"], row["amount_major"]) for row in yen} >= {("501", "501")}
    dinar = read_csv(client.get(export_url("payments_payment"), {"q": kwd.id}))
    assert [row["amount_major"] for row in dinar] == ["2.001", "3.002", "4.003"]
    # A cell a spreadsheet would run as a formula starts with an apostrophe.
    assert {row["description"][:2] for row in yen} == {"'="}
    assert {row["description"][:2] for row in dinar} == {"'@"}
    # Search nothing → nothing; an unknown filter value is ignored like the list ignores it.
    assert read_csv(client.get(export_url("payments_payment"), {"q": "pay_nothing"})) == []


def test_the_xlsx_reads_back_with_numbers_and_text_that_is_never_a_formula(client, operator,
                                                                          shops):
    _usd, jpy, kwd = shops
    rows = read_xlsx(client.get(export_url("payments_payment", "xlsx"), {"q": kwd.id}))
    assert [row["amount"] for row in rows] == [2_001, 3_002, 4_003]
    assert sum(Decimal(str(row["amount_major"])) for row in rows) == Decimal("9.006")
    assert rows[0]["description"] == "@SUM(A1:A9) -1 +x"  # as typed: a text cell
    yen = read_xlsx(client.get(export_url("payments_payment", "xlsx"), {"q": jpy.id}))
    assert all(str(row["description"]).startswith("=HYPERLINK") for row in yen)
    # Stored as text cells: openpyxl reads a formula back as data_type "f".
    workbook = openpyxl.load_workbook(io.BytesIO(b"".join(
        client.get(export_url("payments_payment", "xlsx"), {"q": jpy.id}).streaming_content)))
    cells = [row[0] for row in workbook.active.iter_rows(min_row=2, min_col=18, max_col=18)]
    assert cells and {cell.data_type for cell in cells} == {"s"}


def test_each_export_is_audited_with_its_filters(client, operator, shops):
    usd = shops[0]
    read_csv(client.get(export_url("payments_payment"), {"q": usd.id, "p": "3"}))
    row = AuditEntry.objects.get(action="export")
    assert (row.actor, row.object_type, row.object_id) == (operator, "payments.payment", "csv")
    assert row.after == {"format": "csv", "filters": {"q": usd.id}}
    assert usd.id in row.note


@pytest.mark.parametrize("name", EVERY_LIST)
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_every_list_exports_and_links_its_exports(client, operator, name, fmt):
    response = client.get(export_url(name, fmt))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment; filename=")
    model_admin = admin.site._registry[apps.get_model(*name.split("_", 1))]
    header = header_of(model_admin.export_columns)
    if fmt == "csv":
        body = b"".join(response.streaming_content).decode("utf-8-sig")
        assert next(csv.reader(io.StringIO(body))) == header
    else:
        assert list(sheet_rows(response)[0]) == header
    page = client.get(reverse(f"admin:{name}_changelist"), {"q": "x"})
    assert f'href="{export_url(name, fmt)}?q=x"' in page.content.decode()


def test_a_viewer_may_not_export_and_sees_no_export_button(client, shops):
    staff_user("viewer", client=client)
    assert client.get(export_url("payments_payment")).status_code == 403
    assert "Export CSV" not in client.get(reverse("admin:payments_payment_changelist")) \
        .content.decode()
    assert not AuditEntry.objects.filter(action="export").exists()


def test_an_unknown_format_is_a_400_and_audits_nothing(client, operator):
    response = client.get(export_url("payments_payment", "pdf"))
    assert response.status_code == 400 and b"Unknown export format" in response.content
    assert not AuditEntry.objects.filter(action="export").exists()
