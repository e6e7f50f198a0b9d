"""Closing a month in a real browser, as finance staff do: a merchant's period report that ties
out and its spreadsheet, a filtered list exported as CSV, and a bank statement uploaded and
matched. Screenshots (period-report.png, export.png, bank-statement-import.png) go to the
`screenshots` folder (docs/screenshots/ with UPDATE_SCREENSHOTS=1, see conftest.py)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta

import openpyxl
import pytest
from django.urls import reverse
from django.utils import timezone

from backoffice.models import AuditEntry
from ledger.models import Account
from reconciliation.models import BankStatement
from tests.browser.test_backoffice_browser import _login, _staff, shot  # noqa: F401
from tests.factories import payments_insert
from tests.test_ledger_reports import month  # noqa: F401  (the fixture)
from tests.test_reconciliation_bank import (  # noqa: F401  (_test_mode_bank: a fixture)
    TODAY,
    Entry,
    _test_mode_bank,
    payout,
    settlement,
    statement_csv,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _read(download) -> bytes:
    with open(download.path(), "rb") as file:
        return file.read()


def test_a_period_report_ties_out_and_downloads_as_a_spreadsheet(
        browser_page, live_server, month, shot):  # noqa: F811  (fixtures)
    page = browser_page
    _staff("approver", "ada")
    _login(page, live_server, "ada")
    page.click("#bo-reports >> text=Merchant period report")
    today = timezone.now().astimezone(UTC).date().isoformat()
    page.fill("#id_merchant", month.id)
    page.select_option("#id_currency", "usd")
    page.fill("#id_start", today)
    page.fill("#id_end", today)
    page.click("#bo-report-form button[type=submit]")
    page.locator("#bo-ties-out.bo-ok").wait_for()
    closing = sum(Account.objects.filter(merchant=month, currency="usd")
                  .values_list("balance", flat=True))
    table = page.inner_text("#bo-period-table")
    assert f"{closing / 100:,.2f} USD" in table and "147.00 USD" in table  # captures
    shot(page, "period-report.png", full_page=True)

    with page.expect_download() as info:
        page.click("text=Export XLSX")
    sheet = openpyxl.load_workbook(io.BytesIO(_read(info.value))).active
    rows = {row[0]: row for row in sheet.iter_rows(values_only=True)}
    header = rows["line"]
    assert rows["closing"][header.index("total")] == closing
    assert AuditEntry.objects.get(action="export").object_type == "report.period"


def test_a_filtered_list_exports_exactly_its_rows_as_csv(browser_page, live_server, merchant,
                                                         shot):  # noqa: F811
    page = browser_page
    payments_insert(merchant, 120, prefix="pay_shop", amount=990, step=10,
                    description="order {i}", reference="shop-{i}")
    _staff("operator", "otis")
    _login(page, live_server, "otis")
    page.goto(live_server.url + reverse("admin:payments_payment_changelist"))
    page.fill("#searchbar", merchant.id)
    page.press("#searchbar", "Enter")
    page.wait_for_url(f"**?q={merchant.id}")
    shot(page, "export.png")
    with page.expect_download() as info:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(_read(info.value).decode("utf-8-sig"))))
    assert len(rows) == 120 and {row["merchant_id"] for row in rows} == {merchant.id}
    assert sum(int(row["amount"]) for row in rows) == sum(990 + 10 * i for i in range(1, 121))
    assert rows[0]["amount_major"] == "10.00"
    audit = AuditEntry.objects.get(action="export")
    assert audit.after["filters"] == {"q": merchant.id} and audit.actor.username == "otis"


def test_a_bank_statement_is_uploaded_and_matched(browser_page, live_server, api, shot,  # noqa: F811
                                                  tmp_path):
    page = browser_page
    day = TODAY - timedelta(days=3)
    settlement("cielo", day, ("capture", 10_000, 250), ("capture", 5_000, 125))
    paid = payout(api, 12_345)
    path = tmp_path / "statement.csv"
    path.write_bytes(statement_csv([
        Entry(day + timedelta(days=1), 14_625, True, "B1", party="CIELO SA",
              remittance=f"LIQUIDACAO {day:%Y%m%d}"),
        Entry(TODAY, 12_345, False, "B2", end_to_end=paid.id, party="Merchant"),
        Entry(TODAY, 77, False, "B3", remittance="account fee")], statement_id="STMT-UI"))
    _staff("operator", "olga")
    _login(page, live_server, "olga")
    page.goto(live_server.url + reverse("admin:reconciliation_bankstatement_changelist"))
    page.click("text=Import a bank statement")
    page.set_input_files("input[type=file]", str(path))
    page.click("#content form [type=submit]")
    message = page.locator(".messagelist .success")
    message.wait_for()
    statement = BankStatement.objects.get()
    assert f"Imported {statement.id}: 3 lines, 2 matched, 1 new break(s)" in message.inner_text()
    shot(page, "bank-statement-import.png", full_page=True)
    assert AuditEntry.objects.get(action="bank_statement.import").object_id == statement.id
