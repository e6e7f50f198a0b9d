"""The month-close reports in the back-office: a merchant's period report (opening balance, each
kind of movement, closing balance, tied to the ledger), the trial balance as of a moment, and a
per-provider settlement and fee report; each shown as a page and exported as CSV or XLSX.

The figures come from `ledger.reports` (postings only) and, for what the providers' settlement
files said, from reconciliation's settlement lines; each page reads in one snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from backoffice.exports import (
    FORMATS,
    Column,
    cells_of,
    columns,
    export_allowed,
    export_audit,
    file_response,
    header_of,
    money,
)
from core.models import Merchant
from core.money import CURRENCIES, format_amount
from ledger.models import MERCHANT_KINDS, EntryKind
from ledger.reports import (
    CATEGORIES,
    PeriodReport,
    one_snapshot,
    period_report,
    provider_report,
    trial_balance,
)
from reconciliation.models import MatchStatus, SettlementLine

VIEW_PERMISSION = "ledger.view_posting"  # every role reads the ledger
MAX_PERIOD_DAYS = 366
KINDS = sorted(MERCHANT_KINDS)  # available, disputed, pending, reserved
TRIAL_BALANCE_ROWS_SHOWN = 500


# -- forms -----------------------------------------------------------------------------------
def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


class PeriodForm(forms.Form):
    """A period of whole UTC days, `start` to `end` inclusive (the report's end is midnight
    after `end`), at most 366 days."""

    start = forms.DateField(help_text="First day (UTC), YYYY-MM-DD.")
    end = forms.DateField(help_text="Last day (UTC), included.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("start") and data.get("end"):
            if data["end"] < data["start"]:
                raise forms.ValidationError("The last day is before the first day.")
            if (data["end"] - data["start"]).days >= MAX_PERIOD_DAYS:
                raise forms.ValidationError("A report covers at most 366 days.")
        return data

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        data = self.cleaned_data
        return _day_start(data["start"]), _day_start(data["end"] + timedelta(days=1))


class MerchantPeriodForm(PeriodForm):
    merchant = forms.CharField(max_length=64, help_text="Merchant id (acct_…).")
    currency = forms.ChoiceField(choices=[(code, code.upper()) for code in sorted(CURRENCIES)])

    def clean_merchant(self) -> Merchant:
        merchant = Merchant.objects.filter(pk=self.cleaned_data["merchant"].strip()).first()
        if merchant is None:
            raise forms.ValidationError("No merchant has this id.")
        return merchant


class AsOfForm(forms.Form):
    as_of = forms.DateTimeField(help_text="UTC, YYYY-MM-DD HH:MM:SS (balances after every "
                                          "posting up to and including it).")

    def clean_as_of(self) -> datetime:
        moment = self.cleaned_data["as_of"]
        return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def _month_so_far() -> dict[str, str]:
    today = timezone.now().astimezone(UTC).date()
    return {"start": today.replace(day=1).isoformat(), "end": today.isoformat()}


# -- the reports as tables -------------------------------------------------------------------
@dataclass
class Table:
    """A report's rows as records, the columns they export with, and how the page shows them."""

    spec: tuple[Column, ...]
    records: list[dict[str, Any]]

    def display(self) -> list[list[str]]:
        """Each row's cells for the page: money formatted with its currency, the rest as is."""
        shown = []
        for record in self.records:
            shown.append([format_amount(record[column.path], record[column.currency])
                          if column.currency and record[column.path] is not None
                          else ("" if record[column.path] is None else str(record[column.path]))
                          for column in self.spec])
        return shown

    @property
    def headers(self) -> list[str]:
        return [column.header for column in self.spec]

    def export_rows(self) -> Iterable[list[Any]]:
        return (cells_of(record, self.spec) for record in self.records)


def period_table(report: PeriodReport) -> Table:
    """Opening, one line per movement category (and the platform's fees, a memo line), closing:
    each with the four balance types and their total."""
    def line(name: str, amounts: dict[str, int]) -> dict[str, Any]:
        row = {kind: amounts.get(kind, 0) for kind in KINDS}
        return {"line": name, "currency": report.currency, **row, "total": sum(row.values())}

    records = [line("opening", report.opening)]
    records += [line(category, report.movements.get(category, {})) for category in CATEGORIES]
    records.append(line("closing", report.closing))
    records.append({"line": "memo: fees kept by the platform from settlements",
                    "currency": report.currency, **dict.fromkeys(KINDS), "total": report.fees})
    spec = columns("line", "currency", *(money(kind) for kind in KINDS), money("total"))
    return Table(spec, records)


def trial_balance_table(as_of: datetime) -> tuple[Table, Table]:
    """Every account's balance at `as_of`, and a summary by account code with the zero total of
    each currency (what a sound double-entry ledger must show)."""
    balance = trial_balance(as_of=as_of)
    accounts = Table(columns("account_id", "code", "merchant_id", "shard", "currency",
                             money("balance")),
                     [{"account_id": row.account_id, "code": row.code,
                       "merchant_id": row.merchant_id or "", "shard": row.shard,
                       "currency": row.currency, "balance": row.balance}
                      for row in sorted(balance.rows, key=lambda r: (r.currency, r.code,
                                                                     r.merchant_id or "",
                                                                     r.shard))])
    summary = [{"code": code, "currency": currency, "balance": amount}
               for (code, currency), amount in sorted(balance.by_code().items(),
                                                      key=lambda item: (item[0][1], item[0][0]))]
    summary += [{"code": "TOTAL (must be 0)", "currency": currency, "balance": amount}
                for currency, amount in sorted(balance.totals().items())]
    return accounts, Table(columns("code", "currency", money("balance")), summary)


def _settlement_files(start: datetime, end: datetime) -> dict[tuple[str, str], dict[str, int]]:
    """What the providers' settlement files dated in the period said, per provider/currency."""
    lines = (SettlementLine.objects
             .filter(file__file_date__gte=start.date(), file__file_date__lt=end.date())
             .values("provider", "currency")
             .annotate(file_lines=Count("id"),
                       file_unmatched=Count("id", filter=~Q(status=MatchStatus.MATCHED)),
                       file_gross=Sum("gross", filter=Q(type="capture")),
                       file_refunds=Sum("gross", filter=Q(type="refund")),
                       file_fees=Sum("fee"), file_net=Sum("net"))
             .order_by())
    return {(row.pop("provider"), row.pop("currency")): {k: int(v or 0) for k, v in row.items()}
            for row in lines}


PROVIDER_SPEC = columns(
    "provider", "currency", "captures", money("captured"), "refunds", money("refunded"),
    "chargebacks", money("charged_back"), "payouts", money("paid_out"), "settlements",
    money("settled_gross"), money("fees"), money("settled_net"), "file_lines",
    "file_unmatched", money("file_gross"), money("file_refunds"), money("file_fees"),
    money("file_net"), money("fee_difference"))


def provider_table(start: datetime, end: datetime) -> Table:
    """Per provider and currency: the ledger's captures, refunds, charge-backs, payouts and
    settlements (gross, fee, net), next to what its settlement files said; the fee difference
    (ledger − files) is zero when every line was settled as filed."""
    files = _settlement_files(start, end)
    ledger = {(row.provider, row.currency): row for row in provider_report(start=start, end=end)}
    records = []
    for key in sorted(set(files) | set(ledger)):
        row, filed = ledger.get(key), files.get(key, {})
        counts = row.counts if row else {}
        clearing = row.clearing if row else {}
        fees = row.fees if row else 0
        records.append({
            "provider": key[0], "currency": key[1],
            "captures": counts.get(EntryKind.CAPTURE, 0),
            "captured": -clearing.get(EntryKind.CAPTURE, 0),
            "refunds": counts.get(EntryKind.REFUND_SUCCEEDED, 0),
            "refunded": clearing.get(EntryKind.REFUND_SUCCEEDED, 0),
            "chargebacks": counts.get(EntryKind.DISPUTE_LOST, 0),
            "charged_back": clearing.get(EntryKind.DISPUTE_LOST, 0),
            "payouts": counts.get(EntryKind.PAYOUT_PAID, 0),
            "paid_out": clearing.get(EntryKind.PAYOUT_PAID, 0),
            "settlements": counts.get(EntryKind.SETTLEMENT, 0),
            "settled_gross": row.settled_gross if row else 0, "fees": fees,
            "settled_net": row.settled_net if row else 0,
            **{name: filed.get(name, 0) for name in ("file_lines", "file_unmatched",
                                                     "file_gross", "file_refunds",
                                                     "file_fees", "file_net")},
            "fee_difference": fees - filed.get("file_fees", 0)})
    return Table(PROVIDER_SPEC, records)


# -- pages -----------------------------------------------------------------------------------
def _page(site: admin.AdminSite, request: HttpRequest, template: str, title: str,
          **context: Any) -> TemplateResponse:
    query = request.GET.copy()
    query.pop("format", None)
    links = [(fmt.upper(), f"?{query.urlencode()}&format={fmt}") for fmt in FORMATS] \
        if export_allowed(request) and context.get("ready") else []
    return TemplateResponse(request, f"admin/backoffice/reports/{template}", {
        **site.each_context(request), "title": title, "export_links": links,
        "report_links": REPORT_LINKS, **context})


def _export(request: HttpRequest, table: Table, *, what: str, name: str) -> HttpResponse:
    fmt = request.GET["format"]
    filters = {key: value for key, value in request.GET.items() if key != "format"}
    export_audit(request, what=what, fmt=fmt, filters=filters)
    return file_response(fmt, header_of(table.spec), table.export_rows(), filename=name)


def _wants_export(request: HttpRequest) -> bool:
    fmt = request.GET.get("format")
    if fmt is None:
        return False
    if not export_allowed(request):
        raise PermissionDenied("Exports need the back-office export permission "
                               "(operator, approver or admin role).")
    if fmt not in FORMATS:
        raise BadRequest(f"Unknown export format '{fmt}': use csv or xlsx.")
    return True


def period_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    form = MerchantPeriodForm(request.GET or None, initial=_month_so_far())
    if not form.is_valid():
        return _page(site, request, "period.html", "Merchant period report", form=form)
    merchant, currency = form.cleaned_data["merchant"], form.cleaned_data["currency"]
    start, end = form.bounds
    with one_snapshot():
        report = period_report(merchant=merchant, currency=currency, start=start, end=end)
    table = period_table(report)
    if _wants_export(request):
        return _export(request, table, what="report.period",
                       name=f"period-{merchant.pk}-{currency}-{start:%Y%m%d}-{end:%Y%m%d}")
    return _page(site, request, "period.html", f"Period report: {merchant.name}, "
                 f"{currency.upper()}", form=form, ready=True, report=report, table=table,
                 merchant=merchant, start=start, end=end)


def trial_balance_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    initial = {"as_of": timezone.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")}
    form = AsOfForm(request.GET or None, initial=initial)
    if not form.is_valid():
        return _page(site, request, "trial_balance.html", "Trial balance", form=form)
    as_of = form.cleaned_data["as_of"]
    with one_snapshot():
        accounts, summary = trial_balance_table(as_of)
    if _wants_export(request):
        return _export(request, accounts, what="report.trial_balance",
                       name=f"trial-balance-{as_of:%Y%m%d-%H%M%S}")
    title = f"Trial balance as of {as_of:%Y-%m-%d %H:%M:%S} UTC"
    return _page(site, request, "trial_balance.html", title, form=form, ready=True, summary=summary,
                 accounts=accounts, shown=TRIAL_BALANCE_ROWS_SHOWN,
                 accounts_rows=accounts.display()[:TRIAL_BALANCE_ROWS_SHOWN],
                 balanced=all(row["balance"] == 0 for row in summary.records
                              if row["code"].startswith("TOTAL")))


def providers_view(site: admin.AdminSite, request: HttpRequest) -> HttpResponse:
    form = PeriodForm(request.GET or None, initial=_month_so_far())
    if not form.is_valid():
        return _page(site, request, "providers.html", "Settlements and fees by provider",
                     form=form)
    start, end = form.bounds
    with one_snapshot():
        table = provider_table(start, end)
    if _wants_export(request):
        return _export(request, table, what="report.providers",
                       name=f"providers-{start:%Y%m%d}-{end:%Y%m%d}")
    return _page(site, request, "providers.html", "Settlements and fees by provider",
                 form=form, ready=True, table=table, start=start, end=end)


REPORTS: Sequence[tuple[str, str, str, Callable[..., HttpResponse]]] = (
    ("period/", "backoffice_report_period", "Merchant period report", period_view),
    ("trial-balance/", "backoffice_report_trial_balance", "Trial balance", trial_balance_view),
    ("providers/", "backoffice_report_providers", "Settlements and fees by provider",
     providers_view),
)
REPORT_LINKS = [(f"admin:{name}", title) for _, name, title, _ in REPORTS]


def report_urls(site: admin.AdminSite) -> list[URLPattern]:
    """The report pages under /admin/reports/, each behind the site's login and 2FA and the
    ledger's view permission."""
    def guarded(view: Callable[..., HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
        def page(request: HttpRequest) -> HttpResponse:
            if not request.user.has_perm(VIEW_PERMISSION):
                raise PermissionDenied("Reports need the ledger's view permission.")
            return view(site, request)
        return site.admin_view(page)

    return [path(f"reports/{route}", guarded(view), name=name)
            for route, name, _, view in REPORTS]


def report_index_links() -> list[tuple[str, str]]:
    return [(reverse(name), title) for name, title in REPORT_LINKS]
