"""Settlement files: import (raw file + normalised lines, once per provider, day and checksum;
each provider's format is read by its adapter), matching against our captures and refunds, and
settling matches.

Memory stays flat in file size: the raw bytes are decoded and parsed as a stream and matched in
batches of 2,000 lines, each costing one look-up query per line type (an index probe per
reference, so a batch costs the same however many lines and payments are stored), one binary
COPY and, for the lines that need them, one INSERT of breaks. Import is one transaction, so a
file is either wholly recorded with its breaks or not at all; settling matched captures runs
afterwards, one `payment_settle` per payment, and resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from itertools import islice
from typing import Any, BinaryIO

import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.errors import ClearhouseError
from core.ids import new_id
from payments import selectors as payment_reads
from payments import services as payments
from providers.base import MalformedLine, SettlementRow
from providers.cielo import read_settlement as parse_cielo
from providers.getnet import read_settlement as parse_getnet
from providers.rede import read_settlement as parse_rede
from providers.registry import get_provider
from reconciliation import selectors, services
from reconciliation.conf import setting
from reconciliation.models import (
    BreakType,
    LineType,
    MatchStatus,
    SettlementFile,
    SettlementFileChunk,
    SettlementLine,
)
from reconciliation.services import BreakSpec

logger = logging.getLogger(__name__)

BATCH_SIZE = 2000
SETTLE_BATCH_SIZE = 200
MISSING_SCAN_LIMIT = 5000


# -- parsing: each provider's format lives in its adapter module ---------------------------------
PARSERS: dict[str, Callable[[Iterable[str]], Iterator[SettlementRow]]] = {
    "cielo": parse_cielo, "rede": parse_rede, "getnet": parse_getnet,
}


# -- matching --------------------------------------------------------------------------------
@dataclass
class ImportResult(services.ImportCounts):
    file: SettlementFile


def _line_data(file_id: str, line: SettlementRow) -> dict[str, Any]:
    return {"file": file_id, "line_number": line.line_number, "raw": line.raw, "type": line.type,
            "provider_reference": line.provider_reference,
            "refund_reference": line.refund_reference,
            "merchant_reference": line.merchant_reference, "currency": line.currency,
            "gross": line.gross, "fee": line.fee, "net": line.net}


class _Matcher:
    """Matches one file's lines batch by batch inside the import transaction."""

    def __init__(self, file: SettlementFile, result: ImportResult) -> None:
        self.file, self.provider, self.result = file, file.provider, result

    def _problem(self, line: SettlementRow, type: str, key: str, ours: dict[str, Any] | None = None,
                 our_amount: int | None = None, payment_id: str = "", refund_id: str = ""
                 ) -> BreakSpec:
        return BreakSpec(
            type=type, key=key, provider=self.provider, payment_id=payment_id,
            refund_id=refund_id, provider_reference=line.provider_reference,
            refund_reference=line.refund_reference, currency=line.currency,
            our_amount=our_amount, provider_amount=line.gross, our_data=ours or {},
            provider_data=_line_data(self.file.id, line),
        )

    def _judge(self, line: SettlementRow, key: str, duplicate: bool,
               ours: dict[str, Any] | None, settled: bool) -> tuple[str, BreakSpec | None]:
        """One line against our object: `ours` holds it (`ours`, `our_amount` and its ids) for
        a break, None when we have none; `settled` says its status is one the line confirms."""
        if ours is None:
            if duplicate:
                return MatchStatus.DUPLICATE, self._problem(
                    line, BreakType.DUPLICATE_LINE, f"{self.file.id}:{line.line_number}")
            return MatchStatus.MISSING_INTERNALLY, self._problem(
                line, BreakType.MISSING_INTERNALLY, key)
        if duplicate:
            return MatchStatus.DUPLICATE, self._problem(
                line, BreakType.DUPLICATE_LINE, f"{self.file.id}:{line.line_number}", **ours)
        if not settled:
            problem = BreakType.STATUS_MISMATCH
        elif line.currency != ours["ours"]["currency"]:
            problem = BreakType.CURRENCY_MISMATCH
        elif (line.gross != ours["our_amount"] or line.fee > line.gross
              or line.net != line.gross - line.fee):
            problem = BreakType.AMOUNT_MISMATCH
        else:
            return MatchStatus.MATCHED, None
        return MatchStatus.MISMATCHED, self._problem(line, problem, key, **ours)

    def _judge_capture(self, line: SettlementRow, payment: dict | None, duplicate: bool
                       ) -> tuple[str, BreakSpec | None]:
        return self._judge(
            line, f"{self.provider}:capture:{line.provider_reference}", duplicate,
            None if payment is None else {"ours": payment, "our_amount": payment["amount_captured"],
                                          "payment_id": payment["id"]},
            settled=payment is not None and payment["status"] in selectors.SETTLEABLE)

    def _judge_refund(self, line: SettlementRow, refund: dict | None, duplicate: bool
                      ) -> tuple[str, BreakSpec | None]:
        return self._judge(
            line, f"{self.provider}:refund:{line.refund_reference}", duplicate,
            None if refund is None else {"ours": refund, "our_amount": refund["amount"],
                                         "payment_id": refund["payment_id"],
                                         "refund_id": refund["id"]},
            settled=refund is not None and refund["status"] == "succeeded")

    def add(self, batch: list[SettlementRow]) -> None:
        captures = selectors.capture_candidates(provider=self.provider, lines=[
            (line.provider_reference, line.merchant_reference) for line in batch
            if not line.error and line.type == LineType.CAPTURE])
        refunds = selectors.refund_candidates(provider=self.provider, references=[
            line.refund_reference for line in batch
            if not line.error and line.type == LineType.REFUND])
        listed = {LineType.CAPTURE: captures.listed, LineType.REFUND: refunds.listed}
        rows, specs = [], []
        for line in batch:
            payment_id = refund_id = ""
            if line.error:
                status, spec = MatchStatus.MALFORMED, BreakSpec(
                    type=BreakType.MALFORMED_LINE, key=f"{self.file.id}:{line.line_number}",
                    provider=self.provider,
                    provider_data={**_line_data(self.file.id, line), "error": line.error})
            elif line.type == LineType.CAPTURE:
                ref = line.provider_reference
                # By its order id only a payment that never learned its reference: one that
                # knows another reference makes this line a second charge we do not know about.
                payment = (captures.by_reference.get(ref)
                           or captures.by_order.get(line.merchant_reference))
                status, spec = self._judge_capture(line, payment, ref in listed[line.type])
                listed[line.type].add(ref)
                payment_id = payment["id"] if payment else ""
            else:
                ref = line.refund_reference
                refund = refunds.by_reference.get(ref)
                status, spec = self._judge_refund(line, refund, ref in listed[line.type])
                listed[line.type].add(ref)
                if refund is not None:
                    payment_id, refund_id = refund["payment_id"], refund["id"]
            rows.append((
                self.file.id, line.line_number, self.provider, line.type,
                line.provider_reference[:128], line.refund_reference[:128],
                line.merchant_reference[:128], line.transaction_date, line.currency,
                line.gross, line.fee, line.net, line.raw, status, payment_id, refund_id))
            if spec is not None:
                specs.append((line.line_number, spec))
            self.result.by_status[status] = self.result.by_status.get(status, 0) + 1
            self.result.matched += status == MatchStatus.MATCHED
        _copy_lines(rows)
        self.result.lines += len(rows)
        if specs:
            ids = selectors.line_ids(file_id=self.file.id,
                                     line_numbers=[number for number, _ in specs])
            self.result.breaks += services.breaks_open(specs=[
                replace(spec, settlement_line_id=ids[number]) for number, spec in specs])


LINE_COLUMNS = ("file_id", "line_number", "provider", "type", "provider_reference",
                "refund_reference", "merchant_reference", "transaction_date", "currency",
                "gross", "fee", "net", "raw", "status", "payment_id", "refund_id")
LINE_TYPES = ("text", "int4", "text", "text", "text", "text", "text", "date", "text", "int8",
              "int8", "int8", "text", "text", "text", "text")


def _copy_lines(rows: list[tuple[Any, ...]]) -> None:
    """COPY a batch (binary format) into settlement lines on Django's connection, in its
    transaction: a fraction of the cost of the INSERT bulk_create builds, which prepares every
    field of every row in Python and has PostgreSQL parse it all again."""
    connection.ensure_connection()
    table = SettlementLine._meta.db_table
    with psycopg.Cursor(connection.connection) as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(LINE_COLUMNS)}) "
                         "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(LINE_TYPES)
            for row in rows:
                copy.write_row(row)


CHUNK_BYTES = 1 << 20


def _batches(items: Iterator[SettlementRow], size: int) -> Iterator[list[SettlementRow]]:
    while batch := list(islice(items, size)):
        yield batch


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream from its start, CHUNK_BYTES at a time."""
    stream.seek(0)
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def _digest(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 and size, a chunk at a time."""
    digest, size = hashlib.sha256(), 0
    for chunk in _chunks(stream):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _file_insert(*, provider: str, file_date: date, checksum: str, stream: BinaryIO,
                 size: int) -> SettlementFile:
    """The file row, then its bytes a chunk at a time, each as one binary parameter (Django's
    client-side binding would spell them out again as hex inside the SQL text)."""
    file = SettlementFile.objects.create(id=new_id("stf"), provider=provider,
                                         file_date=file_date, checksum=checksum,
                                         size_bytes=size)
    sql = (f"INSERT INTO {SettlementFileChunk._meta.db_table} "  # noqa: S608
           "(file_id, number, data) VALUES (%s, %s, %s)")
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        for number, chunk in enumerate(_chunks(stream)):
            cursor.execute(sql, [file.id, number, chunk], prepare=False)
    return file


def settlement_import(*, provider: str, file_date: date, content: bytes | BinaryIO,
                      batch_size: int = BATCH_SIZE) -> ImportResult:
    """Store one settlement file and its matched lines, opening breaks for the rest.
    The same provider, day and bytes again returns the first import and changes nothing.

    `content` is the raw file: bytes, or a seekable binary file, which keeps memory flat even
    for the raw file itself (it is read three times: checksum, storage, parsing)."""
    if provider not in PARSERS:
        raise ValueError(f"no settlement parser for provider {provider!r}")
    stream = io.BytesIO(content) if isinstance(content, bytes | bytearray) else content
    checksum, size = _digest(stream)
    lookup = {"provider": provider, "file_date": file_date, "checksum": checksum}
    existing = SettlementFile.objects.filter(**lookup).first()
    if existing is not None:
        return ImportResult(file=existing, created=False, lines=existing.line_count)
    try:
        with transaction.atomic():
            file = _file_insert(stream=stream, size=size, **lookup)
            result = ImportResult(file=file, created=True)
            matcher = _Matcher(file, result)
            # Decoded a chunk at a time as lines are read. A stray invalid byte becomes U+FFFD
            # (and usually a malformed line); the checksum still covers the exact bytes.
            stream.seek(0)
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
            try:
                for batch in _batches(PARSERS[provider](text), batch_size):
                    matcher.add(batch)
            except MalformedLine as exc:  # a bad header: nothing in the file can be trusted
                result.breaks += services.breaks_open(specs=[BreakSpec(
                    type=BreakType.MALFORMED_LINE, key=f"{file.id}:0", provider=provider,
                    provider_data={"file": file.id, "line_number": 0, "error": str(exc)})])
            finally:
                text.detach()  # the caller's file stays open
            file.line_count = result.lines
            file.save(update_fields=["line_count"])
    except IntegrityError:
        # The same file imported concurrently: the other import won.
        existing = SettlementFile.objects.filter(**lookup).first()
        if existing is None:
            raise
        return ImportResult(file=existing, created=False, lines=existing.line_count)
    return result


# -- settling matched captures, and what the provider never listed ----------------------------
@dataclass
class SettleResult:
    settled: int = 0
    failed: int = 0


def settlement_settle(*, file_id: str, batch_size: int = SETTLE_BATCH_SIZE) -> SettleResult:
    """Settle each matched capture of a file (captured → settled, pending → available less the
    line's fee). Resumable: a line is marked once its payment is settled, and payment_settle
    is idempotent, so a crash in between settles nothing twice."""
    result, after = SettleResult(), 0
    while rows := selectors.lines_to_settle(file_id=file_id, after_line=after,
                                            limit=batch_size):
        done: list[int] = []
        for line_id, _number, payment_id, gross, fee in rows:
            try:
                payments.payment_settle(payment_id=payment_id, amount=gross, fee=fee)
            except (ClearhouseError, ValueError) as exc:
                # The payment moved since matching (or the fee cannot be posted): a human looks.
                # Anything else (the database went away) propagates; the line stays unsettled
                # and the next run retries it.
                logger.warning("settling %s from line %s failed: %s", payment_id, line_id, exc)
                _settle_failed(line_id=line_id, payment_id=payment_id, error=str(exc))
                result.failed += 1
                continue
            done.append(line_id)
        SettlementLine.objects.filter(pk__in=done).update(settled_at=timezone.now())
        result.settled += len(done)
        after = rows[-1][1]
    return result


def _settle_failed(*, line_id: int, payment_id: str, error: str) -> None:
    line = SettlementLine.objects.get(pk=line_id)
    with transaction.atomic():
        SettlementLine.objects.filter(pk=line_id).update(status=MatchStatus.MISMATCHED)
        services.breaks_open(specs=[BreakSpec(
            type=BreakType.STATUS_MISMATCH, key=f"{line.provider}:capture:"
            f"{line.provider_reference}", provider=line.provider, payment_id=payment_id,
            provider_reference=line.provider_reference, currency=line.currency,
            provider_amount=line.gross,
            our_data=payment_reads.payment_snapshot(payment_id=payment_id) or {},
            provider_data={"file": line.file_id, "line_number": line.line_number,
                           "raw": line.raw, "settle_error": error[:500]},
            settlement_line_id=line_id)])


def missing_at_provider_scan(*, provider: str, now: datetime | None = None) -> int:
    """Open a break for each payment captured here more than RECON_MISSING_AFTER_DAYS ago that
    no settlement line of `provider` names. Returns how many breaks are new."""
    days = setting("RECON_MISSING_AFTER_DAYS")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    rows = selectors.payments_missing_at_provider(provider=provider, captured_before=cutoff,
                                                  limit=MISSING_SCAN_LIMIT)
    return services.breaks_open(specs=[BreakSpec(
        type=BreakType.MISSING_AT_PROVIDER, key=row["id"], provider=provider,
        payment_id=row["id"], provider_reference=row["provider_reference"],
        currency=row["currency"], our_amount=row["amount_captured"], our_data=row,
        provider_data={"absent_from_files_after_days": days}) for row in rows])


# -- the job ---------------------------------------------------------------------------------
@dataclass
class SettlementsResult:
    lines: int = 0
    matched: int = 0
    settled: int = 0
    breaks: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def settlement_days(*, day: date | None = None, today: date | None = None) -> list[date]:
    if day is not None:
        return [day]
    today = today or timezone.now().date()
    lookback = setting("RECON_SETTLEMENT_LOOKBACK_DAYS")
    return [today - timedelta(days=n) for n in range(lookback, 0, -1)]


def settlements_run(*, day: date | None = None, providers: Iterable[str] | None = None
                    ) -> SettlementsResult:
    """Fetch, import, match and settle each provider's files (the lookback days up to
    yesterday, or one `day`), then report captures no file listed. A provider that fails is
    recorded and the others still run; its missing-at-provider scan waits for a clean run, so
    an outage on our side does not read as thousands of missing settlements."""
    result = SettlementsResult()
    for provider in providers or setting("RECON_SETTLEMENT_PROVIDERS"):
        clean = True
        for file_day in settlement_days(day=day):
            try:
                # Outside any transaction: a provider call never holds a lock.
                content = get_provider(provider).settlement_report(file_day)
                imported = settlement_import(provider=provider, file_date=file_day,
                                             content=content)
                settled = settlement_settle(file_id=imported.file.id)
            except Exception as exc:
                logger.exception("settlement file %s %s failed", provider, file_day)
                result.errors.append(f"{provider} {file_day}: {type(exc).__name__}: {exc}"[:500])
                clean = False
                continue
            result.lines += imported.lines if imported.created else 0
            result.matched += imported.matched
            result.breaks += imported.breaks + settled.failed
            result.settled += settled.settled
            result.files.append({"provider": provider, "date": file_day,
                                 "file": imported.file.id, "new": imported.created,
                                 "lines": imported.lines, "settled": settled.settled})
        if clean:
            result.breaks += missing_at_provider_scan(provider=provider)
    return result
