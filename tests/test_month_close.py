"""A generated month closed in the back-office: 10,000 captured payments, a settlement file that
settles some of them with fees, refunds, disputes (won, lost, open), deposits, payouts and a
bank statement, all posted through the ledger's real paths (entries_post and the services), so
its triggers and constraints hold. Every period report — the month, each phase, and a cut in
the middle of the captures — ties out (opening + movements = closing) and its closing balance is
the ledger's as of the period's end; the exports, read back with csv and openpyxl, carry the
same totals.

Postings take the database clock (clock_timestamp()), so the month is compressed into the test's
run and periods are cut at clock readings taken between the phases."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import openpyxl
import pytest
from django.db import connection
from django.db.models import F, Sum
from django.urls import reverse
from django.utils import timezone

from ledger.models import AccountKind, EntryKind, Posting
from ledger.reports import balances_as_of, period_report, trial_balance
from ledger.services import EntrySpec, account_key, clearing_key, entries_post
from payments import services as payments
from payments.models import Dispute, Payment, PaymentStatus, Refund
from reconciliation.bank import bank_statement_import
from reconciliation.models import ReconciliationBreak
from reconciliation.settlements import settlement_import, settlement_settle
from tests.factories import payments_insert, staff_user
from tests.test_reconciliation_bank import (  # noqa: F401  (_test_mode_bank: a fixture)
    Entry,
    _test_mode_bank,
    payout,
    statement_csv,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
PAYMENTS, SETTLED, REFUNDS, DISPUTES = 10_000, 1_000, 100, 30
BATCH = 1_000
CURRENCY = "usd"
KINDS = ("available", "disputed", "pending", "reserved")


def clock() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def fee_of(gross: int) -> int:
    return gross * 29 // 1000  # 2.9 %


def _captures(merchant) -> None:
    """The captures' entries, as payments.services posts them (provider_clearing:cielo →
    pending), in batches through entries_post."""
    source = clearing_key(merchant=merchant, currency=CURRENCY, provider="cielo")
    target = account_key(merchant=merchant, currency=CURRENCY, kind=AccountKind.PENDING)
    rows = Payment.objects.filter(merchant=merchant).order_by("id").values_list("id", "amount")
    specs = [EntrySpec(kind=EntryKind.CAPTURE, lines=[(source, -amount), (target, amount)],
                       reference_type="payment", reference_id=pk, merchant=merchant,
                       description=f"Capture of {pk}") for pk, amount in rows]
    for start in range(0, len(specs), BATCH):
        entries_post(specs[start:start + BATCH])


def _settlement_file(merchant) -> bytes:
    day = timezone.now().strftime("%d/%m/%Y")
    lines = ["DataVenda;PaymentId;MerchantOrderId;Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;"
             "IdentificadorTransacao"]
    for pk, reference, amount in (Payment.objects.filter(merchant=merchant).order_by("id")
                                  .values_list("id", "provider_reference", "amount")[:SETTLED]):
        lines.append(f"{day};{reference};{pk};Venda;USD;{amount};{fee_of(amount)};"
                     f"{amount - fee_of(amount)};")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def month(merchant, api, capsys):
    """The month, phase by phase, with a clock reading between phases: returns the cuts."""
    began = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.perf_counter() - began - sum(phases.values())
        cuts.append(clock())

    cuts = [clock()]
    payments_insert(merchant, PAYMENTS, prefix="pay_month", amount=1_000, step=37,
                    provider="cielo", reference="cielo-month-{i}")
    rows = Payment.objects.filter(merchant=merchant)
    # Along the state table, set-based; the status trigger checks each row.
    rows.update(status=PaymentStatus.AUTHORIZATION_REQUESTED)
    rows.update(status=PaymentStatus.CAPTURED, amount_authorized=F("amount"),
                amount_captured=F("amount"))
    _captures(merchant)
    phase("payments and captures")

    file = settlement_import(provider="cielo", file_date=timezone.now().date(),
                             content=_settlement_file(merchant))
    assert file.matched == SETTLED, file
    settled = settlement_settle(file_id=file.file.id)
    assert settled.settled == SETTLED, settled
    phase("settlement file")

    ids = list(rows.order_by("id").values_list("id", "amount"))
    for pk, amount in ids[:REFUNDS]:  # settled payments, half refunded at the provider
        payments.refund_record_external(payment_id=pk, amount=amount // 2,
                                        provider_reference=f"cielo-refund-{pk}")
    disputes = [payments.dispute_open(payment_id=pk, provider_reference=f"cb-{pk}",
                                      reason="fraudulent")
                for pk, _ in ids[SETTLED:SETTLED + DISPUTES]]
    for n, dispute in enumerate(disputes[:20]):
        payments.dispute_resolve(dispute_id=dispute.id, won=n % 2 == 0)
    phase("refunds and disputes")

    paid = [payout(api, amount) for amount in (150_000, 42_042, 9_999)]
    phase("deposits and payouts")

    net = sum(amount - fee_of(amount) for _, amount in ids[:SETTLED])
    today = timezone.now().date()
    statement = bank_statement_import(content=statement_csv(
        [Entry(today, net, True, "B-CIELO", party="CIELO SA",
               remittance=f"LIQUIDACAO {today:%Y%m%d}"),
         *(Entry(today, row.amount, False, f"B-{row.id}", end_to_end=row.id, party="Merchant")
           for row in paid)], statement_id="MONTH-1"), format="csv")
    phase("bank statement")
    with connection.cursor() as cursor:  # the planner's statistics for the month's rows
        for table in ("ledger_posting", "ledger_account", "ledger_journalentry",
                      "payments_payment"):
            cursor.execute(f"ANALYZE {table}")
    with capsys.disabled():
        print(f"\nmonth: {PAYMENTS:,} payments, {SETTLED:,} settled from one file, "
              f"{REFUNDS} refunds, {DISPUTES} disputes (10 won, 10 lost), {len(paid)} deposits "
              f"and payouts, a {statement.lines}-line bank statement; "
              f"{Posting.objects.count():,} postings in {time.perf_counter() - began:.1f} s ("
              + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items()) + ")")
    return {"cuts": cuts, "statement": statement, "net": net, "merchant": merchant}


def ledger_sums(merchant, end: datetime) -> dict[str, int]:
    """Σ postings before `end` per balance type, read without the reports' code."""
    rows = (Posting.objects.filter(merchant=merchant, currency=CURRENCY, created_at__lt=end,
                                   account__merchant=merchant)
            .values_list("account__kind").annotate(total=Sum("amount")))
    return {kind: dict(rows).get(kind, 0) for kind in KINDS}


def as_of_balances(merchant, end: datetime) -> dict[str, int]:
    """The ledger's balances as of just before `end` (the period excludes its end)."""
    rows = balances_as_of(as_of=end - timedelta(microseconds=1), merchant=merchant)
    return {kind: sum(r.balance for r in rows if r.kind == kind and r.currency == CURRENCY)
            for kind in KINDS}


def test_a_generated_month_closes_to_the_cent(client, month):
    """One test, since building the month is most of its cost: the periods, then the exports."""
    every_period_ties_out_to_the_ledger(month)
    the_exports_read_back_with_the_same_totals(client, month)


def every_period_ties_out_to_the_ledger(month) -> None:
    merchant, cuts = month["merchant"], month["cuts"]
    mid_captures = Posting.objects.filter(
        merchant=merchant, entry__kind=EntryKind.CAPTURE).order_by("created_at") \
        .values_list("created_at", flat=True)[PAYMENTS // 2]
    moments = sorted([*cuts, mid_captures])
    periods = [*pairwise(moments), (moments[0], moments[-1]),
               (moments[1], moments[-2])]
    previous = None
    for start, end in periods:
        report = period_report(merchant=merchant, currency=CURRENCY, start=start, end=end)
        assert report.ties_out(), (start, end, report)
        assert {k: report.closing.get(k, 0) for k in KINDS} == as_of_balances(merchant, end)
        assert {k: report.closing.get(k, 0) for k in KINDS} == ledger_sums(merchant, end)
        assert {k: report.opening.get(k, 0) for k in KINDS} == ledger_sums(merchant, start)
        if previous is not None and previous.end == start:
            assert previous.closing == report.opening
        previous = report
    whole = period_report(merchant=merchant, currency=CURRENCY, start=moments[0],
                          end=moments[-1])
    captured = sum(Payment.objects.filter(merchant=merchant).values_list("amount", flat=True))
    assert whole.movement_total("captures") == captured
    fees = sum(fee_of(amount) for amount in Payment.objects.filter(
        merchant=merchant, status__in=["settled", "refunded"]).values_list("amount", flat=True))
    assert whole.fees == fees > 0
    refunded = sum(Refund.objects.filter(merchant=merchant).values_list("amount", flat=True))
    assert whole.movement_total("refunds") == -refunded
    lost = sum(Dispute.objects.filter(merchant=merchant, status="lost")
               .values_list("amount", flat=True))
    assert whole.movement_total("disputes") == -lost
    assert whole.movement_total("deposits") == 150_000 + 42_042 + 9_999
    assert whole.movement_total("payouts") == -(150_000 + 42_042 + 9_999)
    assert set(trial_balance(as_of=moments[-1]).totals().values()) == {0}
    # The bank statement agreed with the settlement deposit and the payouts: no bank break.
    statement = month["statement"]
    assert (statement.lines, statement.matched, statement.breaks) == (4, 4, 0)
    assert not ReconciliationBreak.objects.filter(type__startswith="bank_").exists()


def _download(client, url: str, params: dict[str, str]) -> bytes:
    response = client.get(url, params)
    assert response.status_code == 200, response.content[:300] if not response.streaming else ""
    return b"".join(response.streaming_content)


def _csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def the_exports_read_back_with_the_same_totals(client, month) -> None:
    merchant, cuts = month["merchant"], month["cuts"]
    staff_user("approver", "closer", client=client)
    end = cuts[-1]
    whole = period_report(merchant=merchant, currency=CURRENCY, start=cuts[0], end=end)

    # The period report of the days the month was built in (one, unless the run crossed
    # midnight UTC), exported: the same closing as the ledger's.
    first, last = (moment.astimezone(UTC).date().isoformat() for moment in (cuts[0], end))
    rows = {row["line"]: row for row in _csv(_download(
        client, reverse("admin:backoffice_report_period"),
        {"merchant": merchant.id, "currency": CURRENCY, "start": first, "end": last,
         "format": "csv"}))}
    assert {k: int(rows["closing"][k]) for k in KINDS} == ledger_sums(merchant, end)
    assert int(rows["captures"]["total"]) == whole.movement_total("captures")
    assert Decimal(rows["closing"]["total_major"]) == Decimal(whole.closing_total) / 100

    # Every balance transaction of the merchant, exported: Σ per balance type = the closing.
    postings = _csv(_download(client, reverse("admin:ledger_posting_export", args=["csv"]),
                              {"q": merchant.id}))
    assert len(postings) == Posting.objects.filter(merchant=merchant).count()
    sums = dict.fromkeys(KINDS, 0)
    for row in postings:
        if row["balance_type"] in sums:
            sums[row["balance_type"]] += int(row["amount"])
    assert sums == ledger_sums(merchant, end)
    assert sum(Decimal(row["amount_major"]) for row in postings) == Decimal(
        sum(int(row["amount"]) for row in postings)) / 100

    # The payments, as a spreadsheet: 10,000 rows and the captured total.
    sheet = openpyxl.load_workbook(io.BytesIO(_download(
        client, reverse("admin:payments_payment_export", args=["xlsx"]),
        {"q": merchant.id})), read_only=True).active
    header, *cells = list(sheet.iter_rows(values_only=True))
    captured = header.index("amount_captured")
    assert len(cells) == PAYMENTS
    assert sum(row[captured] for row in cells) == whole.movement_total("captures")

    # Providers: the file's fees and the ledger's agree to the cent.
    providers = _csv(_download(client, reverse("admin:backoffice_report_providers"),
                               {"start": first, "end": last, "format": "csv"}))
    cielo = next(row for row in providers if (row["provider"], row["currency"]) == (
        "cielo", CURRENCY))
    assert (int(cielo["captures"]), int(cielo["fees"]), int(cielo["file_fees"]),
            int(cielo["fee_difference"])) == (PAYMENTS, whole.fees, whole.fees, 0)
    assert int(cielo["settled_net"]) == int(cielo["file_net"]) == month["net"]
