"""Attacks on disputes worked with the provider (issue 17): a hostile merchant client, a
provider that lies, repeats, reorders and loses answers, and an operator deploying carelessly.
Each hole found is pinned by a test here next to the attacks that held."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client

from backoffice import services as backoffice
from backoffice.audit import Actor
from core.errors import ClearhouseError, StateError
from ledger.verify import ledger_verify
from payments import services
from payments.checks import check_evidence_storage, check_evidence_storage_set
from payments.models import Dispute, EvidenceFile, PaymentAttempt
from providers.sandbox import SandboxProvider
from reconciliation.models import ReconciliationBreak
from tests.factories import balances_of, merchant_with_key, staff_user
from tests.test_dispute_evidence import PDF, upload
from tests.threads import run_threads

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispute(settled_payment) -> Dispute:
    return services.dispute_open(payment_id=settled_payment.id, amount=4000,
                                 provider_reference="sbx_dp_att")


def _money_moved_once(merchant, *, available: int, disputed: int = 0) -> None:
    balances = balances_of(merchant)
    assert (balances["available"], balances["disputed"]) == (available, disputed)
    assert ledger_verify().ok


def _decide(provider_reference: str, dispute_reference: str, type: str, **extra):
    return services.payment_provider_event_apply(
        provider="sandbox", type=type, provider_reference=provider_reference,
        dispute_reference=dispute_reference, **extra)


# -- a hostile merchant client -------------------------------------------------------------------
@pytest.mark.parametrize(("content", "name"), [
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "x.pdf"),
    (b"<html><script>alert(1)</script></html>", "receipt.png"),
    (b"PK\x03\x04" + b"\x00" * 64, "bomb.pdf"),  # a zip (bomb) called a PDF
    (b"%PDF-1.4\n/JS (app.alert(1))", "truncated.pdf"),  # a PDF with no end
    (b"GIF89a" + b"\x00" * 10, "x.jpg"),
])
def test_files_that_are_not_what_they_claim_are_refused_and_nothing_is_kept(api, content, name):
    response = upload(api, content, name=name)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("file_type_not_allowed", "file_invalid")
    assert not EvidenceFile.objects.exists()


def test_a_polyglot_pdf_is_only_ever_downloaded_never_rendered(api):
    polyglot = b"%PDF-1.4\n<html><script>alert(document.cookie)</script>\n%%EOF\n"
    created = upload(api, polyglot, name='a"; filename="evil.html\r\nX-Hdr: 1.pdf')
    assert created.status_code == 200, created.content
    body = created.json()
    assert "\r" not in body["filename"] and '"' not in body["filename"]
    download = Client().get(f"/api/v1/files/{body['id']}/contents",
                            HTTP_AUTHORIZATION=f"Bearer {api.raw_key}")
    assert download.status_code == 200 and download.content == polyglot
    assert download["Content-Type"] == "application/pdf"
    assert download["Content-Disposition"].startswith("attachment;")
    assert download["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in download["Content-Security-Policy"]
    assert "X-Hdr" not in download


def test_other_merchants_files_and_disputes_are_404_every_way(api, other_api, dispute):
    file_id = upload(api, PDF).json()["id"]
    for path in (f"/api/v1/files/{file_id}", f"/api/v1/files/{file_id}/contents"):
        assert Client().get(path, HTTP_AUTHORIZATION=f"Bearer {other_api.raw_key}"
                            ).status_code == 404
    assert other_api.get(f"/disputes/{dispute.id}").status_code == 404
    assert other_api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "mine"}}
                          ).status_code == 404
    # Naming this merchant's file answers like a missing file, whatever the dispute.
    assert other_api.post(f"/disputes/{dispute.id}", {"evidence": {"receipt": file_id}}
                          ).json()["error"]["code"] == "resource_missing"
    assert other_api.post(f"/disputes/{dispute.id}/submit").status_code == 404
    assert other_api.post(f"/disputes/{dispute.id}/close").status_code == 404
    dispute.refresh_from_db()
    assert dispute.status == "needs_response" and dispute.evidence == {}


def test_the_same_key_with_another_body_is_refused_and_sends_nothing_more(api, dispute):
    first = api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "a"}, "submit": False},
                     key="ev-1")
    assert first.status_code == 200
    replay = api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "b"}, "submit": False},
                      key="ev-1")
    assert 400 <= replay.status_code < 500 and replay.status_code != 404
    dispute.refresh_from_db()
    assert dispute.evidence == {"text": "a"}


def test_huge_evidence_is_refused_whole(api, dispute):
    too_many = {f"field_{index}": "x" for index in range(21)}
    too_long = {"text": "x" * 5001}
    for evidence in (too_many, too_long):
        response = api.post(f"/disputes/{dispute.id}", {"evidence": evidence, "submit": False})
        assert 400 <= response.status_code < 500 and response.status_code != 404
    dispute.refresh_from_db()
    assert dispute.evidence == {}


def test_submit_after_close_and_evidence_after_close_are_409_and_nothing_is_sent(
        api, merchant, dispute):
    assert api.post(f"/disputes/{dispute.id}/close").status_code == 200
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"t": "x"}}).status_code == 409
    assert api.post(f"/disputes/{dispute.id}/submit").status_code == 409
    assert not PaymentAttempt.objects.filter(dispute=dispute).exists()
    _money_moved_once(merchant, available=10000 - 4000)


def test_an_evidence_attempt_for_a_closed_dispute_is_refused_by_the_database(dispute):
    services.dispute_resolve(dispute_id=dispute.id, won=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentAttempt.objects.create(payment=dispute.payment, dispute=dispute,
                                      kind="dispute_evidence", provider="sandbox",
                                      amount=dispute.amount)


def test_a_lost_answer_is_sent_again_with_the_same_key_until_the_provider_says(
        api, dispute, monkeypatch):
    """The evidence call dies (timeout): its attempt is `unknown` and blocks another submit.
    The provider's lookup says it never got the evidence, so the dispute job sends the same
    evidence again under the same idempotency key instead of leaving the case stuck."""
    real = SandboxProvider.dispute_submit_evidence
    keys = []

    def dies_once(self, request):
        keys.append(request.idempotency_key)
        if len(keys) == 1:
            raise TimeoutError("read timed out")
        return real(self, request)

    monkeypatch.setattr(SandboxProvider, "dispute_submit_evidence", dies_once)
    response = api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "Delivered."}})
    assert response.status_code == 200 and response.json()["status"] == "needs_response"
    assert api.post(f"/disputes/{dispute.id}/submit").status_code == 409  # in flight
    services.disputes_refresh_due()
    dispute.refresh_from_db()
    assert dispute.status == "under_review"
    assert len(keys) == 2 and keys[0] == keys[1]
    assert PaymentAttempt.objects.get(dispute=dispute).status == "approved"


@pytest.mark.django_db(transaction=True)
def test_two_submits_racing_send_the_evidence_once(settled_payment):
    dispute = services.dispute_open(payment_id=settled_payment.id, amount=4000,
                                    provider_reference="sbx_dp_race")
    services.dispute_evidence_update(merchant=dispute.merchant, dispute_id=dispute.id,
                                     evidence={"text": "Delivered."}, submit=False)
    results, errors = run_threads(4, lambda _: services.dispute_evidence_submit(
        merchant=dispute.merchant, dispute_id=dispute.id).status)
    assert results == ["under_review"]
    assert len(errors) == 3 and all(isinstance(error, ClearhouseError) for error in errors)
    assert PaymentAttempt.objects.filter(dispute=dispute).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_approved_loss_racing_the_evidence_submission_never_both(settled_payment):
    """Staff's "lost" letter approved at the moment the merchant submits evidence: either the
    evidence is refused (the case was closed by hand first) or the approval fails; a case sent
    to the provider is never closed by staff."""
    dispute = services.dispute_open(payment_id=settled_payment.id, amount=4000,
                                    provider_reference="sbx_dp_race2")
    services.dispute_evidence_update(merchant=dispute.merchant, dispute_id=dispute.id,
                                     evidence={"text": "Delivered."}, submit=False)
    operator, approver = Actor(user=staff_user("operator")), Actor(user=staff_user("approver"))
    approval = backoffice.dispute_decision_record(
        actor=operator, dispute_id=dispute.id, won=False, note="letter",
        decision_reference="L-2").approval

    def work(index: int):
        if index == 0:
            return services.dispute_evidence_submit(merchant=dispute.merchant,
                                                    dispute_id=dispute.id).status
        return backoffice.approval_decide(actor=approver, approval_id=approval.id,
                                          approve=True, comment="letter seen").status

    _results, errors = run_threads(2, work)
    dispute.refresh_from_db()
    sent = PaymentAttempt.objects.filter(dispute=dispute).exists()
    assert (dispute.status, dispute.decided_by, sent) in (
        ("under_review", "", True), ("lost", "staff", False))
    assert all(isinstance(error, ClearhouseError) for error in errors)
    assert ledger_verify().ok


# -- only the provider decides a case that went through it ---------------------------------------
def test_a_lost_decision_requested_before_the_evidence_went_out_cannot_be_approved_after(
        api, merchant, dispute):
    operator, approver = Actor(user=staff_user("operator")), Actor(user=staff_user("approver"))
    decision = backoffice.dispute_decision_record(actor=operator, dispute_id=dispute.id,
                                                  won=False, note="letter of 3 May",
                                                  decision_reference="L-1")
    assert decision.approval is not None
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "Delivered."}}
                    ).json()["status"] == "under_review"
    approval = backoffice.approval_decide(actor=approver, approval_id=decision.approval.id,
                                          approve=True, comment="seen the letter")
    dispute.refresh_from_db()
    assert dispute.status == "under_review" and dispute.decided_by == ""
    assert approval.status == "failed"
    _money_moved_once(merchant, available=10000 - 4000, disputed=4000)


@pytest.mark.parametrize("decided_by", ["staff", "merchant"])
def test_the_database_refuses_anyone_but_the_provider_closing_a_case_sent_to_it(
        api, dispute, decided_by):
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "Delivered."}}
                    ).json()["status"] == "under_review"
    with pytest.raises(StateError):
        services.dispute_resolve(dispute_id=dispute.id, won=decided_by == "staff",
                                 decided_by=decided_by)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE payments_dispute SET status = 'won', decided_by = %s, "
                       "closed_at = now() WHERE id = %s", [decided_by, dispute.id])


def test_the_merchant_cannot_concede_a_case_the_provider_is_deciding(api, merchant, dispute):
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "Delivered."}}
                    ).json()["status"] == "under_review"
    assert api.post(f"/disputes/{dispute.id}/close").status_code == 409
    dispute.refresh_from_db()
    assert dispute.status == "under_review"


# -- a provider that lies, repeats and reorders ---------------------------------------------------
def test_won_after_lost_and_lost_after_won_move_money_once_and_open_a_break(
        merchant, settled_payment, dispute):
    reference = settled_payment.provider_reference
    assert _decide(reference, "sbx_dp_att", "dispute.lost") == "applied"
    for _ in range(2):
        _decide(reference, "sbx_dp_att", "dispute.won")
        _decide(reference, "sbx_dp_att", "dispute.lost")
    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by) == ("lost", "provider")
    assert ReconciliationBreak.objects.filter(type="provider_conflict").count() == 1
    _money_moved_once(merchant, available=10000 - 4000)


def test_a_decision_naming_another_payments_dispute_moves_nothing_and_opens_a_break(
        merchant, settled_payment, dispute, make_payment):
    """The provider signs `dispute.won` about the other merchant's payment but names this
    merchant's case: the two facts contradict each other, so no money moves."""
    other, _ = merchant_with_key()
    theirs = make_payment(10000, on=other)
    services.payment_settle(payment_id=theirs.id, amount=10000, fee=0)
    theirs.refresh_from_db()
    assert _decide(theirs.provider_reference, "sbx_dp_att", "dispute.won",
                   give_up_holding=True) != "applied"
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    assert ReconciliationBreak.objects.filter(type="provider_conflict",
                                              payment_id=dispute.payment_id).count() == 1
    _money_moved_once(merchant, available=10000 - 4000, disputed=4000)
    _money_moved_once(other, available=10000)


def test_a_chargeback_notice_naming_another_payments_case_opens_nothing(
        merchant, settled_payment, dispute, make_payment):
    second = make_payment(10000)
    services.payment_settle(payment_id=second.id, amount=10000, fee=0)
    second.refresh_from_db()
    assert _decide(second.provider_reference, "sbx_dp_att", "dispute.opened",
                   amount=4000) != "applied"
    assert not Dispute.objects.filter(payment=second).exists()
    assert ReconciliationBreak.objects.filter(type="provider_conflict").count() == 1
    _money_moved_once(merchant, available=20000 - 4000, disputed=4000)


def test_a_decision_before_its_dispute_is_held_then_applied_once(
        merchant, settled_payment):
    reference = settled_payment.provider_reference
    assert _decide(reference, "sbx_dp_late", "dispute.won") == "held"
    services.dispute_open(payment_id=settled_payment.id, amount=2500,
                          provider_reference="sbx_dp_late")
    assert _decide(reference, "sbx_dp_late", "dispute.won") == "applied"
    assert _decide(reference, "sbx_dp_late", "dispute.won") == "applied"
    assert Dispute.objects.get(provider_reference="sbx_dp_late").status == "won"
    _money_moved_once(merchant, available=10000)


def test_a_decision_of_another_amount_or_currency_moves_nothing(
        merchant, settled_payment, dispute):
    reference = settled_payment.provider_reference
    _decide(reference, "sbx_dp_att", "dispute.lost", amount=40000)
    _decide(reference, "sbx_dp_att", "dispute.lost", amount=4000, currency="eur")
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    assert set(ReconciliationBreak.objects.values_list("type", flat=True)) == {
        "amount_mismatch", "currency_mismatch"}
    _money_moved_once(merchant, available=10000 - 4000, disputed=4000)


def test_a_lookup_contradicting_a_notice_opens_a_break_and_moves_nothing(
        api, merchant, settled_payment, dispute):
    """The notice said won; the provider's own lookup says lost: the first decision stands."""
    api.post(f"/disputes/{dispute.id}", {"evidence": {"text": "losing_evidence"}})
    _decide(settled_payment.provider_reference, "sbx_dp_att", "dispute.won")
    dispute.refresh_from_db()
    assert dispute.status == "won"
    for _ in range(2):
        services.dispute_refresh(dispute_id=dispute.id)
    assert ReconciliationBreak.objects.filter(type="provider_conflict").count() == 1
    _money_moved_once(merchant, available=10000)


@pytest.mark.parametrize("code", ["cielo", "rede", "getnet"])
def test_an_unsigned_or_forged_dispute_notice_is_refused_and_stores_nothing(
        settled_payment, dispute, code):
    from webhooks.models import ProviderEvent

    body = ('{"type": "dispute.lost", "event": "dispute.lost", "id": "forged-1", '
            '"NotificationId": "forged-1", "dispute": {"id": "sbx_dp_att"}, '
            '"provider_reference": "' + settled_payment.provider_reference + '"}')
    for headers in ({}, {"HTTP_X_SIGNATURE": "t=1,v1=00", "HTTP_X_CIELO_SIGNATURE": "00"}):
        response = Client().post(f"/webhooks/providers/{code}/", body,
                                 content_type="application/json", **headers)
        assert response.status_code == 400, response.content
    assert not ProviderEvent.objects.exists()
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"


def test_card_numbers_in_evidence_text_or_names_are_refused(api, dispute):
    for evidence in ({"text": "card 4242 4242 4242 4242"}, {"4242424242424242": "x"}):
        response = api.post(f"/disputes/{dispute.id}", {"evidence": evidence, "submit": False})
        assert response.status_code == 400, response.content
    dispute.refresh_from_db()
    assert dispute.evidence == {}


# -- an operator deploying from the README -------------------------------------------------------
def test_evidence_storage_inside_a_served_folder_fails_closed(api, settings, tmp_path):
    settings.STATIC_ROOT = str(tmp_path / "static")
    settings.EVIDENCE_STORAGE_DIR = str(tmp_path / "static" / "evidence")
    assert [error.id for error in check_evidence_storage(None)] == ["payments.E002"]
    response = upload(api, PDF)
    assert response.status_code >= 500 and "Traceback" not in response.content.decode()
    assert not EvidenceFile.objects.exists()
    assert not any(path.is_file() for path in Path(tmp_path).rglob("*"))


def test_evidence_storage_unset_fails_closed(api, settings):
    settings.EVIDENCE_STORAGE_DIR = ""
    assert [error.id for error in check_evidence_storage_set(None)] == ["payments.E001"]
    response = upload(api, PDF)
    assert response.status_code >= 500 and "Traceback" not in response.content.decode()
    assert not EvidenceFile.objects.exists()


def test_an_uploaded_file_has_no_url_under_static_or_media(api, settings):
    file_id = upload(api, PDF).json()["id"]
    row = EvidenceFile.objects.get(pk=file_id)
    client = Client()
    for prefix in (settings.STATIC_URL, getattr(settings, "MEDIA_URL", "/media/") or "/media/"):
        assert client.get(f"{prefix}{row.storage_name}").status_code == 404


# -- a dispute reference is data, never part of a URL's structure --------------------------------
HOSTILE_REFERENCE = "../../1/sales/sale_1/void?x="


@pytest.mark.parametrize("code", ["cielo", "rede", "getnet"])
def test_a_hostile_dispute_reference_stays_inside_its_path_segment(code, monkeypatch):
    """A chargeback id is the provider's (for Cielo, from an unsigned notice): put in the URL
    as it is, `../` and `?` would send evidence to, or look up, any other endpoint."""
    from providers.base import DisputeRetrieveRequest
    from providers.registry import get_provider

    adapter = get_provider(code)
    paths: list[str] = []

    def send(method, path, **kwargs):
        paths.append(path)
        raise RuntimeError("not sent")

    monkeypatch.setattr(adapter, "send", send)
    with pytest.raises(RuntimeError):
        adapter.dispute_retrieve(DisputeRetrieveRequest(dispute_reference=HOSTILE_REFERENCE,
                                                        provider_reference="sale_1"))
    assert "/../" not in paths[0] and "?" not in paths[0], paths[0]


def test_a_chargeback_notice_with_a_hostile_reference_opens_nothing(merchant, settled_payment):
    assert _decide(settled_payment.provider_reference, HOSTILE_REFERENCE, "dispute.opened",
                   amount=1000) == "ignored"
    assert not Dispute.objects.exists()
    _money_moved_once(merchant, available=10000)


def test_a_lookup_placing_the_case_on_another_charge_moves_nothing(
        merchant, dispute, monkeypatch):
    from providers.base import DisputeResult, DisputeState, Outcome

    monkeypatch.setattr(SandboxProvider, "dispute_retrieve", lambda self, request: DisputeResult(
        outcome=Outcome.APPROVED, dispute_reference=request.dispute_reference,
        provider_reference="someone_elses_sale", status=DisputeState.WON))
    services.dispute_refresh(dispute_id=dispute.id)
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    assert ReconciliationBreak.objects.filter(type="provider_conflict").count() == 1
    _money_moved_once(merchant, available=10000 - 4000, disputed=4000)
