"""Direct POSTs to every admin action URL without the permission answer 403 and change nothing."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model

from backoffice import services
from backoffice.audit import Actor
from backoffice.models import ApprovalRequest, AuditEntry, LedgerVerifyRun
from ledger.models import JournalEntry
from payments import services as payments
from payments.models import Dispute, Payment, Refund
from reconciliation.models import BreakType, ReconciliationBreak
from reconciliation.services import BreakSpec, breaks_open
from tests.factories import staff_user
from webhooks import services as webhooks
from webhooks.models import ProviderEvent, WebhookDelivery

pytestmark = pytest.mark.django_db


def _user(role: str, name: str | None = None):
    return staff_user(role, name)


def _state() -> dict[str, object]:
    """Everything an action could change."""
    return {
        "payments": sorted(Payment.objects.values_list("id", "status", "amount_refunded",
                                                       "amount_disputed")),
        "refunds": Refund.objects.count(), "disputes": sorted(
            Dispute.objects.values_list("id", "status")),
        "approvals": sorted(ApprovalRequest.objects.values_list("id", "status")),
        "audit": AuditEntry.objects.count(), "entries": JournalEntry.objects.count(),
        "deliveries": WebhookDelivery.objects.count(),
        "inbox": sorted(ProviderEvent.objects.values_list("id", "status", "attempts")),
        "breaks": sorted(ReconciliationBreak.objects.values_list("id", "status")),
        "verify_runs": LedgerVerifyRun.objects.count(),
    }


@pytest.fixture
def world(make_payment, merchant, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook",
                             enabled_events=["*"])
    captured = make_payment(100_000)
    authorized = make_payment(5000, state="authorized")
    dispute = payments.dispute_open(payment_id=captured.id, amount=1000)
    approval = services.refund_request(
        actor=Actor(user=_user("operator", "maker")), payment_id=captured.id, amount=60_000,
        reason="duplicate", note="big").approval
    delivery = WebhookDelivery.objects.first()
    inbox = ProviderEvent.objects.create(provider="sandbox", provider_event_id="ev_1",
                                         type="payment.captured", raw_body="{}",
                                         status="failed")
    breaks_open(specs=[BreakSpec(type=BreakType.MISSING_INTERNALLY, key="k1",
                                 provider="sandbox")])
    brk = ReconciliationBreak.objects.get()
    return {"captured": captured, "authorized": authorized, "dispute": dispute,
            "approval": approval, "delivery": delivery, "inbox": inbox, "break": brk,
            "merchant": merchant}


def _posts(w) -> list[tuple[str, dict[str, str]]]:
    pay, auth, dp = quote(w["captured"].id), quote(w["authorized"].id), quote(w["dispute"].id)
    return [
        (f"/admin/payments/payment/{pay}/refund/",
         {"amount": "1", "reason": "duplicate", "note": "x"}),
        (f"/admin/payments/payment/{auth}/capture/", {}),
        (f"/admin/payments/payment/{auth}/cancel/", {"note": "x"}),
        (f"/admin/payments/payment/{pay}/dispute/",
         {"provider_reference": "n1", "reason": "general", "note": "x"}),
        (f"/admin/payments/payment/{pay}/resend/", {}),
        (f"/admin/payments/dispute/{dp}/evidence/", {"uncategorized_text": "x"}),
        (f"/admin/payments/dispute/{dp}/accept/", {"note": "x"}),
        (f"/admin/payments/dispute/{dp}/decide/", {"outcome": "won", "note": "x"}),
        (f"/admin/backoffice/approvalrequest/{quote(w['approval'].id)}/decide/",
         {"decision": "approve", "comment": "x"}),
        (f"/admin/backoffice/approvalrequest/{quote(w['approval'].id)}/execute/", {}),
        ("/admin/backoffice/approvalrequest/ledger-adjustment/",
         {"merchant": w["merchant"].id, "currency": "usd", "account_kind": "available",
          "direction": "credit", "counter_account": "fees", "amount": "1", "note": "x"}),
        ("/admin/backoffice/ledgerverifyrun/start/", {}),
        (f"/admin/webhooks/webhookdelivery/{quote(w['delivery'].id)}/resend/", {}),
        (f"/admin/webhooks/providerevent/{quote(w['inbox'].id)}/replay/", {}),
        (f"/admin/reconciliation/reconciliationbreak/{quote(w['break'].id)}/close/",
         {"outcome": "resolve", "note": "x"}),
    ]


def test_a_viewer_gets_403_on_every_action_url_and_nothing_changes(client, world):
    client.force_login(_user("viewer"))
    before = _state()
    for url, body in _posts(world):
        assert client.post(url, body).status_code == 403, url
    assert _state() == before


def test_an_operator_gets_403_on_approval_urls(client, world):
    client.force_login(_user("operator", "op"))
    before = _state()
    for url, body in _posts(world):
        if "/approvalrequest/" in url and "ledger-adjustment" not in url:
            assert client.post(url, body).status_code == 403, url
    assert _state() == before


def test_an_approver_gets_403_on_operator_urls(client, world):
    client.force_login(_user("approver"))
    before = _state()
    for url, body in _posts(world):
        if "/payments/" in url or "/webhooks/" in url or "/reconciliation/" in url:
            assert client.post(url, body).status_code == 403, url
    assert _state() == before


def test_staff_without_a_role_and_anonymous_users_change_nothing(client, world):
    before = _state()
    for url, body in _posts(world):
        assert client.post(url, body).status_code == 302  # to the login page
    client.force_login(get_user_model().objects.create_user("nobody", is_staff=True))
    for url, body in _posts(world):
        assert client.post(url, body).status_code == 403, url
    assert _state() == before


def test_action_urls_refuse_get(client, world):
    client.force_login(_user("admin", "root"))
    url, _ = _posts(world)[0]
    assert client.get(url).status_code == 405
