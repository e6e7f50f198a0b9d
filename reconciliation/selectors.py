"""Reads for reconciliation: stuck objects, batch look-ups by provider reference, the breaks queue.

The payments tables are read here (never written): a batch of settlement lines is matched with
one query per line type, each reference found by its own index probe, so the cost of a batch
does not grow with the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from django.db import connection
from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
)
from django.db.models.functions import Now

from payments import selectors as payment_reads
from payments.models import (
    ACTION_STATUSES,
    Payment,
    Refund,
)
from reconciliation.models import (
    BreakStatus,
    BreakType,
    CheckObjectType,
    JobRun,
    LineType,
    ReconciliationBreak,
    ReconciliationCheck,
    SettlementFileChunk,
    SettlementLine,
)
from wallet import selectors as wallet
from wallet.models import Deposit, Payout

PAYMENT_FIELDS, REFUND_FIELDS = payment_reads.PAYMENT_FIELDS, payment_reads.REFUND_FIELDS
# A capture line may settle a payment in any of these; the others have no captured funds.
SETTLEABLE = ACTION_STATUSES["settle"]


# -- the janitor -----------------------------------------------------------------------------
def _unchecked(rows: QuerySet, object_type: str, *, limit: int
               ) -> list[tuple[str, str, datetime, str]]:
    checked = ReconciliationCheck.objects.filter(object_type=object_type,
                                                 object_id=OuterRef("pk"))
    return list(rows.filter(~Exists(checked))[:limit])


def stuck_payments_unchecked(*, requested_before: datetime, limit: int
                             ) -> list[tuple[str, str, datetime, str]]:
    """Payments awaiting an authorization answer (latest attempt `unknown`, or `requested` and
    older than the grace period) that the janitor does not track yet:
    (payment id, attempt id, attempt created_at, attempt status)."""
    return _unchecked(payment_reads.payments_awaiting_answer(requested_before=requested_before),
                      CheckObjectType.PAYMENT, limit=limit)


def stuck_payments_checked_for_another_attempt(*, requested_before: datetime, limit: int
                                              ) -> list[tuple[str, str, datetime, str]]:
    """Payments awaiting an authorization answer whose check (one per payment) is on an
    earlier attempt's schedule, open or closed: a delayed retry of a soft decline, sent after
    the first attempt's answer came. Same rows as `stuck_payments_unchecked`; the janitor
    re-arms the check on the new attempt's schedule, which starts when it was created."""
    earlier = ReconciliationCheck.objects.filter(
        object_type=CheckObjectType.PAYMENT, object_id=OuterRef("pk"),
        stuck_since__lt=OuterRef("attempt_created_at"))
    return list(payment_reads.payments_awaiting_answer(requested_before=requested_before)
                .filter(Exists(earlier))[:limit])


def stuck_refunds_unchecked(*, requested_before: datetime, limit: int
                            ) -> list[tuple[str, str, datetime, str]]:
    return _unchecked(payment_reads.refunds_awaiting_answer(requested_before=requested_before),
                      CheckObjectType.REFUND, limit=limit)


def stuck_operations_unchecked(*, requested_before: datetime, limit: int
                               ) -> list[tuple[str, str, datetime, str]]:
    """Captures and voids of authorized payments without an answer (`unknown`, or `requested`
    and older than the grace period) that the janitor does not track yet:
    (attempt id, attempt id, attempt created_at, attempt status)."""
    return _unchecked(
        payment_reads.operations_awaiting_answer(requested_before=requested_before),
        CheckObjectType.CAPTURE_OR_VOID, limit=limit)


def movements_unchecked(*, unchanged_since: datetime, limit: int
                        ) -> list[tuple[str, list[tuple[str, datetime]]]]:
    """[(object type, [(id, last changed at)])] of payouts and deposits still open and untouched
    since the cutoff (as the wallet app lists them) that the janitor does not track yet."""
    found = []
    for object_type, model, list_ids in (
            (CheckObjectType.PAYOUT, Payout, wallet.payout_ids_to_refresh),
            (CheckObjectType.DEPOSIT, Deposit, wallet.deposit_ids_to_refresh)):
        # Asked for more than `limit`: ids already tracked (e.g. given up on) come first.
        ids = list_ids(unchanged_since=unchanged_since, limit=limit * 5)
        tracked = set(ReconciliationCheck.objects.filter(object_type=object_type,
                                                         object_id__in=ids)
                      .values_list("object_id", flat=True))
        fresh = [pk for pk in ids if pk not in tracked][:limit]
        changed_at = dict(model.objects.filter(pk__in=fresh).values_list("pk", "updated_at"))
        found.append((object_type, [(pk, changed_at[pk]) for pk in fresh if pk in changed_at]))
    return found


# -- settlement matching ---------------------------------------------------------------------
def _fetch(sql: str, params: list[Any] | dict[str, Any]) -> list[tuple]:
    """Run a read with server-side binding on Django's connection (same transaction). Django's
    own cursor binds client-side, quoting each of a batch's thousands of references into the
    SQL text; one array parameter costs a fraction of that."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=False)
        return cursor.fetchall()


_LINE_TABLE = SettlementLine._meta.db_table
_PAYMENT_TABLE = Payment._meta.db_table
_PAYMENT_COLUMNS = ", ".join(PAYMENT_FIELDS)
_WIDTH = len(PAYMENT_FIELDS)

# One query per batch of capture lines. Each distinct (reference, order id) pair is looked up
# by its own index probes (a LATERAL ... LIMIT 1 is never hashed or turned into a scan): an
# `= ANY(array)` over the batch let PostgreSQL, with no or stale statistics (autovacuum off,
# or the file's own lines not yet committed), read every payment and line of the provider
# per batch, which made an import quadratic in the table size.
_CAPTURES_SQL = f"""
SELECT l.ref, l.order_id, listed.yes IS NOT NULL, by_ref.*, by_order.*
FROM unnest(%(refs)s::text[], %(orders)s::text[]) AS l(ref, order_id)
LEFT JOIN LATERAL (SELECT true AS yes FROM {_LINE_TABLE}
                   WHERE l.ref <> '' AND provider = %(provider)s AND type = %(type)s
                   AND provider_reference = l.ref LIMIT 1) AS listed ON true
LEFT JOIN LATERAL (SELECT {_PAYMENT_COLUMNS} FROM {_PAYMENT_TABLE}
                   WHERE provider = %(provider)s AND provider_reference = l.ref
                   AND provider_reference <> '' LIMIT 1) AS by_ref ON true
LEFT JOIN LATERAL (SELECT {_PAYMENT_COLUMNS} FROM {_PAYMENT_TABLE}
                   WHERE by_ref.id IS NULL AND id = l.order_id AND provider = %(provider)s
                   AND provider_reference = '' LIMIT 1) AS by_order ON true
"""  # noqa: S608


@dataclass
class CaptureCandidates:
    """What a batch of capture lines is matched against."""

    by_reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A charge we never learned the reference of (lost answer, failed here), by its order id
    # (our payment id): only payments of this provider without a reference.
    by_order: dict[str, dict[str, Any]] = field(default_factory=dict)
    # References some stored capture line of this provider already carries.
    listed: set[str] = field(default_factory=set)


def capture_candidates(*, provider: str, lines: Iterable[tuple[str, str]]
                       ) -> CaptureCandidates:
    """Payments by provider reference, payments by order id for references we do not know,
    and the references already listed, for (provider reference, merchant reference) pairs:
    one query."""
    found = CaptureCandidates()
    pairs = list(dict.fromkeys(lines))
    if not pairs:
        return found
    rows = _fetch(_CAPTURES_SQL, {"provider": provider, "type": LineType.CAPTURE,
                                  "refs": [ref for ref, _ in pairs],
                                  "orders": [order for _, order in pairs]})
    for row in rows:
        ref, order, listed = row[0], row[1], row[2]
        if listed:
            found.listed.add(ref)
        if row[3] is not None:
            found.by_reference[ref] = dict(zip(PAYMENT_FIELDS, row[3:3 + _WIDTH], strict=True))
        elif row[3 + _WIDTH] is not None:
            found.by_order[order] = dict(zip(PAYMENT_FIELDS, row[3 + _WIDTH:], strict=True))
    return found


# Refunds are found by one `= ANY` over the batch on their provider-reference index (payments
# migration 0006); the duplicate check probes the partial refund-reference index of lines.
_REFUNDS_SQL = f"""
SELECT l.ref, listed.yes IS NOT NULL, found.*
FROM unnest(%(refs)s::text[]) AS l(ref)
LEFT JOIN LATERAL (SELECT true AS yes FROM {_LINE_TABLE}
                   WHERE l.ref <> '' AND provider = %(provider)s AND type = %(type)s
                   AND refund_reference = l.ref AND refund_reference <> '' LIMIT 1
                   ) AS listed ON true
LEFT JOIN (SELECT r.id, r.payment_id, r.status, r.currency, r.amount, r.provider_reference,
                  p.provider, p.provider_reference AS payment_reference
           FROM {Refund._meta.db_table} r JOIN {_PAYMENT_TABLE} p ON p.id = r.payment_id
           WHERE p.provider = %(provider)s AND r.provider_reference = ANY(%(refs)s::text[])
           AND r.provider_reference <> '') AS found ON found.provider_reference = l.ref
"""  # noqa: S608


@dataclass
class RefundCandidates:
    by_reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)


def refund_candidates(*, provider: str, references: Iterable[str]) -> RefundCandidates:
    """Refunds of this provider's payments by refund reference, and the refund references
    some stored line already carries: one query."""
    found = RefundCandidates()
    refs = list(dict.fromkeys(references))
    if not refs:
        return found
    rows = _fetch(_REFUNDS_SQL, {"provider": provider, "type": LineType.REFUND, "refs": refs})
    for row in rows:
        if row[1]:
            found.listed.add(row[0])
        if row[2] is not None:
            found.by_reference[row[0]] = dict(zip(REFUND_FIELDS, row[2:], strict=True))
    return found


def settlement_file_content(*, file_id: str) -> Iterator[bytes]:
    """The raw file, chunk by chunk in order (one chunk in memory at a time)."""
    numbers = (SettlementFileChunk.objects.filter(file_id=file_id).order_by("number")
               .values_list("number", flat=True))
    for number in list(numbers):
        yield bytes(SettlementFileChunk.objects.filter(file_id=file_id, number=number)
                    .values_list("data", flat=True).get())


def settlement_file_head(*, file_id: str, size: int) -> bytes:
    """The first `size` bytes of a raw file (for a preview), without reading the rest."""
    head = b""
    for chunk in settlement_file_content(file_id=file_id):
        head += chunk[:size - len(head)]
        if len(head) >= size:
            break
    return head


def line_ids(*, file_id: str, line_numbers: list[int]) -> dict[int, int]:
    """{line number: line id} for some lines of a file (the ones that need a break)."""
    if not line_numbers:
        return {}
    return dict(SettlementLine.objects.filter(file_id=file_id, line_number__in=line_numbers)
                .values_list("line_number", "pk"))


def lines_to_settle(*, file_id: str, after_line: int, limit: int
                    ) -> list[tuple[int, int, str, int, int]]:
    """Matched captures of a file not yet settled: (line id, number, payment id, gross, fee)."""
    rows = (SettlementLine.objects.filter(file_id=file_id, status="matched",
                                          type=LineType.CAPTURE, settled_at__isnull=True,
                                          line_number__gt=after_line)
            .order_by("line_number")
            .values_list("pk", "line_number", "payment_id", "gross", "fee"))
    return list(rows[:limit])


def payments_missing_at_provider(*, provider: str, captured_before: datetime, limit: int
                                 ) -> list[dict[str, Any]]:
    """Payments with captured funds at `provider`, captured before the cutoff, that no
    settlement line names and no break already reports."""
    listed = SettlementLine.objects.filter(payment_id=OuterRef("pk"), type=LineType.CAPTURE)
    reported = ReconciliationBreak.objects.filter(type=BreakType.MISSING_AT_PROVIDER,
                                                  key=OuterRef("pk"))
    rows = (payment_reads.captures_unsettled(provider=provider, captured_before=captured_before)
            .filter(~Exists(listed), ~Exists(reported))
            .order_by("captured_at")
            .values(*PAYMENT_FIELDS, "captured_at"))
    return list(rows[:limit])



# -- for /metrics ----------------------------------------------------------------------------
def open_break_counts() -> list[tuple[str, int]]:
    """(type, count) of open reconciliation breaks."""
    return list(ReconciliationBreak.objects.filter(status=BreakStatus.OPEN).order_by()
                .values("type").annotate(count=Count("id")).values_list("type", "count"))


def latest_job_runs() -> list[dict[str, Any]]:
    """The latest run of each job: job, examined, fixed, broken, error, age (a timedelta)."""
    return list(JobRun.objects.order_by("job", "-started_at").distinct("job")
                .annotate(age=ExpressionWrapper(Now() - F("started_at"),
                                                output_field=DurationField()))
                .values("job", "examined", "fixed", "broken", "error", "age"))
