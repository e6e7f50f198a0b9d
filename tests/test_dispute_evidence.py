"""Dispute evidence: files uploaded through the API (type by content, size limit, encrypted
outside the web root, downloaded only as attachments, only by their merchant), evidence naming
them, submitted once through the provider port, the provider's decision moving the money, and
the deadline reminder job."""

from __future__ import annotations

import struct
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.utils import timezone

from payments import services
from payments.models import Dispute, EvidenceFile, PaymentAttempt
from tests.factories import balances_of, staff_user
from webhooks.models import Event

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


PNG = _png()


def upload(api, content: bytes, *, name: str = "receipt.pdf", purpose: str = "dispute_evidence",
           key: str | None = None):
    """POST /v1/files as multipart, the way a client library sends it."""
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api.raw_key}"}
    if key:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    from django.core.files.uploadedfile import SimpleUploadedFile
    return client.post("/api/v1/files", {"purpose": purpose,
                                         "file": SimpleUploadedFile(name, content)}, **headers)


def _stored_files() -> list[Path]:
    from django.conf import settings
    return [path for path in Path(settings.EVIDENCE_STORAGE_DIR).rglob("*") if path.is_file()]



@pytest.fixture
def dispute(settled_payment):
    return services.dispute_open(payment_id=settled_payment.id, amount=4000,
                                 reason="product_not_received", provider_reference="sbx_dp_1")


# -- files --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "kind"), [(PDF, "pdf"), (PNG, "png"), (JPEG, "jpg")])
def test_pdf_png_and_jpeg_uploads_are_kept_encrypted_outside_the_web_root(api, content, kind):
    response = upload(api, content, name=f"evidence.{kind}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"].startswith("file_") and body["type"] == kind
    assert body["size"] == len(content) and body["purpose"] == "dispute_evidence"
    row = EvidenceFile.objects.get(pk=body["id"])
    stored = next(path for path in _stored_files() if path.name == Path(row.storage_name).name)
    assert content not in stored.read_bytes()  # encrypted at rest, no extension
    assert stored.suffix == "" and oct(stored.stat().st_mode & 0o777) == "0o600"


def test_a_file_downloads_only_as_an_attachment_and_only_for_its_merchant(api, other_api):
    file_id = upload(api, PDF, name="../../etc/re\u0301ceipt.pdf").json()["id"]
    response = api.get(f"/files/{file_id}/contents")
    assert response.status_code == 200
    assert response.content == PDF
    assert response["Content-Disposition"].startswith('attachment; filename="')
    assert "/" not in response["Content-Disposition"].split(";")[1]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert other_api.get(f"/files/{file_id}/contents").status_code == 404
    assert other_api.get(f"/files/{file_id}").status_code == 404
    assert [f["id"] for f in other_api.get("/files").json()["data"]] == []
    assert [f["id"] for f in api.get("/files").json()["data"]] == [file_id]


def test_a_file_over_the_limit_is_413_and_nothing_is_kept(api, settings):
    settings.EVIDENCE_MAX_BYTES = 1024
    before = len(_stored_files())
    big = PDF[:-6] + b"0" * 2048 + b"%%EOF\n"
    response = upload(api, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert EvidenceFile.objects.count() == 0 and len(_stored_files()) == before


@pytest.mark.parametrize(("content", "name", "code"), [
    (b"<html><script>alert(1)</script></html>", "receipt.pdf", "file_type_not_allowed"),
    (b"MZ\x90\x00 an executable", "receipt.png", "file_type_not_allowed"),
    (b"GIF89a" + b"\x00" * 20, "receipt.jpg", "file_type_not_allowed"),
    (PNG[:-12], "cut.png", "file_invalid"),  # starts as a PNG, truncated
    (PDF[:20], "cut.pdf", "file_invalid"),
])
def test_a_file_judged_by_its_bytes_not_its_name_is_refused_with_nothing_kept(
        api, content, name, code):
    before = len(_stored_files())
    response = upload(api, content, name=name)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] == "file"
    assert EvidenceFile.objects.count() == 0 and len(_stored_files()) == before


def test_an_upload_needs_a_known_purpose_and_exactly_one_file(api):
    assert upload(api, PDF, purpose="identity_document").status_code == 400
    client = Client()
    response = client.post("/api/v1/files", {"purpose": "dispute_evidence"},
                           HTTP_AUTHORIZATION=f"Bearer {api.raw_key}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    assert EvidenceFile.objects.count() == 0


def test_the_same_upload_retried_with_its_key_is_one_file(api):
    first = upload(api, PDF, key="upload-1")
    again = upload(api, PDF, key="upload-1")
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert upload(api, JPEG, name="other.jpg", key="upload-1").status_code == 422
    assert EvidenceFile.objects.count() == 1


def test_evidence_files_are_immutable_in_the_database(api):
    file_id = upload(api, PDF).json()["id"]
    for statement in ("UPDATE payments_evidencefile SET size = 1 WHERE id = %s",
                      "DELETE FROM payments_evidencefile WHERE id = %s"):
        with pytest.raises(IntegrityError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement, [file_id])


# -- evidence on a dispute ------------------------------------------------------------------------
def test_evidence_naming_another_merchants_file_is_400_and_changes_nothing(
        api, other_api, dispute):
    theirs = upload(other_api, PDF).json()["id"]
    response = api.post(f"/disputes/{dispute.id}", {"evidence": {"receipt": theirs}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "evidence[receipt]"
    missing = api.post(f"/disputes/{dispute.id}", {"evidence": {"receipt": "file_nope"}})
    assert missing.status_code == 400
    dispute.refresh_from_db()
    assert (dispute.status, dispute.evidence) == ("needs_response", {})
    assert not PaymentAttempt.objects.filter(dispute=dispute).exists()


def test_staged_evidence_then_submit_sends_it_once_through_the_provider(api, dispute):
    file_id = upload(api, PDF).json()["id"]
    staged = api.post(f"/disputes/{dispute.id}", {
        "evidence": {"receipt": file_id, "uncategorized_text": "Delivered, signed for."},
        "submit": False})
    assert staged.status_code == 200 and staged.json()["status"] == "needs_response"
    assert not PaymentAttempt.objects.filter(dispute=dispute).exists()
    submitted = api.post(f"/disputes/{dispute.id}/submit")
    assert submitted.status_code == 200, submitted.content
    body = submitted.json()
    assert body["status"] == "under_review" and body["evidence_details"]["submitted"]
    attempt = PaymentAttempt.objects.get(dispute=dispute)
    assert (attempt.kind, attempt.status, attempt.provider) == (
        "dispute_evidence", "approved", "sandbox")
    assert attempt.exchange["response"]["documents"] == ["receipt"]
    again = api.post(f"/disputes/{dispute.id}/submit")
    assert again.status_code == 409
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"more": "x"}}).status_code == 409
    assert PaymentAttempt.objects.filter(dispute=dispute).count() == 1


def test_submitting_without_evidence_is_400(api, dispute):
    response = api.post(f"/disputes/{dispute.id}/submit")
    assert response.status_code == 400
    assert not PaymentAttempt.objects.filter(dispute=dispute).exists()


@pytest.mark.parametrize(("text", "won"), [("winning_evidence", True),
                                           ("losing_evidence", False)])
def test_the_provider_decides_and_the_dispute_job_applies_it(
        api, merchant, dispute, settled_payment, text, won):
    before = balances_of(merchant)
    assert api.post(f"/disputes/{dispute.id}", {"evidence": {"uncategorized_text": text}}
                    ).json()["status"] == "under_review"
    assert services.disputes_refresh_due() == {"won" if won else "lost": 1}
    dispute.refresh_from_db()
    settled_payment.refresh_from_db()
    assert dispute.status == ("won" if won else "lost")
    assert dispute.decided_by == "provider"
    after = balances_of(merchant)
    assert after["disputed"] == 0
    assert after["available"] == before["available"] + (4000 if won else 0)
    assert settled_payment.status == ("settled" if won else "charged_back")
    # The next run asks nothing more: a closed dispute is no longer looked up.
    assert services.disputes_refresh_due(now=timezone.now() + timedelta(days=1)) == {}


def test_the_same_decision_again_changes_nothing_and_a_contrary_one_opens_a_break(dispute):
    from reconciliation.models import ReconciliationBreak

    services.dispute_provider_update(provider="sandbox", dispute_reference="sbx_dp_1",
                                     status="lost")
    entries = Event.objects.filter(type="dispute.closed").count()
    for _ in range(2):
        services.dispute_provider_update(provider="sandbox", dispute_reference="sbx_dp_1",
                                         status="lost")
    assert Event.objects.filter(type="dispute.closed").count() == entries == 1
    services.dispute_provider_update(provider="sandbox", dispute_reference="sbx_dp_1",
                                     status="won")
    dispute.refresh_from_db()
    assert dispute.status == "lost"
    assert ReconciliationBreak.objects.filter(type="provider_conflict").count() == 1


def test_a_decision_of_another_amount_moves_nothing_and_opens_a_break(dispute):
    from reconciliation.models import ReconciliationBreak

    services.dispute_provider_update(provider="sandbox", dispute_reference="sbx_dp_1",
                                     status="won", amount=3999)
    dispute.refresh_from_db()
    assert dispute.status == "needs_response"
    assert ReconciliationBreak.objects.filter(type="amount_mismatch").count() == 1


def test_a_closed_disputes_decision_is_final_in_the_database(dispute):
    services.dispute_resolve(dispute_id=dispute.id, won=True)
    for statement in ("UPDATE payments_dispute SET decided_by = 'staff' WHERE id = %s",
                      "UPDATE payments_dispute SET evidence = '{\"x\": \"y\"}' WHERE id = %s"):
        with pytest.raises(IntegrityError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement, [dispute.id])


def test_under_review_without_evidence_sent_is_refused_by_the_database(dispute):
    with pytest.raises(IntegrityError), transaction.atomic():
        Dispute.objects.filter(pk=dispute.id).update(status="under_review")


# -- the deadline reminder -----------------------------------------------------------------------
@pytest.fixture
def soon_and_later(settled_payment) -> tuple[Dispute, Dispute]:
    """Two disputes waiting for evidence: one due in 20 hours, one in 10 days."""
    return tuple(services.dispute_open(payment_id=settled_payment.id, amount=1000,
                                       provider_reference=f"sbx_{name}",
                                       due_by=timezone.now() + due)
                 for name, due in (("soon", timedelta(hours=20)), ("later", timedelta(days=10))))


def test_disputes_near_their_deadline_are_reminded_once(soon_and_later):
    soon, later = soon_and_later
    assert services.dispute_reminders_send() == [soon.id]
    assert services.dispute_reminders_send() == []
    reminders = Event.objects.filter(type="dispute.evidence_due_soon")
    assert [event.object_id for event in reminders] == [soon.id]
    # Ten days on, the other one is near its own deadline.
    assert services.dispute_reminders_send(now=timezone.now() + timedelta(days=8)) == [later.id]


# -- the back-office ------------------------------------------------------------------------------
def test_staff_attach_files_and_submit_and_only_the_provider_decides(client, dispute, merchant):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backoffice.models import AuditEntry

    staff_user("operator", "operator-evidence", client=client)
    url = f"/admin/payments/dispute/{dispute.id}/"
    bad = client.post(f"{url}file/", {"field": "receipt", "file": SimpleUploadedFile(
        "receipt.pdf", b"<script>alert(1)</script>")}, follow=True)
    assert "must be PDF, PNG or JPEG" in " ".join(str(m) for m in bad.context["messages"])
    good = client.post(f"{url}file/", {"field": "receipt", "file": SimpleUploadedFile(
        "receipt.pdf", PDF)}, follow=True)
    assert "attached as receipt" in " ".join(str(m) for m in good.context["messages"])
    file_id = dispute.__class__.objects.get(pk=dispute.id).evidence["receipt"]
    assert EvidenceFile.objects.get(pk=file_id).uploaded_by == "staff:operator-evidence"
    download = client.get(f"{url}files/{file_id}/")
    assert download.content == PDF and download["Content-Disposition"].startswith("attachment")
    sent = client.post(f"{url}evidence/", {"uncategorized_text": "winning_evidence"},
                       follow=True)
    assert "the dispute is under_review" in " ".join(str(m) for m in sent.context["messages"])
    asked = client.post(f"{url}refresh/", follow=True)
    assert "is won" in " ".join(str(m) for m in asked.context["messages"])
    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by) == ("won", "provider")
    assert list(AuditEntry.objects.filter(object_id=dispute.id).order_by("id")
                .values_list("action", flat=True)) == [
        "dispute.evidence_file", "dispute.evidence", "dispute.evidence.result",
        "dispute.refresh"]


def test_a_viewer_cannot_attach_files_and_files_of_other_disputes_are_404(
        client, dispute, api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    staff_user("viewer", client=client)
    url = f"/admin/payments/dispute/{dispute.id}/"
    response = client.post(f"{url}file/", {"field": "receipt", "file": SimpleUploadedFile(
        "receipt.pdf", PDF)})
    assert response.status_code == 403
    unrelated = upload(api, PDF).json()["id"]  # the same merchant's, not named by the dispute
    assert client.get(f"{url}files/{unrelated}/").status_code == 404
    assert EvidenceFile.objects.count() == 1


def test_the_dashboard_queues_disputes_near_their_deadline(client, soon_and_later):
    staff_user("viewer", client=client)
    soon, later = soon_and_later
    page = client.get("/admin/")
    assert [d.id for d in page.context["dashboard"]["disputes_due"]] == [soon.id]
    assert 'id="bo-disputes-due"' in page.content.decode()
    queue = client.get("/admin/payments/dispute/", {"due": "soon"})
    assert [d.id for d in queue.context["cl"].result_list] == [soon.id]
    assert later.id not in queue.content.decode()


def test_a_card_number_in_an_uploads_name_is_refused_and_nothing_kept(api):
    response = upload(api, PDF, name="4242 4242 4242 4242.pdf")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "card_data_not_allowed"
    assert EvidenceFile.objects.count() == 0


def test_beat_runs_the_dispute_job_which_applies_decisions_and_reminds(api, soon_and_later):
    from django_celery_beat.models import PeriodicTask

    from reconciliation import tasks
    from reconciliation.models import JobRun

    row = PeriodicTask.objects.get(name="recon-disputes")  # from reconciliation 0010
    assert row.enabled and row.task == "reconciliation.tasks.recon_disputes"
    soon, later = soon_and_later
    api.post(f"/disputes/{later.id}", {"evidence": {"uncategorized_text": "losing_evidence"}})
    assert tasks.recon_disputes() == 2  # both open disputes asked about
    run = JobRun.objects.get(job="recon_disputes")
    assert (run.fixed, run.details["reminded"], run.error) == (1, [soon.id], "")
    later.refresh_from_db()
    assert (later.status, later.decided_by) == ("lost", "provider")
    assert tasks.recon_disputes() == 0  # asked within the hour: nothing due, nobody reminded


def test_staff_cannot_record_a_decision_by_hand_once_the_evidence_went_to_the_provider(
        api, dispute):
    from backoffice import services as backoffice
    from backoffice.audit import Actor
    from core.errors import StateError

    operator = staff_user("operator")
    api.post(f"/disputes/{dispute.id}", {"evidence": {"uncategorized_text": "Delivered."}})
    for won in (True, False):
        with pytest.raises(StateError, match="provider's own decision"):
            backoffice.dispute_decision_record(actor=Actor(user=operator), dispute_id=dispute.id,
                                               won=won, note="letter", decision_reference="X")
    dispute.refresh_from_db()
    assert dispute.status == "under_review"
