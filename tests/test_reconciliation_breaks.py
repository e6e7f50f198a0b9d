"""The breaks queue: one break per finding, resolving needs a note and writes an audit row, and
the admin's resolve action goes through the same service; job runs and files are read-only."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages.storage.fallback import FallbackStorage
from django.db import IntegrityError

from backoffice import admin_base
from backoffice.admin.reconciliation import (
    JobRunAdmin,
    ReconciliationBreakAdmin,
    ReconciliationCheckAdmin,
    SettlementFileAdmin,
    SettlementLineAdmin,
)
from core.errors import InvalidRequest, NotFound, StateError
from reconciliation.models import (
    BreakAudit,
    BreakType,
    JobRun,
    ReconciliationBreak,
    ReconciliationCheck,
    SettlementFile,
    SettlementLine,
)
from reconciliation.services import BreakSpec, break_resolve, breaks_open


def _break(key: str = "cielo:capture:abc", type: str = BreakType.MISSING_INTERNALLY
           ) -> ReconciliationBreak:
    breaks_open(specs=[BreakSpec(type=type, key=key, provider="cielo",
                                 provider_reference="abc", provider_amount=1000,
                                 provider_data={"raw": "line"})])
    return ReconciliationBreak.objects.get(type=type, key=key)


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("finance", password="x" * 12, is_staff=True)


@pytest.mark.django_db
def test_the_same_finding_twice_is_one_break_even_after_it_was_resolved(staff):
    brk = _break()
    assert breaks_open(specs=[BreakSpec(type=brk.type, key=brk.key)]) == 0
    break_resolve(break_id=brk.id, user=staff, note="Provider confirmed a test charge.")
    assert breaks_open(specs=[BreakSpec(type=brk.type, key=brk.key)]) == 0
    assert ReconciliationBreak.objects.count() == 1
    # Another type about the same object is another break.
    assert breaks_open(specs=[BreakSpec(type=BreakType.AMOUNT_MISMATCH, key=brk.key)]) == 1
    with pytest.raises(IntegrityError):
        ReconciliationBreak.objects.create(type=brk.type, key=brk.key)


@pytest.mark.django_db
def test_resolving_needs_a_note_and_writes_an_audit_row(staff):
    brk = _break()
    for note in ("", "   "):
        with pytest.raises(InvalidRequest) as refused:
            break_resolve(break_id=brk.id, user=staff, note=note)
        assert refused.value.param == "note"
    with pytest.raises(InvalidRequest):
        break_resolve(break_id=brk.id, user=staff, note="why", status="open")
    with pytest.raises(NotFound):
        break_resolve(break_id="brk_missing", user=staff, note="why")
    assert BreakAudit.objects.count() == 0

    done = break_resolve(break_id=brk.id, user=staff, note="  Refunded by hand at Cielo. ",
                         status="ignored")
    assert (done.status, done.resolution_note, done.resolved_by) == (
        "ignored", "Refunded by hand at Cielo.", staff)
    assert done.resolved_at is not None
    audit = BreakAudit.objects.get()
    assert (audit.reconciliation_break_id, audit.action, audit.from_status, audit.user,
            audit.note) == (brk.id, "ignored", "open", staff, "Refunded by hand at Cielo.")
    with pytest.raises(StateError):
        break_resolve(break_id=brk.id, user=staff, note="again")
    assert BreakAudit.objects.count() == 1


@pytest.mark.django_db
def test_a_closed_break_without_a_note_is_refused_by_the_database():
    brk = _break()
    with pytest.raises(IntegrityError):
        ReconciliationBreak.objects.filter(pk=brk.pk).update(status="resolved")


def _request(rf, user, data=None):
    """A POST to the changelist as the admin sees it, for this app's own ModelAdmin (the site
    may register its own variant; this module's admin is what is under test here)."""
    request = rf.post("/admin/reconciliation/reconciliationbreak/", data or {})
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


@pytest.mark.django_db
def test_the_admin_resolve_action_requires_a_note_and_calls_the_service(rf, staff):
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_reconciliationbreak",
                                                 "change_reconciliationbreak"]))
    staff = get_user_model().objects.get(pk=staff.pk)  # fresh permission cache
    model_admin = ReconciliationBreakAdmin(ReconciliationBreak, admin.site)
    first, second = _break("k1"), _break("k2")
    picked = ReconciliationBreak.objects.filter(pk__in=[first.pk, second.pk])
    assert "resolve_breaks" in model_admin.get_actions(_request(rf, staff))

    form_page = model_admin.resolve_breaks(_request(rf, staff), picked)
    assert form_page.template_name == "admin/reconciliation/resolve_breaks.html"
    assert b"Close breaks" in form_page.render().content
    empty = model_admin.resolve_breaks(
        _request(rf, staff, {"apply": "1", "status": "resolved", "note": " "}), picked)
    assert empty is not None  # the form again, nothing closed
    assert ReconciliationBreak.objects.filter(status="open").count() == 2
    done = model_admin.resolve_breaks(
        _request(rf, staff, {"apply": "1", "status": "resolved", "note": "Matched by hand."}),
        picked)
    assert done is None  # back to the changelist
    assert set(ReconciliationBreak.objects.values_list("status", flat=True)) == {"resolved"}
    assert BreakAudit.objects.filter(user=staff, note="Matched by hand.").count() == 2


@pytest.mark.django_db
def test_without_the_change_permission_there_is_no_resolve_action(rf, staff):
    staff.user_permissions.add(Permission.objects.get(codename="view_reconciliationbreak"))
    staff = get_user_model().objects.get(pk=staff.pk)
    model_admin = ReconciliationBreakAdmin(ReconciliationBreak, admin.site)
    assert "resolve_breaks" not in model_admin.get_actions(_request(rf, staff))


@pytest.mark.django_db
def test_job_runs_files_lines_checks_and_breaks_are_read_only_in_the_admin(rf, staff):
    staff.is_superuser = True
    staff.save()
    request = _request(rf, staff)
    for model, model_admin in ((JobRun, JobRunAdmin), (SettlementFile, SettlementFileAdmin),
                               (SettlementLine, SettlementLineAdmin),
                               (ReconciliationCheck, ReconciliationCheckAdmin),
                               (ReconciliationBreak, ReconciliationBreakAdmin)):
        instance = model_admin(model, admin.site)
        assert not instance.has_add_permission(request), model
        assert not instance.has_change_permission(request), model
        assert not instance.has_delete_permission(request), model
    run = JobRun.objects.create(job="recon_janitor", started_at="2026-03-02T10:00:00Z")
    assert JobRunAdmin(JobRun, admin.site).duration(run) == "running or died"


@pytest.mark.django_db
def test_a_files_page_shows_its_own_problem_lines_first_and_at_most_a_page_of_them(
    rf, staff, monkeypatch
):
    from backoffice.admin import reconciliation as recon_admin
    from reconciliation.settlements import settlement_import

    header = ("DataVenda;DataPrevistaPagamento;PaymentId;MerchantOrderId;NSU;CodigoAutorizacao;"
              "Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;IdentificadorTransacao\r\n")

    def file(day: str, refs: list[str]):
        body = "".join(f"02/03/2026;04/03/2026;{ref};pay_x;1;A;Venda;BRL;100;2;98;{ref}\r\n"
                       for ref in refs)
        return settlement_import(provider="cielo", file_date=day,
                                 content=(header + body + "garbage\r\n").encode()).file

    file("2026-03-01", ["a1", "a2"])
    second = file("2026-03-02", ["b1", "b2", "b3"])
    SettlementLine.objects.filter(file=second, line_number=1).update(status="matched")
    staff.is_superuser = True
    request = rf.get(f"/admin/reconciliation/settlementfile/{second.id}/change/")
    request.user = staff
    file_admin = SettlementFileAdmin(SettlementFile, admin.site)
    inline = recon_admin.SettlementLineInline(SettlementFile, admin.site)
    kwargs = file_admin.get_formset_kwargs(request, second, inline, "lines")
    formset = inline.get_formset(request, second)(**kwargs)
    shown = [form.instance.line_number for form in formset.forms]
    assert shown == [2, 3, 4, 1]  # problems first, the matched line last, only this file
    monkeypatch.setattr(admin_base, "INLINE_LINES", 2)  # the limit every lines inline shares
    assert inline.lines_of(second).count() == 2
    assert "garbage" in file_admin.preview(second)
