"""Exports of back-office lists and reports as CSV or XLSX: one mechanism for every list (a
per-admin column spec, the list's own filters and search), streamed so that 100,000 rows take
the memory of one chunk, audited, and safe to open in a spreadsheet (no formula injection).

Amounts appear twice: in minor units (the integer the ledger holds) and in major units with the
currency's exponent (core.money), so a spreadsheet user can sum either and check one against the
other. django-import-export was considered: it builds a whole tablib Dataset in memory before
writing, which is what a 100,000-row export must not do, so the writers here are the standard
library's csv module and openpyxl's write-only workbook.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from backoffice.audit import Actor, audit_record
from core.money import to_decimal
from ledger.reports import one_snapshot

EXPORT_PERMISSION = "backoffice.export_data"
FORMATS = {"csv": "text/csv; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
CHUNK_ROWS = 2_000  # rows per server-side cursor fetch and per streamed block of CSV
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP "CSV injection"); such text cells get a leading apostrophe. Numbers are left alone.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


# -- columns ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One exported column read from `path` (an ORM lookup, like list_filter's). A column with
    `currency` (the lookup of the row's currency) is money: it is written twice, in minor units
    under `header` and in major units under `header_major`."""

    header: str
    path: str
    currency: str = ""
    render: Callable[[Any], Any] | None = None

    @property
    def headers(self) -> list[str]:
        return [self.header, f"{self.header}_major"] if self.currency else [self.header]

    def cells(self, record: dict[str, Any]) -> list[Any]:
        value = record[self.path]
        if self.render is not None:
            value = self.render(value)
        if not self.currency:
            return [value]
        currency = record[self.currency]
        if value is None or not currency:
            return [value, None]
        return [value, to_decimal(value, currency)]


def money(header: str = "amount", path: str | None = None, currency: str = "currency") -> Column:
    return Column(header, path or header, currency=currency)


def columns(*specs: str | Column) -> tuple[Column, ...]:
    """A spec from plain lookups ("id", "merchant__name") and Column/money() where needed;
    a plain lookup's header is its last part ("merchant__name" → "merchant_name")."""
    return tuple(spec if isinstance(spec, Column) else Column(spec.replace("__", "_"), spec)
                 for spec in specs)


def header_of(spec: Sequence[Column]) -> list[str]:
    return [name for column in spec for name in column.headers]


def cells_of(record: dict[str, Any], spec: Sequence[Column]) -> list[Any]:
    return [cell for column in spec for cell in column.cells(record)]


def records(queryset: QuerySet, spec: Sequence[Column], *,
            chunk_size: int | None = None) -> Iterator[list[Any]]:
    """The rows of a queryset as lists of cells, read in one snapshot through a server-side
    cursor (`.iterator(chunk_size)`): memory holds one chunk whatever the row count."""
    paths = list(dict.fromkeys(p for column in spec for p in (column.path, column.currency) if p))
    with one_snapshot():
        for record in queryset.values(*paths).iterator(chunk_size=chunk_size or CHUNK_ROWS):
            yield cells_of(record, spec)


# -- cells -----------------------------------------------------------------------------------
def safe_text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _plain(value: Any) -> Any:
    """What a spreadsheet can hold: JSON for structures, text for anything unknown."""
    if value is None or isinstance(value, bool | int | Decimal | datetime | date):
        return value
    if isinstance(value, float):  # never money (amounts are ints), e.g. a duration
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def csv_cell(value: Any) -> Any:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if timezone.is_aware(value) else \
            value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"
    return safe_text(value) if isinstance(value, str) else value


class _Line:
    """csv.writer's file: hands back each line instead of storing it."""

    def write(self, line: str) -> str:
        return line


def csv_stream(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
               block_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """UTF-8 CSV (with a BOM, so Excel reads accents right), one block of rows at a time."""
    writer = csv.writer(_Line())
    yield ("\ufeff" + writer.writerow([safe_text(name) for name in header])).encode()
    block: list[str] = []
    for row in rows:
        block.append(writer.writerow([csv_cell(value) for value in row]))
        if len(block) >= block_rows:
            yield "".join(block).encode()
            block = []
    if block:
        yield "".join(block).encode()


def _xlsx_cell(sheet: Any, value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, datetime) and timezone.is_aware(value):
        return value.astimezone(UTC).replace(tzinfo=None)  # Excel has no time zones: UTC
    if isinstance(value, Decimal):
        # Major units keep their currency's exponent on screen: 10.50, 1,000, 1.250
        places = max(0, -int(value.as_tuple().exponent))
        cell = WriteOnlyCell(sheet, value=value)
        cell.number_format = "#,##0" + ("." + "0" * places if places else "")
        return cell
    if isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # text, never a formula, whatever it starts with (no apostrophe)
        return cell
    return value


def xlsx_file(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
              title: str = "export") -> IO[bytes]:
    """An XLSX workbook with one sheet, built with openpyxl's write-only mode: each row goes to
    a temporary file as it is appended, so memory stays flat; the zip is assembled at the end
    into another temporary file, which is returned at position 0."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    sheet.append([_xlsx_cell(sheet, name) for name in header])
    for row in rows:
        sheet.append([_xlsx_cell(sheet, value) for value in row])
    output = tempfile.TemporaryFile()  # noqa: SIM115 (the response closes it once sent)
    workbook.save(output)
    output.seek(0)
    return output


def file_response(fmt: str, header: Sequence[str], rows: Iterable[Sequence[Any]], *,
                  filename: str) -> HttpResponse:
    """The export as a download: CSV streamed as it is read, XLSX once the workbook is built."""
    if fmt == "csv":
        response = StreamingHttpResponse(csv_stream(header, rows), content_type=FORMATS["csv"])
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
        return response
    return FileResponse(xlsx_file(header, rows, title=filename.split("-")[0]),
                        as_attachment=True, filename=f"{filename}.xlsx",
                        content_type=FORMATS["xlsx"])


def export_allowed(request: HttpRequest) -> bool:
    return request.user.has_perm(EXPORT_PERMISSION)


def export_audit(request: HttpRequest, *, what: str, fmt: str, filters: dict[str, Any]) -> None:
    """One audit row per export, written before the first byte leaves: who took which data,
    with which filters, in which format."""
    shown = ", ".join(f"{key}={value}" for key, value in sorted(filters.items())) or "none"
    audit_record(actor=Actor.from_request(request), action="export", object_type=what,
                 object_id=fmt, after={"format": fmt, "filters": filters},
                 note=f"Exported {what} as {fmt.upper()}; filters: {shown}"[:2000])


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%d-%H%M%S")


# -- the changelist button -------------------------------------------------------------------
def _without_results(self: Any, request: HttpRequest) -> None:
    """An export reads the list's queryset itself: no page, no count."""


class ExportMixin:
    """Adds "Export CSV" / "Export XLSX" to a ModelAdmin's list: the rows the list shows under
    its current filters, search and ordering (every page), with the columns of
    `export_columns`. Needs the model's view permission and `backoffice.export_data`."""

    export_columns: tuple[Column, ...] = ()
    export_formats: tuple[str, ...] = ("csv", "xlsx")

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.export_view)  # type: ignore[attr-defined]
        return [path("export/<str:fmt>/", view,
                     name=f"{opts.app_label}_{opts.model_name}_export"),
                *super().get_urls()]  # type: ignore[misc]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> Any:
        changelist = super().get_changelist(request, **kwargs)  # type: ignore[misc]
        if getattr(request, "_backoffice_export", False):
            return type("ExportChangeList", (changelist,), {"get_results": _without_results})
        return changelist

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
                        ) -> HttpResponse:
        links = []
        if export_allowed(request):
            opts = self.model._meta  # type: ignore[attr-defined]
            query = request.GET.copy()
            for name in ("p", "e"):
                query.pop(name, None)
            suffix = f"?{query.urlencode()}" if query else ""
            links = [(fmt.upper(), reverse(f"admin:{opts.app_label}_{opts.model_name}_export",
                                           args=[fmt]) + suffix)
                     for fmt in self.export_formats]
        return super().changelist_view(  # type: ignore[misc]
            request, {"export_links": links, **(extra_context or {})})

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponse:
        if not (self.has_view_permission(request) and  # type: ignore[attr-defined]
                export_allowed(request)):
            raise PermissionDenied("Exports need the back-office export permission "
                                   "(operator, approver or admin role).")
        if fmt not in self.export_formats:
            return HttpResponseBadRequest(f"Unknown export format '{fmt}': use one of "
                                          f"{', '.join(self.export_formats)}.")
        request._backoffice_export = True  # type: ignore[attr-defined]
        try:
            changelist = self.get_changelist_instance(request)  # type: ignore[attr-defined]
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These list filters are not valid; open the list, "
                                          "choose the filters again, then export.")
        opts = self.model._meta  # type: ignore[attr-defined]
        filters = {key: values[0] if len(values) == 1 else values
                   for key, values in request.GET.lists() if key not in ("p", "e")}
        export_audit(request, what=opts.label_lower, fmt=fmt, filters=filters)
        spec = self.export_columns
        return file_response(fmt, header_of(spec), records(changelist.queryset, spec),
                             filename=f"{opts.model_name}s-{_stamp()}")


class ExportAdmin(ExportMixin, admin.ModelAdmin):
    pass
