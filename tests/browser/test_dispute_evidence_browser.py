"""The dispute evidence flow in a real browser: an operator attaches a receipt (a PDF picked in
the file chooser) to a dispute, writes a summary, submits it all to the provider, and the
provider's decision, not the operator, closes the dispute. The screenshot of the dispute page
goes to the `screenshots` folder as dispute-evidence.png (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from payments import services as payments
from payments.models import Dispute, EvidenceFile, PaymentAttempt
from tests.browser.test_backoffice_browser import _login, _staff
from tests.factories import balances_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECEIPT = (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
           b"trailer << /Root 1 0 R >>\n%%EOF\n")


def test_an_operator_attaches_a_receipt_submits_and_the_provider_decides(
        browser_page, live_server, make_payment, merchant, screenshots: Path, tmp_path: Path):
    page = browser_page
    payment = make_payment(12_500)
    payments.payment_settle(payment_id=payment.id, amount=12_500, fee=0)
    before = balances_of(merchant)
    dispute = payments.dispute_open(payment_id=payment.id, amount=12_500,
                                    reason="product_not_received",
                                    provider_reference="sbx_case_481516")
    _staff("operator", "olivia")
    _login(page, live_server, "olivia")
    page.goto(live_server.url + reverse("admin:payments_dispute_change",
                                        args=[quote(dispute.id)]))

    receipt = tmp_path / "delivery-receipt.pdf"
    receipt.write_bytes(RECEIPT)
    page.select_option("#bo-evidence-file select[name=field]", "shipping_documentation")
    page.set_input_files("#bo-evidence-file input[type=file]", str(receipt))
    page.click("#bo-evidence-file button[type=submit]")
    page.wait_for_selector("text=attached as shipping documentation")
    assert page.locator(".bo-evidence-file").inner_text().startswith(
        "Shipping documentation: delivery-receipt.pdf")

    page.fill("#bo-evidence textarea[name=uncategorized_text]",
              "Delivered 2026-11-02, signed for by the cardholder. winning_evidence")
    page.fill("#bo-evidence input[name=shipping_tracking_number]", "1Z999AA10123456784")
    page.click("#bo-evidence button[type=submit]")
    page.wait_for_selector("text=Evidence sent; the dispute is under_review")
    page.wait_for_selector(".bo-submission >> text=approved")
    page.screenshot(path=str(screenshots / "dispute-evidence.png"), full_page=True)
    # Sent through the provider's API: no form to record a decision by hand is offered.
    assert page.locator("#bo-decision").count() == 0

    # Asking the provider applies what it decided.
    page.click("#bo-refresh button[type=submit]")
    page.wait_for_selector("text=is won")

    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by) == ("won", "provider")
    sent = EvidenceFile.objects.get(merchant=merchant)
    assert (sent.filename, sent.content_type, sent.size) == (
        "delivery-receipt.pdf", "application/pdf", len(RECEIPT))
    assert dispute.evidence["shipping_documentation"] == sent.id
    attempt = PaymentAttempt.objects.get(dispute=dispute)
    assert attempt.exchange["response"]["documents"] == ["shipping_documentation"]
    assert balances_of(merchant) == before  # the hold released, nothing charged back
    assert Dispute.objects.get(pk=dispute.id).closed_at is not None
