"""Settlement files: each provider's format parsed from the simulator's real files, a 1,000-line
file with one of each mismatch yields exactly those breaks and settles every other capture,
importing it again changes nothing, and the balance shows the funds available less fees."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from core.ids import new_id
from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment
from providers.registry import get_provider
from reconciliation import jobs, settlements
from reconciliation.models import (
    BreakType,
    JobRun,
    ReconciliationBreak,
    SettlementFile,
    SettlementLine,
)
from reconciliation.services import BreakSpec, breaks_open
from tests.conftest import routing_rule
from tests.factories import pay
from webhooks.models import Event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = T0.date()


def _pay(merchant, amount, card="pm_card_visa"):
    return pay(merchant, amount=amount, card=card)


def _breaks() -> set[tuple[str, str]]:
    return {(b.type, b.payment_id or b.key) for b in ReconciliationBreak.objects.all()}


def _cielo_line(line: str, **changes: str) -> str:
    columns = ["DataVenda", "DataPrevistaPagamento", "PaymentId", "MerchantOrderId", "NSU",
               "CodigoAutorizacao", "Tipo", "Moeda", "ValorBruto", "Taxa", "ValorLiquido",
               "IdentificadorTransacao"]
    fields = dict(zip(columns, line.split(";"), strict=True))
    fields.update(changes)
    return ";".join(fields[name] for name in columns)


@pytest.mark.slow  # ~1,000 payments through the simulator and the ledger
@pytest.mark.django_db
def test_a_1000_line_file_yields_exactly_the_expected_breaks_and_settles_the_rest(
    simulator, merchant, api, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    captured = [_pay(merchant, 1000 + i) for i in range(995)]
    failed = _pay(merchant, 777, card="pm_card_declined")
    assert failed.status == "failed" and failed.provider == "cielo"
    refunds = [services.refund_create(merchant=merchant, payment_id=p.id, amount=100)
               for p in captured[:3]]
    assert {r.status for r in refunds} == {"succeeded"}

    text = get_provider("cielo").settlement_report(DAY).decode()
    header, *lines = text.split("\r\n")[:-1]
    assert len(lines) == 998  # 995 sales and 3 refunds, as the provider wrote them
    by_ref = {line.split(";")[2]: i for i, line in enumerate(lines) if ";Venda;" in line}
    missing_here, wrong_amount, wrong_currency, doubled = captured[10], captured[11], \
        captured[12], captured[13]
    i = by_ref[wrong_amount.provider_reference]
    gross, fee = int(lines[i].split(";")[8]) + 1, int(lines[i].split(";")[9])
    lines[i] = wrong_amount_line = _cielo_line(lines[i], ValorBruto=str(gross),
                                               ValorLiquido=str(gross - fee))
    lines[by_ref[wrong_currency.provider_reference]] = _cielo_line(
        lines[by_ref[wrong_currency.provider_reference]], Moeda="USD")
    template = lines[by_ref[captured[20].provider_reference]]
    lines += [
        _cielo_line(template, PaymentId="unknown-to-us", MerchantOrderId="order-elsewhere",
                    IdentificadorTransacao="unknown-to-us"),  # missing internally
        _cielo_line(template, PaymentId="charged-although-failed", MerchantOrderId=failed.id,
                    IdentificadorTransacao="charged-although-failed"),  # status mismatch
        lines[by_ref[doubled.provider_reference]],  # the same sale twice
    ]
    del lines[by_ref[missing_here.provider_reference]]  # captured here, never settled there
    assert len(lines) == 1000
    content = ("\r\n".join([header, *lines]) + "\r\n").encode()

    time_machine.move_to(T0 + timedelta(days=3), tick=False)
    imported = settlements.settlement_import(provider="cielo", file_date=DAY, content=content)
    settled = settlements.settlement_settle(file_id=imported.file.id)
    scanned = settlements.missing_at_provider_scan(provider="cielo")
    assert (imported.created, imported.lines, imported.breaks, scanned) == (True, 1000, 5, 1)
    assert imported.by_status == {"matched": 995, "mismatched": 3, "missing_internally": 1,
                                  "duplicate": 1}
    duplicate = SettlementLine.objects.get(status="duplicate")
    assert _breaks() == {
        (BreakType.MISSING_INTERNALLY, "cielo:capture:unknown-to-us"),
        (BreakType.STATUS_MISMATCH, failed.id),
        (BreakType.AMOUNT_MISMATCH, wrong_amount.id),
        (BreakType.CURRENCY_MISMATCH, wrong_currency.id),
        (BreakType.DUPLICATE_LINE, doubled.id),
        (BreakType.MISSING_AT_PROVIDER, missing_here.id),
    }
    amount_break = ReconciliationBreak.objects.get(type=BreakType.AMOUNT_MISMATCH)
    assert (amount_break.our_amount, amount_break.provider_amount) == (
        wrong_amount.amount_captured, wrong_amount.amount_captured + 1)
    assert amount_break.our_data["status"] == "captured"
    assert amount_break.provider_data["raw"] == wrong_amount_line
    assert amount_break.settlement_line.raw == wrong_amount_line
    assert ReconciliationBreak.objects.get(type=BreakType.DUPLICATE_LINE).settlement_line == \
        duplicate

    unsettled = {missing_here.id, wrong_amount.id, wrong_currency.id}
    statuses = dict(Payment.objects.filter(pk__in=[p.id for p in captured])
                    .values_list("id", "status"))
    assert {pid for pid, status in statuses.items() if status != "settled"} == unsettled
    assert settled.settled == 992
    assert JournalEntry.objects.filter(kind="settlement").count() == 992
    assert Event.objects.filter(type="payment.settled").count() == 992

    # Balance: pending keeps what did not settle; available has the rest less fees and refunds.
    matched = SettlementLine.objects.filter(status="matched", type="capture")
    gross_settled = sum(matched.values_list("gross", flat=True))
    fees = sum(matched.values_list("fee", flat=True))
    assert fees > 0
    total_captured = sum(p.amount_captured for p in captured)
    balance = api.get("/balance").json()
    assert balance["available"] == [{"amount": gross_settled - fees - 300, "currency": "brl"}]
    assert balance["pending"] == [{"amount": total_captured - gross_settled, "currency": "brl"}]
    assert ledger_verify().ok

    # The same file again changes nothing at all.
    counts = (SettlementFile.objects.count(), SettlementLine.objects.count(),
              ReconciliationBreak.objects.count(), JournalEntry.objects.count(),
              Event.objects.count())
    again = settlements.settlement_import(provider="cielo", file_date=DAY, content=content)
    assert (again.created, again.file.id, again.breaks) == (False, imported.file.id, 0)
    assert settlements.settlement_settle(file_id=again.file.id).settled == 0
    assert settlements.missing_at_provider_scan(provider="cielo") == 0
    assert counts == (SettlementFile.objects.count(), SettlementLine.objects.count(),
                      ReconciliationBreak.objects.count(), JournalEntry.objects.count(),
                      Event.objects.count())
    assert api.get("/balance").json() == balance


@pytest.mark.django_db
def test_each_providers_own_file_is_fetched_matched_and_settled(simulator, merchant, api,
                                                                time_machine):
    time_machine.move_to(T0, tick=False)
    expected = {}
    for code in ("cielo", "rede", "getnet"):
        rule = routing_rule(code)
        payments = [_pay(merchant, 2000 + n) for n in range(3)]
        refund = services.refund_create(merchant=merchant, payment_id=payments[0].id,
                                        amount=550)
        rule.delete()
        expected[code] = ({p.id for p in payments}, refund.id)

    time_machine.move_to(T0 + timedelta(days=1, hours=6), tick=False)
    run = jobs.settlements_job()  # the lookback days up to yesterday, every provider
    assert run.error == "" and run.broken == 0
    assert run.examined == 12 and run.fixed == 9  # 9 sales + 3 refunds; 9 settled
    assert ReconciliationBreak.objects.count() == 0
    for code, (payment_ids, refund_id) in expected.items():
        lines = SettlementLine.objects.filter(provider=code)
        assert set(lines.filter(type="capture").values_list("payment_id", flat=True)) == \
            payment_ids
        refund_line = lines.get(type="refund")
        assert (refund_line.refund_id, refund_line.gross, refund_line.status) == (
            refund_id, 550, "matched")
        assert set(Payment.objects.filter(pk__in=payment_ids)
                   .values_list("status", flat=True)) == {"settled"}
        capture = lines.filter(type="capture").first()
        assert capture.fee > 0 and capture.net == capture.gross - capture.fee
        assert capture.transaction_date == DAY
    # Three lookback days per provider; the empty ones are stored too (header only).
    assert SettlementFile.objects.count() == 9
    assert ledger_verify().ok

    rerun = jobs.settlements_job()
    assert (rerun.examined, rerun.fixed, rerun.broken) == (0, 0, 0)
    assert all(not f["new"] for f in rerun.details["files"])
    assert JobRun.objects.filter(job="recon_settlements").count() == 2


@pytest.mark.django_db
def test_a_capture_listed_again_in_a_later_file_is_a_duplicate(simulator, merchant,
                                                               time_machine):
    routing_rule("rede")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, 4321)
    content = get_provider("rede").settlement_report(DAY)
    first = settlements.settlement_import(provider="rede", file_date=DAY, content=content)
    settlements.settlement_settle(file_id=first.file.id)
    later = settlements.settlement_import(provider="rede", file_date=DAY + timedelta(days=1),
                                          content=content)
    assert later.by_status == {"duplicate": 1}
    brk = ReconciliationBreak.objects.get()
    assert (brk.type, brk.payment_id) == (BreakType.DUPLICATE_LINE, payment.id)
    assert JournalEntry.objects.filter(kind="settlement").count() == 1


def _parse(provider: str, text: str) -> list[settlements.SettlementRow]:
    return list(settlements.PARSERS[provider](text.splitlines(keepends=True)))


def test_rede_decimal_strings_follow_each_currencys_exponent():
    header = ("settlement_date,sale_date,tid,nsu,reference,type,currency,gross_amount,"
              "mdr_amount,net_amount,refund_id\n")
    lines = _parse("rede", header
                   + "2026-03-03,2026-03-02,t1,1,pay_1,sale,JPY,1050,21,1029,\n"
                   + "2026-03-03,2026-03-02,t2,2,pay_2,sale,KWD,1.050,0.021,1.029,\n"
                   + "2026-03-03,2026-03-02,t3,3,pay_3,refund,BRL,-25.00,0.00,-25.00,r3\n"
                   + "2026-03-03,2026-03-02,t4,4,pay_4,sale,BRL,10.505,0,10.505,\n")
    assert [(ln.currency, ln.gross, ln.fee, ln.net, ln.type) for ln in lines[:3]] == [
        ("jpy", 1050, 21, 1029, "capture"), ("kwd", 1050, 21, 1029, "capture"),
        ("brl", 2500, 0, 2500, "refund")]
    assert lines[2].refund_reference == "r3" and lines[2].provider_reference == "t3"
    assert "more decimals" in lines[3].error


def test_getnet_values_are_rescaled_exactly_to_minor_units():
    header = ("SELLER_ID,TRANSACTION_DATETIME,PAYMENT_ID,ORDER_ID,REFUND_ID,TRANSACTION_TYPE,"
              "CURRENCY,AMOUNT_VALUE,AMOUNT_SCALE,FEE_VALUE,NET_VALUE,TERMINAL_NSU\n")
    lines = _parse("getnet", header
                   + "s,2026-03-02T10:00:00Z,p1,pay_1,,CAPTURE,BRL,105000,4,2600,102400,1\n"
                   + "s,2026-03-02T10:00:00Z,p2,pay_2,,CAPTURE,KWD,1050,2,20,1030,2\n"
                   + "s,2026-03-02T10:00:00Z,p3,pay_3,,CAPTURE,BRL,105001,4,0,105001,3\n"
                   + "s,2026-03-02T10:00:00Z,p4,pay_4,r4,REFUND,BRL,-500,2,0,-500,4\n")
    assert [(ln.gross, ln.fee, ln.net) for ln in (lines[0], lines[1], lines[3])] == [
        (1050, 26, 1024), (10500, 200, 10300), (500, 0, 500)]
    assert "not exact" in lines[2].error
    assert lines[0].transaction_date == date(2026, 3, 2)


def test_cielo_lines_with_wrong_signs_or_fields_are_malformed_and_the_rest_parse():
    header = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
              "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")
    lines = _parse("cielo", header
                   + "02/03/2026;04/03/2026;p1;pay_1;1;A1;Venda;BRL;-1000;24;976;p1\r\n"
                   + "02/03/2026;04/03/2026;p2;pay_2;2\r\n"
                   + "\r\n"
                   + "02/03/2026;04/03/2026;p3;pay_3;3;A3;Troca;BRL;1000;24;976;p3\r\n"
                   + "02/03/2026;04/03/2026;p4;pay_4;4;A4;Venda;BRL;1000;24;976;p4\r\n")
    assert [bool(ln.error) for ln in lines] == [True, True, True, False]
    assert [ln.line_number for ln in lines] == [1, 2, 3, 4]
    assert (lines[3].gross, lines[3].fee, lines[3].net, lines[3].transaction_date) == (
        1000, 24, 976, date(2026, 3, 2))


@pytest.mark.django_db
def test_malformed_lines_and_a_bad_header_open_malformed_line_breaks():
    header = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
              "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")
    result = settlements.settlement_import(
        provider="cielo", file_date=DAY,
        content=(header + "02/03/2026;x;p1;pay_1;1;A1;Venda;XXX;1000;24;976;p1\r\n").encode())
    assert result.by_status == {"malformed": 1} and result.breaks == 1
    broken = settlements.settlement_import(provider="cielo", file_date=DAY,
                                           content=b"Date;Amount\r\n1;2\r\n")
    assert (broken.lines, broken.breaks) == (0, 1)
    assert "header lacks" in ReconciliationBreak.objects.get(
        key=f"{broken.file.id}:0").provider_data["error"]


@pytest.mark.django_db
def test_a_payment_that_cannot_be_settled_any_more_becomes_a_break(simulator, merchant,
                                                                   monkeypatch, time_machine):
    from core.errors import StateError

    routing_rule("getnet")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, 2500)
    content = get_provider("getnet").settlement_report(DAY)
    imported = settlements.settlement_import(provider="getnet", file_date=DAY, content=content)
    assert imported.by_status == {"matched": 1}

    def moved_meanwhile(**kwargs):
        raise StateError("This payment is 'canceled'; it cannot be settled.")

    monkeypatch.setattr(settlements.payments, "payment_settle", moved_meanwhile)
    assert settlements.settlement_settle(file_id=imported.file.id).failed == 1
    line = SettlementLine.objects.get()
    assert (line.status, line.settled_at) == ("mismatched", None)
    brk = ReconciliationBreak.objects.get()
    assert (brk.type, brk.payment_id, brk.settlement_line) == (BreakType.STATUS_MISMATCH,
                                                               payment.id, line)
    assert "canceled" in brk.provider_data["settle_error"]
    monkeypatch.undo()
    assert settlements.settlement_settle(file_id=imported.file.id).settled == 0


@pytest.mark.django_db
def test_a_duplicate_is_found_across_batches_of_the_same_file():
    header = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
              "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")
    sale = "02/03/2026;04/03/2026;ref-1;pay_x;1;A;Venda;BRL;100;2;98;ref-1\r\n"
    refund = "02/03/2026;04/03/2026;ref-1;pay_x;1;A;Estorno;BRL;-50;0;-50;rf-1\r\n"
    result = settlements.settlement_import(
        provider="cielo", file_date=DAY, content=(header + sale + refund + sale + refund).encode(),
        batch_size=1)
    assert [(line.type, line.status) for line in SettlementLine.objects.order_by("line_number")
            ] == [("capture", "missing_internally"), ("refund", "missing_internally"),
                  ("capture", "duplicate"), ("refund", "duplicate")]
    assert result.breaks == 4
    assert {b.type for b in ReconciliationBreak.objects.all()} == {
        BreakType.MISSING_INTERNALLY, BreakType.DUPLICATE_LINE}


@pytest.mark.django_db
def test_a_file_object_is_imported_like_bytes_and_stored_byte_for_byte(tmp_path, monkeypatch):
    from reconciliation.selectors import settlement_file_content, settlement_file_head

    monkeypatch.setattr(settlements, "CHUNK_BYTES", 100)  # several chunks for a small file
    header = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
              "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")
    raw = (header + "".join(f"02/03/2026;04/03/2026;r{n};pay_x;1;A;Venda;BRL;100;2;98;r{n}\r\n"
                            for n in range(20))).encode()
    path = tmp_path / "cielo.csv"
    path.write_bytes(raw)
    with path.open("rb") as stream:
        imported = settlements.settlement_import(provider="cielo", file_date=DAY,
                                                 content=stream)
        assert not stream.closed  # the caller's file is left open
    file = imported.file
    assert (imported.lines, file.size_bytes, file.line_count) == (20, len(raw), 20)
    assert file.chunks.count() == -(-len(raw) // 100)
    assert b"".join(settlement_file_content(file_id=file.id)) == raw
    assert settlement_file_head(file_id=file.id, size=150) == raw[:150]
    again = settlements.settlement_import(provider="cielo", file_date=DAY, content=raw)
    assert (again.created, again.file.id) == (False, file.id)  # same checksum as the bytes


CIELO_HEADER = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
                "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")


def _nothing_recorded() -> bool:
    return not (SettlementFile.objects.exists() or SettlementLine.objects.exists()
                or ReconciliationBreak.objects.exists())


@pytest.mark.django_db
def test_a_failure_while_parsing_or_matching_mid_file_records_nothing(monkeypatch):
    raw = (CIELO_HEADER + "".join(f"02/03/2026;04/03/2026;r{n};pay_x;1;A;Venda;BRL;100;2;98;r{n}"
                                  "\r\n" for n in range(10))).encode()
    parse = settlements.PARSERS["cielo"]

    def file_store_lost(lines):
        for line in parse(lines):
            if line.line_number == 6:
                raise OSError("file store connection lost")
            yield line

    monkeypatch.setitem(settlements.PARSERS, "cielo", file_store_lost)
    with pytest.raises(OSError, match="file store"):
        settlements.settlement_import(provider="cielo", file_date=DAY, content=raw, batch_size=2)
    assert _nothing_recorded()
    monkeypatch.undo()

    copy, copies = settlements._copy_lines, []

    def database_lost(rows):
        copies.append(rows)
        if len(copies) == 3:
            raise RuntimeError("database connection lost")
        copy(rows)

    monkeypatch.setattr(settlements, "_copy_lines", database_lost)
    with pytest.raises(RuntimeError, match="database"):
        settlements.settlement_import(provider="cielo", file_date=DAY, content=raw, batch_size=2)
    assert _nothing_recorded()
    monkeypatch.undo()

    imported = settlements.settlement_import(provider="cielo", file_date=DAY, content=raw,
                                             batch_size=2)
    assert (imported.created, imported.lines, imported.breaks) == (True, 10, 10)
    assert imported.by_status == {"missing_internally": 10}


@pytest.mark.django_db
def test_the_same_finding_twice_is_one_break_with_the_data_of_the_first():
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    first = BreakSpec(type=BreakType.AMOUNT_MISMATCH, key="cielo:capture:r1", provider="cielo",
                      payment_id="pay_1", our_amount=100, provider_amount=101,
                      our_data={"captured_at": at, "amount": 100}, provider_data={"raw": "a;b"})
    again = replace(first, provider_amount=999)
    other_type = replace(first, type=BreakType.STATUS_MISMATCH)
    assert breaks_open(specs=[first, again, other_type]) == 2
    assert breaks_open(specs=[again]) == 0  # stored already (in any status): not opened again
    assert breaks_open(specs=[]) == 0
    brk = ReconciliationBreak.objects.get(type=BreakType.AMOUNT_MISMATCH)
    assert re.fullmatch(r"brk_[A-Za-z0-9]{24}", brk.id)
    assert (brk.status, brk.provider_amount, brk.resolution_note, brk.settlement_line) == (
        "open", 101, "", None)
    # Encoded as the model's JSONField encodes (DjangoJSONEncoder).
    assert brk.our_data == {"captured_at": "2026-03-02T10:00:00Z", "amount": 100}
    assert brk.provider_data == {"raw": "a;b"} and brk.created_at is not None


def test_public_ids_are_24_base62_characters_that_do_not_repeat():
    ids = [new_id("brk") for _ in range(5000)]
    assert all(re.fullmatch(r"brk_[A-Za-z0-9]{24}", pk) for pk in ids)
    assert len(set(ids)) == len(ids)
    # Every character of the alphabet turns up (120,000 draws of 62 characters).
    assert len({char for pk in ids for char in pk[4:]}) == 62
