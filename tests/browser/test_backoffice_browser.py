"""The back-office in a real browser, as finance staff use it: refunds and their timeline, the
four-eyes rule, what a viewer sees, and closing a reconciliation break. Screenshots of the
dashboard, a payment timeline, the approvals queue and the breaks queue go to the `screenshots`
folder (docs/screenshots/ with UPDATE_SCREENSHOTS=1, see conftest.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from backoffice import services
from backoffice.audit import Actor
from backoffice.models import ApprovalRequest, AuditEntry
from payments import services as payments
from payments.models import Refund
from reconciliation.models import BreakType, ReconciliationBreak
from reconciliation.services import BreakSpec, breaks_open
from tests.factories import staff_user
from webhooks import services as webhooks
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct-horse-battery"


def _staff(role: str, name: str | None = None):
    return staff_user(role, name, password=PASSWORD, first_name=(name or role).title())


def _refund_in_browser(page, amount: str, reason: str, note: str) -> None:
    """Fill and send the refund form on a payment's page, as an operator does."""
    page.fill("#bo-refund input[name=amount]", amount)
    page.select_option("#bo-refund select[name=reason]", reason)
    page.fill("#bo-refund textarea[name=note]", note)
    page.click("#bo-refund button[type=submit]")


def _login(page, live_server, username: str) -> None:
    page.goto(live_server.url + reverse("admin:login"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(live_server.url + reverse("admin:index"))


def _logout(page, live_server) -> None:
    page.click("#logout-form button")
    page.wait_for_url(re.compile(r".*/logout/$"))


@pytest.fixture
def shot(screenshots: Path):
    def take(page, name: str, *, full_page: bool = False) -> None:
        page.screenshot(path=str(screenshots / name), full_page=full_page)

    return take


def _payment_url(live_server, payment) -> str:
    return live_server.url + reverse("admin:payments_payment_change", args=[quote(payment.id)])


@pytest.fixture
def endpoint(merchant, settings):
    """A merchant webhook endpoint (nothing listens there: deliveries are recorded, retried)."""
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    return webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/webhooks",
                                    enabled_events=["*"]).endpoint


def test_an_operator_refunds_40_of_100_and_the_timeline_shows_it(browser_page, live_server,
                                                                  make_payment, endpoint, shot):
    page = browser_page
    payment = make_payment(10_000)
    _staff("operator", "olivia")
    _login(page, live_server, "olivia")
    page.goto(_payment_url(live_server, payment))
    _refund_in_browser(page, "40.00", "requested_by_customer", "Ticket 4711: one item returned")
    success = page.locator(".messagelist .success")
    success.wait_for()
    refund = Refund.objects.get(payment=payment)
    assert f"Refund {refund.id} of 40.00 USD is succeeded" in success.inner_text()
    assert (refund.amount, refund.status) == (4000, "succeeded")

    timeline = page.locator("#bo-timeline")
    text = timeline.inner_text()
    assert f"Refund {refund.id}" in text and "40.00 USD" in text
    assert "Ledger entry: refund_created" in text and "Ledger entry: refund_succeeded" in text
    assert "Webhook refund.created" in text and "127.0.0.1:9/webhooks" in text
    assert page.locator("#bo-timeline tr.bo-item-webhook").count() >= 3
    page.locator("#timeline").scroll_into_view_if_needed()
    shot(page, "payment-timeline.png", full_page=True)


def test_a_refund_over_the_threshold_needs_another_person_and_happens_once(
        browser_page, live_server, make_payment, shot):
    page = browser_page
    payment = make_payment(100_000)
    _staff("operator", "oscar")
    _staff("approver", "amara")
    _login(page, live_server, "oscar")
    page.goto(_payment_url(live_server, payment))
    _refund_in_browser(page, "600", "duplicate", "Charged twice, see ticket 812")
    warning = page.locator(".messagelist .warning")
    warning.wait_for()
    assert "Nothing has been refunded yet" in warning.inner_text()
    approval = ApprovalRequest.objects.get()
    assert not Refund.objects.exists()

    page.goto(live_server.url + reverse("admin:backoffice_approvalrequest_change",
                                        args=[quote(approval.id)]))
    assert "You requested this, so you cannot approve it" in page.content()
    assert page.locator("button[value=approve]").count() == 0
    _logout(page, live_server)

    _login(page, live_server, "amara")
    _make_more_requests(payment)
    page.goto(live_server.url + reverse("admin:backoffice_approvalrequest_changelist")
              + "?status__exact=pending")
    assert approval.id in page.content()
    shot(page, "approvals-queue.png")
    page.click(f"text={approval.id}")
    assert "Refund 600.00 USD of payment" in page.inner_text("#bo-summary")
    stale = page.context.new_page()  # the same form open in a second tab
    stale.goto(page.url)
    page.fill("#bo-decide textarea[name=comment]", "Duplicate confirmed in the statement")
    page.click("#bo-decide button[value=approve]")
    page.locator(".messagelist .success").wait_for()
    assert f"Approved {approval.id} and done" in page.inner_text(".messagelist")
    # The stale form, submitted after the decision: refused, nothing refunded twice.
    stale.fill("#bo-decide textarea[name=comment]", "again")
    stale.click("#bo-decide button[value=approve]")
    stale.locator(".messagelist .error").wait_for()
    assert "is already 'Approved and done'" in stale.inner_text(".messagelist .error")
    stale.close()
    refund = Refund.objects.get(payment=payment)
    assert (refund.amount, refund.status, refund.idempotency_key) == (60_000, "succeeded",
                                                                       approval.id)
    approval.refresh_from_db()
    assert approval.status == "executed" and approval.decided_by.username == "amara"


def _make_more_requests(payment) -> None:
    """A fuller queue for the screenshot: a ledger adjustment and a dispute to accept."""
    maker = Actor(user=get_user_model().objects.get(username="oscar"))
    services.ledger_adjustment_request(
        actor=maker, merchant_id=payment.merchant_id, currency="usd", account_kind="available",
        direction="credit", counter_account="fees", amount=1_250,
        note="Refund of a wrongly charged fee, ticket 799")
    dispute = payments.dispute_open(payment_id=payment.id, amount=5_000,
                                    provider_reference="CB-2231")
    services.dispute_accept_request(actor=maker, dispute_id=dispute.id,
                                    note="Merchant has no proof of delivery")


def test_a_viewer_sees_no_action_buttons(browser_page, live_server, make_payment):
    page = browser_page
    payment = make_payment(10_000)
    approval = services.refund_request(
        actor=Actor(user=_staff("operator", "omar")), payment_id=payment.id, amount=9_000,
        reason="duplicate", note="x").approval or ApprovalRequest.objects.first()
    breaks_open(specs=[BreakSpec(type=BreakType.MISSING_AT_PROVIDER, key="k", provider="sandbox")])
    _staff("viewer", "vera")
    _login(page, live_server, "vera")
    pages = [_payment_url(live_server, payment),
             live_server.url + reverse("admin:reconciliation_reconciliationbreak_change",
                                       args=[quote(ReconciliationBreak.objects.get().id)]),
             live_server.url + reverse("admin:backoffice_ledgerverifyrun_changelist")]
    if approval is not None:
        pages.append(live_server.url + reverse("admin:backoffice_approvalrequest_change",
                                               args=[quote(approval.id)]))
    for url in pages:
        page.goto(url)
        # Every back-office action is a POST form in a card; the admin's own read-only form
        # (no submit button) is the only other form on these pages.
        assert page.locator("#content .bo-card form").count() == 0, url
        assert page.locator("#content button[type=submit]").count() == 0, url
    page.goto(pages[0])
    assert "need the operator role" in page.inner_text("#content")


def test_a_break_is_resolved_with_a_note_and_leaves_an_audit_row(browser_page, live_server,
                                                                  shot):
    page = browser_page
    breaks_open(specs=[
        BreakSpec(type=BreakType.AMOUNT_MISMATCH, key="cielo:capture:A1", provider="cielo",
                  provider_reference="A1", currency="brl", our_amount=15_000,
                  provider_amount=14_550),
        BreakSpec(type=BreakType.MISSING_INTERNALLY, key="rede:capture:R9", provider="rede",
                  provider_reference="R9", currency="brl", provider_amount=8_990),
        BreakSpec(type=BreakType.MISSING_AT_PROVIDER, key="getnet:pay_x", provider="getnet",
                  provider_reference="G7", currency="usd", our_amount=2_500),
        BreakSpec(type=BreakType.STUCK_UNRESOLVED, key="payment:pay_stuck", provider="cielo",
                  currency="brl", our_amount=7_700),
    ])
    ReconciliationBreak.objects.filter(key="rede:capture:R9").update(
        created_at=timezone.now() - timedelta(days=3))
    target = ReconciliationBreak.objects.get(key="cielo:capture:A1")
    operator = _staff("operator", "otto")
    _login(page, live_server, "otto")
    page.goto(live_server.url + reverse("admin:reconciliation_reconciliationbreak_changelist")
              + "?status__exact=open")
    assert "150.00 BRL" in page.content() and "145.50 BRL" in page.content()
    shot(page, "breaks-queue.png")
    page.click(f"text={target.id}")
    page.fill("#bo-close textarea[name=note]", "Acquirer fee of 4.50 BRL, confirmed by e-mail")
    page.click("#bo-close button[type=submit]")
    page.locator(".messagelist .success").wait_for()
    assert f"Break {target.id} is resolved" in page.inner_text(".messagelist")
    target.refresh_from_db()
    assert target.status == "resolved" and target.resolved_by == operator
    row = AuditEntry.objects.get(action="break.resolve", object_id=target.id)
    assert row.actor == operator and row.ip_address == "127.0.0.1"
    assert row.note.startswith("Acquirer fee") and row.after["status"] == "resolved"


def test_the_dashboard(browser_page, live_server, make_payment, merchant, settings, shot,
                       screenshots):
    page = browser_page
    for amount in (12_000, 4_550, 89_900, 2_500):
        make_payment(amount)
    make_payment(3_100, currency="brl")
    make_payment(700, payment_method="pm_card_declined", state="failed")
    for _ in range(2):  # the provider's answer is lost: these wait for reconciliation
        payments.payment_create(merchant=merchant, amount=1_999, currency="usd",
                                payment_method="pm_card_timeout", confirm=True)
    big = make_payment(250_000)
    operator = Actor(user=_staff("operator", "orla"))
    services.refund_request(actor=operator, payment_id=big.id, amount=120_000,
                            reason="requested_by_customer", note="Order canceled")
    breaks_open(specs=[BreakSpec(type=t, key=f"k{i}", provider="cielo")
                       for i, t in enumerate([BreakType.AMOUNT_MISMATCH,
                                              BreakType.AMOUNT_MISMATCH,
                                              BreakType.MISSING_INTERNALLY])])
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    endpoint = webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hooks",
                                        enabled_events=["*"]).endpoint
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=5))
    _staff("viewer", "val")
    _login(page, live_server, "val")
    assert "Today by provider" in page.text_content("#bo-dashboard")
    dashboard = page.text_content("#bo-dashboard")
    assert "83.3%" in dashboard  # usd: 5 captured, 1 declined (the waiting ones not counted)
    assert "3,589.50 USD" in dashboard and "31.00 BRL" in dashboard
    shot(page, "dashboard.png")
    trends = page.locator("#bo-trends")  # the charts: inline SVG drawn by the server
    assert trends.locator("svg.bo-chart").count() == 4  # USD and BRL volume, success, breaks
    trends.screenshot(path=str(screenshots / "dashboard-trends.png"))
