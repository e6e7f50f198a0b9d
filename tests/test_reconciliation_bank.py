"""The bank leg: camt.053 and CSV statements imported once and whole, their credits matched to
providers' settlement deposits and their debits to our payouts; each planted disagreement opens
exactly its break, a month that agrees opens none, and malformed or hostile files leave nothing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from core.errors import InvalidRequest
from core.ids import new_id
from providers.sandbox import SandboxProvider
from reconciliation.bank import bank_statement_import
from reconciliation.models import (
    BankLine,
    BankStatement,
    ReconciliationBreak,
    SettlementFile,
    SettlementLine,
)
from tests.factories import staff_user
from wallet import services as wallet
from wallet.models import Payout

TODAY = timezone.now().date()
START, END = TODAY - timedelta(days=25), TODAY + timedelta(days=5)
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.fixture(autouse=True)
def _test_mode_bank(settings):
    """These statements reconcile test-mode objects (the sandbox's payouts, as in a demo)."""
    settings.RECON_BANK_LIVEMODE = False


# -- the provider's and our side -------------------------------------------------------------
def settlement(provider: str, day: date, *lines: tuple[str, int, int],
               currency: str = "usd") -> SettlementFile:
    """A settlement file as settlements.py stores it: (type, gross, fee) per line."""
    file = SettlementFile.objects.create(provider=provider, file_date=day,
                                         checksum=hashlib.sha256(new_id("x").encode()).hexdigest())
    SettlementLine.objects.bulk_create([SettlementLine(
        file=file, line_number=number, provider=provider, type=kind,
        provider_reference=new_id("ref"), currency=currency, gross=gross, fee=fee,
        net=gross - fee, raw="", status="matched")
        for number, (kind, gross, fee) in enumerate(lines, 1)])
    return file


def payout(api, amount: int, destination: str = "ba_checking", *, paid: bool = True) -> Payout:
    assert api.post("/deposits", {"amount": amount, "currency": "usd",
                                  "method": "pix"}).status_code == 200
    body = api.post("/payouts", {"amount": amount, "currency": "usd",
                                 "destination": destination}).json()
    row = Payout.objects.get(pk=body["id"])
    if paid:
        SandboxProvider().complete("payout", row.provider_reference)
        row = wallet.payout_refresh(payout_id=row.id)
    return row


# -- the bank's side -------------------------------------------------------------------------
@dataclass
class Entry:
    day: date
    amount: int  # minor units, positive
    credit: bool
    reference: str = ""
    end_to_end: str = ""
    party: str = ""
    remittance: str = ""
    currency: str = "usd"


def _major(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def _closing(opening: int, entries: list[Entry]) -> int:
    return opening + sum(e.amount if e.credit else -e.amount for e in entries)


def camt053(entries: list[Entry], *, statement_id: str = "STMT-1", opening: int = 1_000_000,
            closing: int | None = None, currency: str = "USD") -> bytes:
    closing = _closing(opening, entries) if closing is None else closing

    def balance(code: str, amount: int, day: date) -> str:
        return (f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
                f'<Amt Ccy="{currency}">{_major(abs(amount))}</Amt>'
                f"<CdtDbtInd>{'CRDT' if amount >= 0 else 'DBIT'}</CdtDbtInd>"
                f"<Dt><Dt>{day}</Dt></Dt></Bal>")

    def entry(e: Entry) -> str:
        party = "Dbtr" if e.credit else "Cdtr"
        return (f'<Ntry><Amt Ccy="{e.currency.upper()}">{_major(e.amount)}</Amt>'
                f"<CdtDbtInd>{'CRDT' if e.credit else 'DBIT'}</CdtDbtInd><Sts>BOOK</Sts>"
                f"<BookgDt><Dt>{e.day}</Dt></BookgDt><ValDt><Dt>{e.day}</Dt></ValDt>"
                f"<AcctSvcrRef>{e.reference}</AcctSvcrRef><NtryDtls><TxDtls>"
                f"<Refs><EndToEndId>{e.end_to_end or 'NOTPROVIDED'}</EndToEndId></Refs>"
                f"<RltdPties><{party}><Nm>{e.party}</Nm></{party}></RltdPties>"
                f"<RmtInf><Ustrd>{e.remittance}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>")

    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>'
        f"<GrpHdr><MsgId>MSG-{statement_id}</MsgId><CreDtTm>{END}T23:00:00</CreDtTm></GrpHdr>"
        f"<Stmt><Id>{statement_id}</Id><CreDtTm>{END}T23:00:00</CreDtTm>"
        f"<FrToDt><FrDtTm>{START}T00:00:00</FrDtTm><ToDtTm>{END}T23:59:59</ToDtTm></FrToDt>"
        f"<Acct><Id><IBAN>{IBAN.replace(' ', '')}</IBAN></Id><Ccy>{currency}</Ccy></Acct>"
        + balance("OPBD", opening, START) + balance("CLBD", closing, END)
        + "".join(entry(e) for e in entries) + "</Stmt></BkToCstmrStmt></Document>"
    ).encode()


def statement_csv(entries: list[Entry], *, statement_id: str = "STMT-1",
                  opening: int = 1_000_000, closing: int | None = None) -> bytes:
    closing = _closing(opening, entries) if closing is None else closing
    rows = ["record,account,statement_id,currency,date,amount,direction,bank_reference,"
            "end_to_end_id,counterparty,remittance_info",
            f"opening,{IBAN},{statement_id},usd,{START},{_major(opening)},credit,,,,"]
    rows += [f"entry,{IBAN},{statement_id},{e.currency},{e.day},{_major(e.amount)},"
             f"{'credit' if e.credit else 'debit'},{e.reference},{e.end_to_end},"
             f'"{e.party}","{e.remittance}"' for e in entries]
    rows.append(f"closing,{IBAN},{statement_id},usd,{END},{_major(closing)},credit,,,,")
    return ("\r\n".join(rows) + "\r\n").encode()


BUILDERS = {"camt053": camt053, "csv": statement_csv}


def breaks() -> set[tuple[str, str]]:
    return set(ReconciliationBreak.objects.values_list("type", "key"))


def nothing_stored() -> bool:
    return not (BankStatement.objects.exists() or BankLine.objects.exists()
                or ReconciliationBreak.objects.exists())


# -- a month that agrees ---------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["camt053", "csv"])
def test_a_month_whose_deposits_and_payouts_are_all_on_the_bank_opens_no_break(api, fmt):
    days = [TODAY - timedelta(days=n) for n in (20, 19, 18, 17)]
    cielo = settlement("cielo", days[0], ("capture", 10_000, 250), ("capture", 5_000, 125),
                       ("refund", 2_000, 0))
    rede = settlement("rede", days[1], ("capture", 30_000, 900))
    getnet = settlement("getnet", days[2], ("capture", 7_000, 70))
    cielo_again = settlement("cielo", days[3], ("capture", 4_000, 100))
    paid, in_transit = payout(api, 12_345), payout(api, 800, paid=False)
    entries = [
        Entry(days[0] + timedelta(days=1), 12_625, True, "B1", party="CIELO SA",
              remittance=f"LIQUIDACAO {days[0]:%Y%m%d}"),
        Entry(days[1] + timedelta(days=2), 29_100, True, "B2", party="Rede S.A."),
        Entry(days[2] + timedelta(days=1), 6_930, True, "B3", party="GETNET ADQUIRENCIA"),
        Entry(days[3] + timedelta(days=1), 3_900, True, "B4", party="CIELO SA"),
        Entry(TODAY, 12_345, False, "B5", end_to_end=paid.id, party="Merchant"),
        Entry(TODAY, 800, False, "B6", remittance=f"payout {in_transit.provider_reference}"),
    ]
    result = bank_statement_import(content=BUILDERS[fmt](entries), format=fmt)

    assert (result.created, result.lines, result.matched, result.breaks) == (True, 6, 6, 0)
    assert breaks() == set()
    statement = result.statement
    assert (statement.account, statement.currency, statement.format) == (
        "DE89370400440532013000", "usd", fmt)
    assert (statement.from_date, statement.to_date) == (START, END)
    matched = dict(BankLine.objects.values_list("line_number", "settlement_file_id"))
    assert [matched[n] for n in (1, 2, 3, 4)] == [cielo.id, rede.id, getnet.id, cielo_again.id]
    assert dict(BankLine.objects.filter(line_number__gt=4)
                .values_list("line_number", "payout_id")) == {5: paid.id, 6: in_transit.id}


# -- each kind of disagreement ---------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["camt053", "csv"])
def test_planted_mismatches_become_exactly_the_expected_breaks(api, fmt):
    d = TODAY - timedelta(days=20)
    ok = settlement("getnet", d, ("capture", 2_000, 0))
    short = settlement("cielo", d, ("capture", 10_000, 0))
    in_reais = settlement("rede", d, ("capture", 5_000, 0), currency="brl")
    never_paid = settlement("getnet", d + timedelta(days=3), ("capture", 7_000, 0))
    good, wrong_amount, not_debited = payout(api, 1_000), payout(api, 2_000), payout(api, 3_000)
    failed = payout(api, 4_000, "ba_fail")
    assert failed.status == "failed"
    entries = [
        Entry(d + timedelta(days=1), 2_000, True, "OK1", party="GETNET"),
        Entry(d + timedelta(days=1), 9_990, True, "SHORT", party="CIELO SA"),
        Entry(d + timedelta(days=2), 5_000, True, "FX", party="REDE"),
        Entry(d + timedelta(days=2), 123, True, "INTEREST", party="Our bank",
              remittance="interest"),
        Entry(TODAY, 1_000, False, "OK2", end_to_end=good.id),
        Entry(TODAY, 2_001, False, "WRONG", end_to_end=wrong_amount.id),
        Entry(TODAY, 4_000, False, "FAILED", end_to_end=failed.id),
        Entry(TODAY, 50, False, "BANKFEE", remittance="account maintenance fee"),
    ]
    result = bank_statement_import(content=BUILDERS[fmt](entries), format=fmt)
    sid = result.statement.id

    assert breaks() == {
        ("bank_amount_mismatch", f"bank:{sid}:2"),  # the provider paid less than its file
        ("bank_currency_mismatch", f"bank:{sid}:3"),  # settled in brl, paid in usd
        ("bank_unmatched_credit", f"bank:{sid}:4"),  # money nobody explains
        ("bank_amount_mismatch", f"bank:{sid}:6"),  # a payout debited for another amount
        ("bank_status_mismatch", f"bank:{sid}:7"),  # debited, but we hold it failed
        ("bank_unmatched_debit", f"bank:{sid}:8"),  # money out that is no payout
        ("bank_deposit_missing", f"bank:deposit:{never_paid.id}:usd"),
        ("bank_payout_missing", f"bank:payout:{not_debited.id}"),
    }
    assert (result.matched, result.breaks) == (2, 8)
    by_key = {b.key: b for b in ReconciliationBreak.objects.all()}
    # Both sides are on each break: the provider's report or our payout, and the bank line.
    brk = by_key[f"bank:{sid}:2"]
    assert (brk.provider, brk.our_amount, brk.provider_amount) == ("cielo", 10_000, 9_990)
    assert brk.our_data["settlement"]["settlement_file"] == short.id
    assert brk.provider_data["bank_reference"] == "SHORT"
    brk = by_key[f"bank:{sid}:3"]
    assert (brk.our_data["settlement"]["settlement_file"], brk.our_data["settlement"]
            ["currency"], brk.provider_data["currency"]) == (in_reais.id, "brl", "usd")
    brk = by_key[f"bank:{sid}:6"]
    assert (brk.our_amount, brk.provider_amount) == (2_000, 2_001)
    assert brk.our_data["payout"]["id"] == wrong_amount.id
    assert by_key[f"bank:{sid}:7"].our_data["payout"]["status"] == "failed"
    brk = by_key[f"bank:payout:{not_debited.id}"]
    assert (brk.our_amount, brk.provider_amount) == (3_000, None)
    assert by_key[f"bank:deposit:{never_paid.id}:usd"].our_amount == 7_000
    assert BankLine.objects.get(line_number=1).settlement_file_id == ok.id


@pytest.mark.django_db
def test_a_live_bank_account_never_matches_test_payouts(api, settings):
    settings.RECON_BANK_LIVEMODE = True
    test_payout = payout(api, 1_000)
    result = bank_statement_import(content=statement_csv(
        [Entry(TODAY, 1_000, False, "X1", end_to_end=test_payout.id)]), format="csv")
    # Named on a live statement it is unexplained money, and never "missing" from the bank.
    assert breaks() == {("bank_unmatched_debit", f"bank:{result.statement.id}:1")}


# -- idempotent, and whole or nothing --------------------------------------------------------
@pytest.mark.django_db
def test_importing_the_same_file_twice_changes_nothing(api):
    settlement("cielo", TODAY - timedelta(days=20), ("capture", 10_000, 0))
    content = camt053([Entry(TODAY - timedelta(days=19), 9_000, True, "S", party="CIELO"),
                       Entry(TODAY, 77, True, "I", party="bank")])
    first = bank_statement_import(content=content)
    counts = (BankStatement.objects.count(), BankLine.objects.count(),
              sorted(ReconciliationBreak.objects.values_list("id", "type")))
    again = bank_statement_import(content=content)
    assert (again.created, again.statement.id, again.lines) == (False, first.statement.id, 2)
    assert (BankStatement.objects.count(), BankLine.objects.count(),
            sorted(ReconciliationBreak.objects.values_list("id", "type"))) == counts
    assert counts[:2] == (1, 2) and len(counts[2]) == 2

    other = camt053([Entry(TODAY, 78, True, "I", party="bank")])  # same statement id
    with pytest.raises(InvalidRequest, match=r"already imported .* from a different file"):
        bank_statement_import(content=other)
    assert BankLine.objects.count() == 2


@pytest.mark.django_db
def test_a_truncated_or_unbalanced_camt053_is_refused_whole(api):
    entries = [Entry(TODAY, 1_000, True, f"R{n}", party="CIELO") for n in range(5)]
    content = camt053(entries)
    with pytest.raises(InvalidRequest, match=r"not well-formed XML .* truncated"):
        bank_statement_import(content=content[: len(content) * 2 // 3])
    # Well-formed, but an entry is missing: the lines no longer reach the closing balance.
    with pytest.raises(InvalidRequest, match="not the closing balance"):
        bank_statement_import(content=camt053(entries[:4], closing=_closing(1_000_000,
                                                                             entries)))
    with pytest.raises(InvalidRequest, match="more decimals than usd allows"):
        bank_statement_import(content=content.replace(b">10.00<", b">10.001<", 1))
    with pytest.raises(InvalidRequest, match=r"not a camt\.053 document"):
        bank_statement_import(content=content.replace(b"camt.053.001.02", b"camt.052.001.02"))
    assert nothing_stored()


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "message"), [
    (lambda row: row.replace("10.00", "ten"), "line 3: 'ten' is not an unsigned decimal amount"),
    (lambda row: row + ",extra", "line 3: 12 fields"),
    (lambda row: row.replace("credit", "sideways"), "neither credit nor debit"),
    (lambda row: row.replace("STMT-1", "STMT-2"), "statement_id 'STMT-2' differs"),
    (lambda row: None, "not the closing balance"),  # the line left out
    ("no closing row", "must start with an 'opening' row and end with a 'closing' row"),
])
def test_a_csv_with_a_bad_line_is_refused_whole(change, message):
    content = statement_csv([Entry(TODAY, 1_000, True, "R1", party="CIELO"),
                             Entry(TODAY, 2_000, True, "R2", party="CIELO")])
    rows = content.decode().split("\r\n")[:-1]
    if callable(change):  # the first entry, on the file's third line
        rows[2] = change(rows[2])
        rows = [row for row in rows if row is not None]
    else:
        rows = rows[:-1]
    with pytest.raises(InvalidRequest, match=message):
        bank_statement_import(content="\r\n".join(rows).encode(), format="csv")
    assert nothing_stored()


@pytest.mark.django_db
@pytest.mark.parametrize("attack", [
    # Entity expansion ("billion laughs"): nine levels of ten.
    '<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY a0 "lol">'
    + "".join(f'<!ENTITY a{n} "{f"&a{n - 1};" * 10}">' for n in range(1, 10))
    + ']><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">&a9;</Document>',
    # An external entity reading a local file.
    '<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">&xxe;</Document>',
    # A parameter entity fetching an external DTD.
    '<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x">'
    '%ext;]><Document/>',
])
def test_hostile_xml_is_refused_unread(attack):
    with pytest.raises(InvalidRequest, match="declares a DTD or entities"):
        bank_statement_import(content=attack.encode(), format="camt053")
    assert nothing_stored()


@pytest.mark.django_db
def test_an_entity_without_a_dtd_is_refused_as_malformed():
    content = camt053([Entry(TODAY, 1_000, True, "R1", party="&xxe;")])
    with pytest.raises(InvalidRequest, match="undefined entity"):
        bank_statement_import(content=content)
    assert nothing_stored()


# -- the command -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_command_imports_once_and_refuses_a_bad_file(tmp_path: Path, capsys):
    good = tmp_path / "statement.csv"
    good.write_bytes(statement_csv([Entry(TODAY, 500, True, "R1", party="somebody")]))
    call_command("recon_bank_import", str(good), "--format", "csv")
    assert '"new": true' in capsys.readouterr().out
    call_command("recon_bank_import", str(good))
    assert '"new": false' in capsys.readouterr().out
    assert (BankStatement.objects.count(), BankLine.objects.count()) == (1, 1)

    bad = tmp_path / "statement.xml"
    bad.write_bytes(camt053([Entry(TODAY, 500, True, "R1")], statement_id="S2")[:-40])
    with pytest.raises(CommandError, match="Bank statement refused, nothing was imported"):
        call_command("recon_bank_import", str(bad), "--format", "camt053")
    assert BankStatement.objects.count() == 1


# -- the back-office upload ------------------------------------------------------------------
def _staff(client, role: str):
    return staff_user(role, client=client)


def _upload(client, content: bytes, name: str = "statement.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post("/admin/reconciliation/bankstatement/upload/",
                       {"file": SimpleUploadedFile(name, content), "format": ""}, follow=True)


@pytest.mark.django_db
def test_an_operator_imports_a_statement_in_the_back_office_and_a_viewer_cannot(client):
    from backoffice.models import AuditEntry

    content = statement_csv([Entry(TODAY, 500, True, "R1", party="somebody")])
    _staff(client, "viewer")
    assert client.get("/admin/reconciliation/bankstatement/upload/").status_code == 403
    assert _upload(client, content).status_code == 403
    assert not BankStatement.objects.exists()

    _staff(client, "operator")
    assert client.get("/admin/reconciliation/bankstatement/").status_code == 200
    page = _upload(client, content)
    statement = BankStatement.objects.get()
    assert "1 lines, 0 matched, 1 new break(s)" in page.content.decode()
    assert statement.imported_by == "operator"
    assert list(AuditEntry.objects.values_list("action", "object_id")) == [
        ("bank_statement.import", statement.id)]
    assert "already imported" in _upload(client, content).content.decode()
    page = client.get(f"/admin/reconciliation/bankstatement/{statement.pk}/change/")
    assert page.status_code == 200 and "somebody" in page.content.decode()

    page = _upload(client, content[:-30], "other.csv")  # the closing row cut off
    assert "nothing was imported" in page.content.decode()
    assert (BankStatement.objects.count(), AuditEntry.objects.count()) == (1, 1)


# -- late arrivals ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_late_settlement_file_matches_the_earlier_credit_and_closes_its_break(capsys):
    d = TODAY - timedelta(days=20)
    first = bank_statement_import(content=statement_csv(
        [Entry(d + timedelta(days=1), 4_000, True, "EARLY", party="CIELO SA")]))
    assert breaks() == {("bank_unmatched_credit", f"bank:{first.statement.id}:1")}

    late = settlement("cielo", d, ("capture", 4_100, 100))  # imported after the statement
    call_command("recon_bank_import", "--rematch")
    assert '"breaks": 0' in capsys.readouterr().out
    line = BankLine.objects.get()
    assert (line.status, line.settlement_file_id) == ("matched", late.id)
    brk = ReconciliationBreak.objects.get()
    assert brk.status == "resolved" and late.id in brk.resolution_note
    assert brk.audits.get().note == brk.resolution_note


@pytest.mark.django_db
def test_a_deposit_reported_missing_is_closed_when_a_later_statement_shows_it():
    d = TODAY - timedelta(days=20)
    file = settlement("rede", d, ("capture", 9_000, 0))
    bank_statement_import(content=statement_csv([Entry(d, 1, True, "X", party="someone")]))
    missing = ReconciliationBreak.objects.get(type="bank_deposit_missing")
    assert missing.key == f"bank:deposit:{file.id}:usd"

    # The bank's statement of another account (or a re-issued period) shows the money.
    later = statement_csv([Entry(d + timedelta(days=4), 9_000, True, "LATE", party="REDE")],
                          statement_id="STMT-2")
    assert bank_statement_import(content=later).breaks == 0
    missing.refresh_from_db()
    assert missing.status == "resolved" and file.id in missing.resolution_note
    assert BankLine.objects.get(statement__statement_id="STMT-2").settlement_file_id == file.id
