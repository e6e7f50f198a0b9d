"""The month-close reports in the back-office (a merchant's period, the trial balance, providers'
settlements and fees): the figures the ledger has, shown and exported, and the dashboard's
trend charts drawn as inline SVG with nothing fetched from elsewhere."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, timedelta

import openpyxl
import pytest
from django.urls import reverse
from django.utils import timezone

from backoffice.models import AuditEntry
from backoffice.selectors import trends
from ledger.models import Account
from reconciliation.models import BreakType
from reconciliation.services import BreakSpec, breaks_open
from tests.factories import staff_user
from tests.test_ledger_reports import month  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db


def _today() -> dict[str, str]:
    day = timezone.now().astimezone(UTC).date().isoformat()
    return {"start": day, "end": day}


def _csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content[:300]
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def test_the_period_report_page_ties_out_and_its_exports_carry_the_same_figures(client,
                                                                                month):  # noqa: F811
    staff_user("approver", client=client)
    params = {"merchant": month.id, "currency": "usd", **_today()}
    page = client.get(reverse("admin:backoffice_report_period"), params)
    text = page.content.decode()
    assert page.status_code == 200 and "Ties out" in text
    closing = sum(Account.objects.filter(merchant=month, currency="usd")
                  .values_list("balance", flat=True))
    rows = {row["line"]: row for row in _csv(client.get(
        reverse("admin:backoffice_report_period"), {**params, "format": "csv"}))}
    assert int(rows["opening"]["total"]) == 0
    assert int(rows["closing"]["total"]) == closing
    movement_lines = [row for name, row in rows.items()
                      if name not in ("opening", "closing") and not name.startswith("memo")]
    assert sum(int(row["total"]) for row in movement_lines) == closing
    assert rows["captures"]["pending"] == "14700" and rows["captures"]["pending_major"] == "147.00"
    assert rows["memo: fees kept by the platform from settlements"]["total"] == "321"
    assert f"{closing / 100:,.2f} USD" in text

    response = client.get(reverse("admin:backoffice_report_period"), {**params, "format": "xlsx"})
    sheet = openpyxl.load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    cells = list(sheet.iter_rows(values_only=True))
    by_line = {row[0]: dict(zip(cells[0], row, strict=True)) for row in cells[1:]}
    assert by_line["closing"]["total"] == closing
    assert by_line["closing"]["total_major"] == pytest.approx(closing / 100)
    assert AuditEntry.objects.filter(action="export", object_type="report.period").count() == 2


def test_a_bad_period_or_unknown_merchant_is_explained_on_the_page(client, month):  # noqa: F811
    staff_user("viewer", client=client)
    url = reverse("admin:backoffice_report_period")
    page = client.get(url, {"merchant": "acct_nobody", "currency": "usd", **_today()})
    assert "No merchant has this id." in page.content.decode()
    page = client.get(url, {"merchant": month.id, "currency": "usd", "start": "2026-03-02",
                            "end": "2026-03-01"})
    assert "The last day is before the first day." in page.content.decode()
    assert "Export CSV" not in page.content.decode()


def test_a_viewer_reads_reports_but_may_not_export_them(client, month):  # noqa: F811
    staff_user("viewer", client=client)
    params = {"merchant": month.id, "currency": "usd", **_today()}
    page = client.get(reverse("admin:backoffice_report_period"), params)
    assert page.status_code == 200 and "Export CSV" not in page.content.decode()
    assert client.get(reverse("admin:backoffice_report_period"),
                      {**params, "format": "csv"}).status_code == 403
    assert not AuditEntry.objects.filter(action="export").exists()


def test_the_trial_balance_sums_to_zero_on_the_page_and_in_the_export(client, month):  # noqa: F811
    staff_user("operator", client=client)
    as_of = (timezone.now() + timedelta(seconds=1)).astimezone(UTC)
    params = {"as_of": as_of.strftime("%Y-%m-%d %H:%M:%S")}
    page = client.get(reverse("admin:backoffice_report_trial_balance"), params)
    assert "Every currency sums to zero." in page.content.decode()
    rows = _csv(client.get(reverse("admin:backoffice_report_trial_balance"),
                           {**params, "format": "csv"}))
    assert len(rows) == Account.objects.exclude(version=0).count()
    assert sum(int(row["balance"]) for row in rows) == 0
    assert {row["code"] for row in rows} >= {"pending", "available", "fees",
                                             "provider_clearing:sandbox"}


def test_the_provider_report_attributes_settlements_and_fees_to_the_capturing_provider(
        client, month):  # noqa: F811
    staff_user("operator", client=client)
    rows = _csv(client.get(reverse("admin:backoffice_report_providers"),
                           {**_today(), "format": "csv"}))
    sandbox = next(row for row in rows if (row["provider"], row["currency"]) == ("sandbox", "usd"))
    assert (sandbox["captures"], sandbox["captured"]) == ("3", "14700")
    assert (sandbox["settlements"], sandbox["settled_gross"], sandbox["fees"],
            sandbox["settled_net"]) == ("2", "10700", "321", "10379")
    assert (sandbox["refunds"], sandbox["refunded"]) == ("1", "1000")
    assert (sandbox["payouts"], sandbox["paid_out"], sandbox["fees_major"]) == ("1", "3000",
                                                                                 "3.21")
    page = client.get(reverse("admin:backoffice_report_providers"), _today())
    assert "103.79 USD" in page.content.decode()


def test_the_dashboard_draws_its_trends_as_inline_svg(client, make_payment):
    for amount in (1_000, 2_500):
        make_payment(amount)
    make_payment(700, payment_method="pm_card_declined", state="failed")
    breaks_open(specs=[BreakSpec(type=BreakType.AMOUNT_MISMATCH, key=f"k{i}", provider="cielo")
                       for i in range(3)])
    figures = trends()
    assert figures.volume["usd"]["sandbox"][-1] == 3_500
    assert figures.success["sandbox"][-1] == pytest.approx(66.7)
    assert figures.open_breaks[-1] == 3 and len(figures.open_breaks) == 14
    staff_user("viewer", client=client)
    text = client.get(reverse("admin:index")).content.decode()
    charts = re.findall(r"<svg class=\"bo-chart\".*?</svg>", text, re.S)
    assert len(charts) == 3  # USD volume, success rate, open breaks
    assert "sandbox " in charts[0] and "35.00 USD" in charts[0]
    assert re.search(r"<title>sandbox \d\d-\d\d: 67%</title>", charts[1])
    assert "open breaks" in charts[2]
    # Nothing is fetched from another host: no script, stylesheet or image but our own.
    assert not re.search(r"""(src|href)=["']https?://""", text)
    assert "<script" not in "".join(charts)
