"""The bank leg of reconciliation: bank statements (ISO 20022 camt.053, or the CSV format in
docs/OPERATIONS.md) imported once, their credits matched to providers' settlement deposits and
their debits to our payouts, and a break for whatever the bank, the provider and we disagree on.

A statement is checked whole before anything is written (well-formed, one currency, lines that
add up from the opening to the closing balance) and stored with its lines, matches and breaks in
one transaction: it is imported entirely or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, Sum

from core.breaks import BreakSpec
from core.errors import InvalidRequest
from core.money import CURRENCIES, MAX_AMOUNT, exponent
from providers.registry import provider_is_live
from reconciliation import services
from reconciliation.conf import setting
from reconciliation.models import (
    BankDirection,
    BankLine,
    BankMatch,
    BankStatement,
    BankStatementFormat,
    BreakStatus,
    BreakType,
    LineType,
    MatchStatus,
    ReconciliationBreak,
    SettlementLine,
)
from wallet import selectors as wallet_reads
from wallet.selectors import PAYOUT_DEBITED

MAX_STATEMENT_BYTES = 20 * 1024 * 1024
REFUSED = "bank_statement_refused"
AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,3})?$")  # unsigned: the direction gives the sign
CAMT053 = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.\d{2}$")


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest(f"Bank statement refused, nothing was imported: {message}",
                          code=REFUSED, param="file")


# -- parsing ---------------------------------------------------------------------------------
@dataclass
class ParsedLine:
    line_number: int
    booking_date: date
    direction: str
    amount: int
    currency: str
    value_date: date | None = None
    bank_reference: str = ""
    end_to_end_id: str = ""
    counterparty: str = ""
    remittance_info: str = ""

    @property
    def signed(self) -> int:
        return self.amount if self.direction == BankDirection.CREDIT else -self.amount


@dataclass
class ParsedStatement:
    account: str
    statement_id: str
    currency: str
    opening_balance: int
    closing_balance: int
    from_date: date
    to_date: date
    lines: list[ParsedLine]


def _currency(text: str, where: str) -> str:
    currency = text.strip().lower()
    if currency not in CURRENCIES:
        raise _refuse(f"{where}: unknown currency {text!r}.")
    return currency


def _minor(text: str, currency: str, where: str) -> int:
    """'150.00' → 15000 in the currency's minor unit; refuses signs, exponents and decimals the
    currency does not have."""
    text = text.strip()
    if not AMOUNT.match(text):
        raise _refuse(f"{where}: {text!r} is not an unsigned decimal amount.")
    whole, _, decimals = text.partition(".")
    if len(decimals.rstrip("0")) > exponent(currency):
        raise _refuse(f"{where}: {text!r} has more decimals than {currency} allows.")
    return int(whole + decimals.ljust(exponent(currency), "0")[:exponent(currency)])


def _day(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise _refuse(f"{where}: {text!r} is not a date (YYYY-MM-DD).") from None


def _direction(text: str, where: str) -> str:
    direction = {"CRDT": BankDirection.CREDIT, "DBIT": BankDirection.DEBIT,
                 "CREDIT": BankDirection.CREDIT, "DEBIT": BankDirection.DEBIT}.get(
        text.strip().upper())
    if direction is None:
        raise _refuse(f"{where}: direction {text!r} is neither credit nor debit.")
    return direction


def _xml_root(content: bytes) -> Element:
    """Parse with expat directly and refuse any DTD. A camt.053 statement never has one, and a
    DTD is where entity expansion ("billion laughs") and external entities (local files, URLs)
    live: nothing is ever declared, expanded or fetched."""
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")

    def refuse(*_args: Any) -> None:
        raise _refuse("the XML declares a DTD or entities, which a camt.053 statement never "
                      "does (refused unread, for safety).")

    def tag(name: str) -> str:  # "uri}Local" → ElementTree's "{uri}Local"
        return "{" + name if "}" in name else name

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = lambda name, attrs: builder.start(tag(name), attrs)
    parser.EndElementHandler = lambda name: builder.end(tag(name))
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(content, True)
    except expat.ExpatError as exc:
        raise _refuse(f"not well-formed XML ({expat.ErrorString(exc.code)} at line "
                      f"{exc.lineno}, column {exc.offset}); the file is truncated or "
                      "damaged.") from None
    return builder.close()


def parse_camt053(content: bytes) -> ParsedStatement:
    """One `Stmt` of a camt.053 (any 001.xx version): the account, the opening (OPBD/PRCD) and
    closing (CLBD) booked balances and every booked entry (`Sts` BOOK; pending and information
    entries move no balance and are skipped)."""
    root = _xml_root(content)
    namespace, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") else (
        "", "", root.tag)
    if local != "Document" or not CAMT053.match(namespace):
        raise _refuse(f"not a camt.053 document (root {local!r} in namespace "
                      f"{namespace or 'none'!r}).")

    def path(spec: str) -> str:
        return "/".join(f"{{{namespace}}}{part}" for part in spec.split("/"))

    def text(node: Element, spec: str, what: str = "") -> str:
        found = node.find(path(spec))
        value = (found.text or "").strip() if found is not None else ""
        if what and not value:
            raise _refuse(f"{what} ({spec}) is missing.")
        return value

    statements = root.findall(path("BkToCstmrStmt/Stmt"))
    if len(statements) != 1:
        raise _refuse(f"the file holds {len(statements)} statements; import one per file.")
    stmt = statements[0]
    statement_id = text(stmt, "Id", "the statement id")
    account = (text(stmt, "Acct/Id/IBAN") or text(stmt, "Acct/Id/Othr/Id", "the account"))
    balances: dict[str, tuple[int, date | None, str]] = {}
    for number, bal in enumerate(stmt.findall(path("Bal")), 1):
        code = text(bal, "Tp/CdOrPrtry/Cd", f"balance {number}'s type")
        amount = bal.find(path("Amt"))
        if amount is None:
            raise _refuse(f"balance {code} has no amount.")
        currency = _currency(amount.get("Ccy", ""), f"balance {code}")
        value = _minor(amount.text or "", currency, f"balance {code}")
        sign = 1 if _direction(text(bal, "CdtDbtInd", f"balance {code}'s sign"),
                               f"balance {code}") == BankDirection.CREDIT else -1
        when = text(bal, "Dt/Dt") or text(bal, "Dt/DtTm")
        if code in balances:
            raise _refuse(f"balance {code} appears twice.")
        balances[code] = (sign * value, _day(when, f"balance {code}") if when else None,
                          currency)
    opening = balances.get("OPBD") or balances.get("PRCD")
    closing = balances.get("CLBD")
    if opening is None or closing is None:
        raise _refuse("an opening (OPBD) and a closing (CLBD) booked balance are required.")
    currency = _currency(text(stmt, "Acct/Ccy") or opening[2], "the account")
    if {opening[2], closing[2]} != {currency}:
        raise _refuse("the balances are not in the account's currency.")
    start, end = text(stmt, "FrToDt/FrDtTm"), text(stmt, "FrToDt/ToDtTm")
    lines: list[ParsedLine] = []
    for number, entry in enumerate(stmt.findall(path("Ntry")), 1):
        where = f"entry {number}"
        status = text(entry, "Sts/Cd") or text(entry, "Sts")
        if status and status != "BOOK":
            continue
        amount = entry.find(path("Amt"))
        if amount is None:
            raise _refuse(f"{where} has no amount.")
        if _currency(amount.get("Ccy", ""), where) != currency:
            raise _refuse(f"{where} is in {amount.get('Ccy')}, the account in {currency}.")
        direction = _direction(text(entry, "CdtDbtInd", f"{where}'s direction"), where)
        booked = text(entry, "BookgDt/Dt") or text(entry, "BookgDt/DtTm", f"{where}'s date")
        valued = text(entry, "ValDt/Dt") or text(entry, "ValDt/DtTm")
        tx = entry.find(path("NtryDtls/TxDtls"))
        details = tx if tx is not None else Element("none")
        party = "Dbtr" if direction == BankDirection.CREDIT else "Cdtr"
        end_to_end = text(details, "Refs/EndToEndId")
        remittance = " ".join(
            (node.text or "").strip() for node in details.findall(path("RmtInf/Ustrd")))
        lines.append(ParsedLine(
            line_number=number, booking_date=_day(booked, where), direction=direction,
            amount=_minor(amount.text or "", currency, where), currency=currency,
            value_date=_day(valued, where) if valued else None,
            bank_reference=text(entry, "AcctSvcrRef") or text(details, "Refs/AcctSvcrRef"),
            end_to_end_id="" if end_to_end == "NOTPROVIDED" else end_to_end,
            counterparty=(text(details, f"RltdPties/{party}/Nm")
                          or text(details, f"RltdPties/{party}/Pty/Nm")),
            remittance_info=" ".join(filter(None, (remittance,
                                                   text(entry, "AddtlNtryInf"))))))
    return _checked(ParsedStatement(
        account=account, statement_id=statement_id, currency=currency,
        opening_balance=opening[0], closing_balance=closing[0],
        from_date=_day(start, "FrToDt") if start else _period_day(opening[1], lines, min),
        to_date=_day(end, "FrToDt") if end else _period_day(closing[1], lines, max),
        lines=lines))


def _period_day(day: date | None, lines: list[ParsedLine], pick: Callable) -> date:
    if day is not None:
        return day
    if not lines:
        raise _refuse("the statement has no period (FrToDt), no balance dates and no entries.")
    return pick(line.booking_date for line in lines)


CSV_COLUMNS = ("record", "account", "statement_id", "currency", "date", "amount", "direction",
               "bank_reference", "end_to_end_id", "counterparty", "remittance_info")


def parse_csv(content: bytes) -> ParsedStatement:
    """The CSV format of docs/OPERATIONS.md: a header naming CSV_COLUMNS, an `opening` row, one
    `entry` row per booked line and a `closing` row last (so a cut-off file is refused)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(f"the CSV is not UTF-8 (byte {exc.start}).") from None
    rows: list[tuple[int, dict[str, str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in CSV_COLUMNS if name not in header]
        if missing:
            raise _refuse(f"the CSV header lacks column(s) {', '.join(missing)}.")
        for values in reader:
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                raise _refuse(f"line {reader.line_num}: {len(values)} fields, expected "
                              f"{len(header)}.")
            rows.append((reader.line_num,
                         {name: value.strip() for name, value in zip(header, values,
                                                                      strict=True)}))
    except csv.Error as exc:
        raise _refuse(f"line {reader.line_num}: {exc}.") from None
    if len(rows) < 2 or rows[0][1]["record"] != "opening" or rows[-1][1]["record"] != "closing":
        raise _refuse("the CSV must start with an 'opening' row and end with a 'closing' row "
                      "(a file without its closing row is incomplete).")
    first = rows[0][1]
    currency = _currency(first["currency"], "line 2")
    balances = {}
    lines: list[ParsedLine] = []
    for line_num, row in rows:
        where = f"line {line_num}"
        for name in ("account", "statement_id", "currency"):
            if row[name] != first[name]:
                raise _refuse(f"{where}: {name} {row[name]!r} differs from the opening row's.")
        amount = _minor(row["amount"], currency, where)
        direction = _direction(row["direction"], where)
        day = _day(row["date"], where)
        if row["record"] in ("opening", "closing"):
            if row["record"] in balances:
                raise _refuse(f"{where}: a second {row['record']} row.")
            balances[row["record"]] = (amount if direction == BankDirection.CREDIT else -amount,
                                       day)
        elif row["record"] == "entry":
            if "closing" in balances:
                raise _refuse(f"{where}: an entry after the closing row.")
            lines.append(ParsedLine(
                line_number=len(lines) + 1, booking_date=day, direction=direction,
                amount=amount, currency=currency, bank_reference=row["bank_reference"],
                end_to_end_id=row["end_to_end_id"], counterparty=row["counterparty"],
                remittance_info=row["remittance_info"]))
        else:
            raise _refuse(f"{where}: record {row['record']!r} is not opening, entry or closing.")
    return _checked(ParsedStatement(
        account=first["account"], statement_id=first["statement_id"], currency=currency,
        opening_balance=balances["opening"][0], closing_balance=balances["closing"][0],
        from_date=balances["opening"][1], to_date=balances["closing"][1], lines=lines))


def _checked(parsed: ParsedStatement) -> ParsedStatement:
    """What both formats must satisfy: an identified account and statement, a period, amounts in
    range, and lines that take the opening balance exactly to the closing one."""
    parsed.account = re.sub(r"\s+", "", parsed.account).upper()
    parsed.statement_id = parsed.statement_id.strip()
    if not parsed.account or len(parsed.account) > 64:
        raise _refuse("the account is missing or longer than 64 characters.")
    if not parsed.statement_id or len(parsed.statement_id) > 128:
        raise _refuse("the statement id is missing or longer than 128 characters.")
    if parsed.from_date > parsed.to_date:
        raise _refuse(f"the period ends ({parsed.to_date}) before it starts "
                      f"({parsed.from_date}).")
    for line in parsed.lines:
        if not 0 < line.amount <= MAX_AMOUNT:
            raise _refuse(f"entry {line.line_number}: amount {line.amount} is out of range.")
    total = parsed.opening_balance + sum(line.signed for line in parsed.lines)
    if total != parsed.closing_balance:
        raise _refuse(f"the opening balance {parsed.opening_balance} plus the entries "
                      f"({total - parsed.opening_balance:+d}) is {total}, not the closing "
                      f"balance {parsed.closing_balance} (minor units): lines are missing or "
                      "altered.")
    return parsed


PARSERS: dict[str, Callable[[bytes], ParsedStatement]] = {
    BankStatementFormat.CAMT053: parse_camt053, BankStatementFormat.CSV: parse_csv,
}


def statement_format(content: bytes) -> str:
    """camt.053 when the file is XML, else the CSV format."""
    head = content[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return BankStatementFormat.CAMT053 if head.startswith(b"<") else BankStatementFormat.CSV


# -- reads: the other two legs ---------------------------------------------------------------
@dataclass(frozen=True)
class Deposit:
    """What a provider owes our bank for one settlement file in one currency: the net of its
    captures less its refunds (malformed lines carry no trustworthy amount)."""

    file_id: str
    provider: str
    file_date: date
    currency: str
    net: int
    lines: int
    settled_lines: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.file_id, self.currency)

    def data(self) -> dict[str, Any]:
        return {"settlement_file": self.file_id, "provider": self.provider,
                "file_date": self.file_date, "currency": self.currency, "net": self.net,
                "lines": self.lines, "settled_lines": self.settled_lines}


def _mode_providers(rows: Iterable[str]) -> set[str]:
    livemode = setting("RECON_BANK_LIVEMODE")
    return {code for code in rows if provider_is_live(code) == livemode}


def deposits_between(*, since: date, until: date) -> list[Deposit]:
    rows = (SettlementLine.objects
            .filter(file__file_date__range=(since, until))
            .exclude(status=MatchStatus.MALFORMED).exclude(currency="")
            .values("file_id", "file__provider", "file__file_date", "currency")
            .annotate(captured=Sum("net", filter=Q(type=LineType.CAPTURE), default=0),
                      refunded=Sum("net", filter=Q(type=LineType.REFUND), default=0),
                      count=Count("id"),
                      settled=Count("id", filter=Q(settled_at__isnull=False)))
            .order_by("file__file_date", "file_id", "currency"))
    rows = list(rows)
    providers = _mode_providers({row["file__provider"] for row in rows})
    return [Deposit(file_id=row["file_id"], provider=row["file__provider"],
                    file_date=row["file__file_date"], currency=row["currency"],
                    net=row["captured"] - row["refunded"], lines=row["count"],
                    settled_lines=row["settled"])
            for row in rows if row["file__provider"] in providers
            and row["captured"] != row["refunded"]]


def payout_rows(*conditions: Any, **lookups: Any) -> list[dict[str, Any]]:
    """Payouts of the bank account's mode (live or test merchants'), as plain rows."""
    return wallet_reads.payout_rows(*conditions, livemode=setting("RECON_BANK_LIVEMODE"),
                                    **lookups)


def _claimed_deposits() -> set[tuple[str, str]]:
    return set(BankLine.objects.filter(settlement_file__isnull=False)
               .values_list("settlement_file_id", "currency"))


# -- matching --------------------------------------------------------------------------------
def _line_key(line: BankLine) -> str:
    return f"bank:{line.statement_id}:{line.line_number}"


def _line_data(line: BankLine) -> dict[str, Any]:
    statement = line.statement
    return {"bank_statement": statement.id, "account": statement.account,
            "statement_id": statement.statement_id, "line_number": line.line_number,
            "booking_date": line.booking_date, "direction": line.direction,
            "amount": line.amount, "currency": line.currency,
            "bank_reference": line.bank_reference, "end_to_end_id": line.end_to_end_id,
            "counterparty": line.counterparty, "remittance_info": line.remittance_info}


def _references(line: BankLine) -> list[str]:
    """What may name a payout: the end-to-end id, the bank's reference, words of the remittance
    text (our `po_…` id or the provider's reference)."""
    words = re.split(r"[\s,;:/]+", line.remittance_info)[:20]
    found = [line.end_to_end_id, line.bank_reference, *words]
    return list(dict.fromkeys(ref for ref in found if len(ref) >= 6))


def _provider_names() -> dict[str, tuple[str, ...]]:
    names = {code: (code,) for code in setting("RECON_SETTLEMENT_PROVIDERS")}
    for code, extra in setting("RECON_BANK_PROVIDER_NAMES").items():
        names[code] = (code, *extra)
    return names


def _named_providers(line: BankLine, names: dict[str, tuple[str, ...]]) -> set[str]:
    text = f"{line.counterparty} {line.remittance_info}".casefold()
    return {code for code, aliases in names.items()
            if any(re.search(rf"(?<!\w){re.escape(alias.casefold())}(?!\w)", text)
                   for alias in aliases)}


def _names_deposit(line: BankLine, deposit: Deposit) -> bool:
    """The reference, if present: the file's id or day in the line's texts."""
    text = f"{line.remittance_info} {line.end_to_end_id} {line.bank_reference}"
    return (deposit.file_id in text or deposit.file_date.isoformat() in text
            or deposit.file_date.strftime("%Y%m%d") in text)


class _Matcher:
    """Matches bank lines (each with its `statement` loaded) inside the import transaction;
    returns the breaks for the lines that do not match."""

    def __init__(self, lines: list[BankLine]) -> None:
        self.lines = lines
        self.specs: list[BreakSpec] = []

    def _break(self, line: BankLine, type: str, *, ours: dict[str, Any] | None = None,
               our_amount: int | None = None, provider: str = "", reference: str = "",
               key: str = "", **extra: Any) -> None:
        self.specs.append(BreakSpec(
            type=type, key=key or _line_key(line),
            provider=provider, provider_reference=reference[:128], currency=line.currency,
            our_amount=our_amount, provider_amount=line.amount, our_data=ours or {},
            provider_data={**_line_data(line), **extra}))

    def run(self) -> list[BreakSpec]:
        debits = [line for line in self.lines if line.direction == BankDirection.DEBIT]
        leftover = self._match_payouts(debits)
        credits = [line for line in self.lines if line.direction == BankDirection.CREDIT]
        self._match_deposits(credits + leftover)
        BankLine.objects.bulk_update(self.lines, ["status", "settlement_file_id", "payout_id"])
        return self.specs

    def _match_payouts(self, debits: list[BankLine]) -> list[BankLine]:
        """Debits against our payouts by reference; returns the debits no payout names (a
        provider's negative settlement net may explain them)."""
        references = {ref for line in debits for ref in _references(line)}
        found: dict[str, dict[str, Any]] = {}
        if references:
            for row in payout_rows(Q(id__in=references) | Q(provider_reference__in=references)):
                found[row["id"]] = row
                if row["provider_reference"]:
                    found[row["provider_reference"]] = row
        taken = set(BankLine.objects.filter(status=BankMatch.MATCHED,
                                            payout_id__in=[row["id"] for row in found.values()])
                    .values_list("payout_id", flat=True))
        leftover = []
        for line in debits:
            payout = next((found[ref] for ref in _references(line) if ref in found), None)
            if payout is None:
                leftover.append(line)
                continue
            if payout["id"] in taken:
                self._break(line, BreakType.BANK_UNMATCHED_DEBIT, ours={"payout": payout},
                            our_amount=payout["amount"], provider=payout["provider"],
                            reference=payout["provider_reference"],
                            reason="the payout this debit names is already matched to an "
                                   "earlier bank line")
                continue
            line.payout_id = payout["id"]
            problem = (BreakType.BANK_STATUS_MISMATCH if payout["status"] not in PAYOUT_DEBITED
                       else BreakType.BANK_CURRENCY_MISMATCH
                       if payout["currency"] != line.currency
                       else BreakType.BANK_AMOUNT_MISMATCH if payout["amount"] != line.amount
                       else None)
            if problem is None:
                line.status = BankMatch.MATCHED
                taken.add(payout["id"])
                continue
            line.status = BankMatch.MISMATCHED
            self._break(line, problem, ours={"payout": payout}, our_amount=payout["amount"],
                        provider=payout["provider"], reference=payout["provider_reference"])
        return leftover

    def _match_deposits(self, lines: list[BankLine]) -> None:
        """Lines against settlement deposits (a credit for a positive net, a debit for a
        negative one) of the line's provider, booked within the window after the file's day.
        Exact matches first, so a wrong amount never takes a deposit another line pays
        exactly; then a wrong amount or currency where one deposit is the only candidate."""
        if not lines:
            return
        window = timedelta(days=setting("RECON_BANK_DEPOSIT_WINDOW_DAYS"))
        deposits = deposits_between(since=min(line.booking_date for line in lines) - window,
                                    until=max(line.booking_date for line in lines))
        taken = _claimed_deposits()
        names = _provider_names()
        candidates: dict[int, tuple[set[str], list[Deposit]]] = {}  # by line id
        for line in lines:
            named = _named_providers(line, names)
            pool = [d for d in deposits
                    if d.file_date <= line.booking_date <= d.file_date + window
                    and (d.net > 0) == (line.direction == BankDirection.CREDIT)
                    and (not named or d.provider in named)]
            referenced = [d for d in pool if _names_deposit(line, d)]
            candidates[line.pk] = (named, referenced or pool)
        unsettled = []
        for line in lines:
            named, pool = candidates[line.pk]
            exact = [d for d in pool if d.key not in taken and d.currency == line.currency
                     and abs(d.net) == line.amount]
            # A line from a counterparty we cannot name matches only when nothing else could.
            if exact and (named or len(exact) == 1):
                pick = min(exact, key=lambda d: (line.booking_date - d.file_date, d.file_id))
                line.status, line.settlement_file_id = BankMatch.MATCHED, pick.file_id
                taken.add(pick.key)
            else:
                unsettled.append(line)
        for line in unsettled:
            named, pool = candidates[line.pk]
            pool = [d for d in pool if d.key not in taken]
            same = [d for d in pool if d.currency == line.currency]
            problem, deposit = None, None
            if named and len(same) == 1:
                problem, deposit = BreakType.BANK_AMOUNT_MISMATCH, same[0]
            elif named and not same and len(pool) == 1:
                problem, deposit = BreakType.BANK_CURRENCY_MISMATCH, pool[0]
            if deposit is None or problem is None:
                kind = (BreakType.BANK_UNMATCHED_CREDIT if line.direction == BankDirection.CREDIT
                        else BreakType.BANK_UNMATCHED_DEBIT)
                self._break(line, kind, provider=",".join(sorted(named)),
                            candidates=[d.data() for d in pool][:20])
                continue
            line.status, line.settlement_file_id = BankMatch.MISMATCHED, deposit.file_id
            taken.add(deposit.key)
            self.specs.append(BreakSpec(
                type=problem, key=_line_key(line),
                provider=deposit.provider, currency=deposit.currency,
                our_amount=abs(deposit.net), provider_amount=line.amount,
                our_data={"settlement": deposit.data()},
                provider_data=_line_data(line)))


def bank_missing_scan(*, currency: str) -> list[BreakSpec]:
    """Deposits and payouts the imported statements should show and do not: those whose window
    ends within the period the statements of `currency` cover (first day to last, at most
    RECHECK_DAYS back), with no bank line attached. Days no statement covers are not judged."""
    cover = BankStatement.objects.filter(currency=currency).aggregate(
        start=Min("from_date"), end=Max("to_date"))
    if cover["start"] is None:
        return []
    end = cover["end"]
    start = max(cover["start"], end - timedelta(days=RECHECK_DAYS))
    specs = []
    deposit_window = timedelta(days=setting("RECON_BANK_DEPOSIT_WINDOW_DAYS"))
    taken = _claimed_deposits()
    for deposit in deposits_between(since=start, until=end - deposit_window):
        if deposit.currency != currency or deposit.key in taken:
            continue
        specs.append(BreakSpec(
            type=BreakType.BANK_DEPOSIT_MISSING,
            key=f"bank:deposit:{deposit.file_id}:{deposit.currency}", provider=deposit.provider,
            currency=deposit.currency, our_amount=abs(deposit.net),
            our_data={"settlement": deposit.data()},
            provider_data={"statements_cover": [start, end],
                           "expected_by": deposit.file_date + deposit_window}))
    payout_window = timedelta(days=setting("RECON_BANK_PAYOUT_WINDOW_DAYS"))
    for payout in payout_rows(~Exists(BankLine.objects.filter(payout_id=OuterRef("id"))),
                           currency=currency, status__in=PAYOUT_DEBITED,
                           created_at__date__range=(start, end - payout_window)):
        specs.append(BreakSpec(
            type=BreakType.BANK_PAYOUT_MISSING, key=f"bank:payout:{payout['id']}",
            provider=payout["provider"], provider_reference=payout["provider_reference"],
            currency=currency, our_amount=payout["amount"], our_data={"payout": payout},
            provider_data={"statements_cover": [start, end],
                           "expected_by": payout["created_at"].date() + payout_window}))
    return specs


# -- one reconciliation pass ------------------------------------------------------------------
BANK_LOCK = 0x62616E6B  # "bank": one pass at a time, so two never claim the same deposit
REMATCH_LIMIT = 5000
# Earlier lines are tried again, and deposits and payouts judged missing, this far back from the
# newest statement day: older ones were judged by the imports of their time and their breaks
# are in the queue (and the settlement aggregate stays a bounded range scan).
RECHECK_DAYS = 62


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BANK_LOCK])


def _reconcile(*, currency: str, fresh: list[BankLine]) -> int:
    """Match `fresh` lines, try earlier unmatched lines of `currency` again (the settlement file
    or payout they pay may have arrived since), close the breaks those matches answer, then
    judge what the statements should show and do not. Returns how many breaks are new."""
    specs = _Matcher(fresh).run() if fresh else []
    newest = BankStatement.objects.filter(currency=currency).aggregate(end=Max("to_date"))["end"]
    earlier = list(BankLine.objects.filter(status=BankMatch.UNMATCHED, currency=currency,
                                           booking_date__gte=newest - timedelta(days=RECHECK_DAYS))
                   .exclude(pk__in=[line.pk for line in fresh]).select_related("statement")
                   .order_by("-booking_date", "-id")[:REMATCH_LIMIT])
    if earlier:
        specs += _Matcher(earlier).run()
    _close_answered([line for line in (*fresh, *earlier) if line.status != BankMatch.UNMATCHED])
    specs += bank_missing_scan(currency=currency)
    return services.breaks_open(specs=specs)


def _close_answered(lines: list[BankLine]) -> None:
    """A line that now pays a deposit or a payout answers its own "unmatched" break and the
    "missing" break of what it pays: close them with a note that says where the money is (a
    mismatch, if any, has its own break)."""
    notes: dict[tuple[str, str], str] = {}
    for line in lines:
        found = (f"settlement file {line.settlement_file_id}" if line.settlement_file_id
                 else f"payout {line.payout_id}")
        note = (f"Closed by the bank reconciliation: bank line {_line_key(line)[5:]} pays "
                f"{found} ({line.status}).")
        unmatched = (BreakType.BANK_UNMATCHED_CREDIT if line.direction == BankDirection.CREDIT
                     else BreakType.BANK_UNMATCHED_DEBIT)
        notes[(unmatched, _line_key(line))] = note
        if line.settlement_file_id:
            notes[(BreakType.BANK_DEPOSIT_MISSING,
                   f"bank:deposit:{line.settlement_file_id}:{line.currency}")] = note
        if line.payout_id:
            notes[(BreakType.BANK_PAYOUT_MISSING, f"bank:payout:{line.payout_id}")] = note
    if not notes:
        return
    wanted = Q(pk__in=[])
    for type, key in notes:
        wanted |= Q(type=type, key=key)
    for break_id, type, key in (ReconciliationBreak.objects
                                .filter(wanted, status=BreakStatus.OPEN)
                                .order_by("id").values_list("id", "type", "key")):
        services.break_resolve(break_id=break_id, user=None, note=notes[(type, key)])


def bank_rematch() -> int:
    """The reconciliation pass without a new statement (after settlement files arrived, say):
    earlier unmatched lines tried again, answered breaks closed, what is missing judged again.
    Returns how many breaks are new."""
    new = 0
    for currency in (BankStatement.objects.order_by("currency")
                     .values_list("currency", flat=True).distinct()):
        with transaction.atomic():
            _lock()
            new += _reconcile(currency=currency, fresh=[])
    return new


# -- the service -----------------------------------------------------------------------------
@dataclass
class BankImportResult(services.ImportCounts):
    statement: BankStatement


def bank_statement_import(*, content: bytes, format: str | None = None,
                          imported_by: str = "") -> BankImportResult:
    """Check, store and match one bank statement, opening breaks for what does not agree, in one
    transaction. The same account, statement id and bytes again return the first import and
    change nothing; other bytes under an imported statement id are refused (a corrected
    statement needs its own id). Raises InvalidRequest (`bank_statement_refused`) with what is
    wrong, before anything is written."""
    if not content.strip():
        raise _refuse("the file is empty.")
    if len(content) > MAX_STATEMENT_BYTES:
        raise _refuse(f"the file is larger than {MAX_STATEMENT_BYTES // (1024 * 1024)} MiB.")
    format = format or statement_format(content)
    if format not in PARSERS:
        raise _refuse(f"unknown format {format!r} (camt053 or csv).")
    parsed = PARSERS[format](content)
    checksum = hashlib.sha256(content).hexdigest()
    lookup = {"account": parsed.account, "statement_id": parsed.statement_id}
    try:
        with transaction.atomic():
            _lock()
            existing = BankStatement.objects.filter(**lookup).first()
            if existing is not None:
                return _again(existing, checksum)
            statement = BankStatement.objects.create(
                **lookup, format=format, currency=parsed.currency,
                opening_balance=parsed.opening_balance, closing_balance=parsed.closing_balance,
                from_date=parsed.from_date, to_date=parsed.to_date, checksum=checksum,
                size_bytes=len(content), line_count=len(parsed.lines), raw=content,
                imported_by=imported_by[:150])
            lines = BankLine.objects.bulk_create([BankLine(
                statement=statement, line_number=line.line_number,
                booking_date=line.booking_date, value_date=line.value_date,
                direction=line.direction, amount=line.amount, currency=line.currency,
                bank_reference=line.bank_reference[:128], end_to_end_id=line.end_to_end_id[:128],
                counterparty=line.counterparty[:200], remittance_info=line.remittance_info[:500],
                status=BankMatch.UNMATCHED) for line in parsed.lines])
            breaks = _reconcile(currency=statement.currency, fresh=lines)
            result = BankImportResult(statement=statement, created=True, lines=len(lines),
                                      breaks=breaks)
            for line in lines:
                result.by_status[line.status] = result.by_status.get(line.status, 0) + 1
            result.matched = result.by_status.get(BankMatch.MATCHED, 0)
    except IntegrityError:
        # The same statement imported concurrently: the other import won.
        existing = BankStatement.objects.filter(**lookup).first()
        if existing is None:
            raise
        return _again(existing, checksum)
    return result


def _again(existing: BankStatement, checksum: str) -> BankImportResult:
    if existing.checksum != checksum:
        raise _refuse(f"statement {existing.statement_id!r} of account {existing.account} was "
                      f"already imported ({existing.id}) from a different file; a corrected "
                      "statement needs its own statement id.")
    return BankImportResult(statement=existing, created=False, lines=existing.line_count)
