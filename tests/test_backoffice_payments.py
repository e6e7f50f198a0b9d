"""The payment page: indexed search, the timeline, and actions that call the API's services
(refund, capture, cancel, dispute from a notice, resend the latest webhook), each audited."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote

from backoffice.models import ApprovalRequest, AuditEntry
from payments import services as payments
from payments.models import Dispute, Payment, Refund
from tests.factories import staff_user
from webhooks import services as webhooks
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def _staff(client, role: str, name: str | None = None):
    return staff_user(role, name, client=client)


def _url(payment: Payment, action: str = "") -> str:
    base = f"/admin/payments/payment/{quote(payment.id)}/"
    return f"{base}{action}/" if action else f"{base}change/"


def _messages(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


@pytest.fixture
def endpoint(merchant, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    return webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook",
                                    enabled_events=["*"]).endpoint


def _form_key(client, payment: Payment) -> str:
    page = client.get(_url(payment)).content.decode()
    return re.search(r'name="form_key" value="(bo_\w+)"', page).group(1)


def test_an_operator_refunds_part_of_a_payment_and_it_is_audited(client, make_payment, endpoint):
    payment = make_payment(10000)
    operator = _staff(client, "operator")
    response = client.post(_url(payment, "refund"), {
        "amount": "40.00", "reason": "requested_by_customer", "note": "Ticket 123",
        "form_key": _form_key(client, payment)}, follow=True)
    assert "Refund re_" in _messages(response) and "40.00 USD is succeeded" in _messages(response)
    refund = Refund.objects.get(payment=payment)
    assert (refund.amount, refund.status) == (4000, "succeeded")
    assert refund.metadata["requested_by"] == "operator"
    payment.refresh_from_db()
    assert payment.amount_refunded == 4000 and payment.status == "captured"
    started, finished = AuditEntry.objects.filter(object_id=payment.id).order_by("id")
    assert (started.action, finished.action) == ("payment.refund", "payment.refund.result")
    assert started.actor == operator and started.ip_address == "127.0.0.1"
    assert started.before["amount_refunded"] == 0
    assert finished.after["payment"]["amount_refunded"] == 4000
    assert finished.after["refund"]["id"] == refund.id
    assert WebhookDelivery.objects.filter(event__object_id=refund.id).exists()


def test_a_double_submitted_refund_form_refunds_once_and_says_so(client, make_payment):
    payment = make_payment(10000)
    _staff(client, "operator")
    form = {"amount": "10", "reason": "duplicate", "note": "double click",
            "form_key": _form_key(client, payment)}
    client.post(_url(payment, "refund"), form)
    again = client.post(_url(payment, "refund"), form, follow=True)
    refund = Refund.objects.get(payment=payment)
    assert (f"This form was already submitted: refund {refund.id} of 10.00 USD is succeeded"
            in _messages(again))
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "payment.refund", "payment.refund.result"]


def test_a_double_submitted_refund_over_the_threshold_asks_an_approver_once(client,
                                                                            make_payment):
    """Two requests for one refund could both be approved: the form's key finds the first."""
    payment = make_payment(100000)  # threshold 500.00 USD in the test settings
    _staff(client, "operator")
    form = {"amount": "900", "reason": "requested_by_customer", "note": "double click",
            "form_key": _form_key(client, payment)}
    client.post(_url(payment, "refund"), form)
    again = client.post(_url(payment, "refund"), form, follow=True)
    approval = ApprovalRequest.objects.get(object_id=payment.id)
    assert (f"This form was already submitted: approval request {approval.id} for 900.00 USD"
            in _messages(again))
    assert not Refund.objects.filter(payment=payment).exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "approval.request"]
    changed = client.post(_url(payment, "refund"), {**form, "amount": "800"}, follow=True)
    assert f"already submitted as approval request {approval.id}" in _messages(changed)
    assert ApprovalRequest.objects.count() == 1


def test_a_form_key_reused_for_another_amount_is_refused_and_writes_nothing(client,
                                                                           make_payment):
    payment = make_payment(10000)
    _staff(client, "operator")
    key = _form_key(client, payment)
    client.post(_url(payment, "refund"), {"amount": "10", "reason": "duplicate", "note": "a",
                                          "form_key": key}, follow=True)
    refund = Refund.objects.get(payment=payment)
    audit_rows = AuditEntry.objects.count()
    changed = client.post(_url(payment, "refund"), {"amount": "20", "reason": "duplicate",
                                                    "note": "b", "form_key": key}, follow=True)
    assert (f"This form was already submitted as refund {refund.id}" in _messages(changed)
            and "reload the page" in _messages(changed))
    assert "succeeded" not in _messages(changed)
    other = make_payment(10000)
    elsewhere = client.post(_url(other, "refund"), {"amount": "10", "reason": "duplicate",
                                                    "note": "c", "form_key": key}, follow=True)
    assert f"already submitted as refund {refund.id}" in _messages(elsewhere)
    assert Refund.objects.count() == 1 and AuditEntry.objects.count() == audit_rows


def test_a_refund_above_the_threshold_waits_for_an_approver(client, make_payment):
    payment = make_payment(100_000)
    _staff(client, "operator")
    response = client.post(_url(payment, "refund"), {
        "amount": "600", "reason": "requested_by_customer", "note": "Big one",
        "form_key": _form_key(client, payment)}, follow=True)
    assert "Nothing has been refunded yet" in _messages(response)
    assert "500.00 USD threshold" in _messages(response)
    approval = ApprovalRequest.objects.get()
    assert (approval.kind, approval.status, approval.amount) == ("refund", "pending", 60000)
    assert approval.params == {"payment_id": payment.id, "amount": 60000,
                               "reason": "requested_by_customer", "note": "Big one"}
    assert not Refund.objects.exists()
    assert AuditEntry.objects.filter(action="approval.request", object_id=approval.id).exists()


@pytest.mark.parametrize(("form", "expected"), [
    ({"amount": "40,00", "reason": "duplicate", "note": "x"}, "digits and a dot"),
    ({"amount": "40.001", "reason": "duplicate", "note": "x"}, "2 decimal place(s)"),
    ({"amount": "40", "reason": "", "note": "x"}, "Reason: This field is required"),
    ({"amount": "40", "reason": "duplicate", "note": ""}, "Note for the audit trail"),
    ({"amount": "200", "reason": "duplicate", "note": "x"}, "At most 100.00 USD"),
])
def test_refund_mistakes_change_nothing_and_say_what_to_do(client, make_payment, form, expected):
    payment = make_payment(10000)
    _staff(client, "operator")
    response = client.post(_url(payment, "refund"), form, follow=True)
    assert expected in _messages(response)
    assert not Refund.objects.exists() and not AuditEntry.objects.exists()


def test_capture_and_cancel_go_through_the_services(client, make_payment):
    _staff(client, "operator")
    captured = make_payment(5000, state="authorized")
    response = client.post(_url(captured, "capture"), {"amount": "30.00"}, follow=True)
    assert "Captured 30.00 USD" in _messages(response)
    captured.refresh_from_db()
    assert (captured.status, captured.amount_captured) == ("captured", 3000)
    canceled = make_payment(5000, state="authorized")
    response = client.post(_url(canceled, "cancel"), {"note": "customer changed mind"},
                           follow=True)
    canceled.refresh_from_db()
    assert canceled.status == "canceled" and "canceled" in _messages(response)
    refused = client.post(_url(canceled, "capture"), {}, follow=True)
    assert "Refused: This payment is 'canceled'" in _messages(refused)
    assert AuditEntry.objects.filter(action="payment.capture.result",
                                     note__startswith="refused").exists()


def test_a_dispute_from_a_provider_notice_holds_the_amount(client, make_payment):
    _staff(client, "operator")
    payment = make_payment(10000)
    form = {"provider_reference": "CB-77", "reason": "fraudulent", "amount": "25",
            "due_by": "2030-01-31", "note": "E-mail from the acquirer"}
    response = client.post(_url(payment, "dispute"), form, follow=True)
    assert "moved from the merchant's available balance to disputed" in _messages(response)
    again = client.post(_url(payment, "dispute"), form, follow=True)  # the same notice twice
    dispute = Dispute.objects.get()
    assert f"already recorded as dispute {dispute.id}" in _messages(again)
    assert "moved" not in _messages(again)
    assert (dispute.amount, dispute.provider_reference) == (2500, "CB-77")
    assert f"{dispute.due_by:%Y-%m-%d}" == "2030-01-31"
    assert AuditEntry.objects.filter(action="dispute.open", object_id=payment.id).count() == 1


def test_a_notice_whose_reference_belongs_to_another_payment_is_refused(client, make_payment):
    _staff(client, "operator")
    first, second = make_payment(10000), make_payment(10000)
    form = {"provider_reference": "CB-88", "reason": "fraudulent", "note": "E-mail"}
    client.post(_url(first, "dispute"), form)
    refused = client.post(_url(second, "dispute"), form, follow=True)
    text = _messages(refused)
    assert "Refused:" in text and f"of payment {first.id}, not of this payment" in text
    second.refresh_from_db()
    assert second.amount_disputed == 0 and Dispute.objects.count() == 1
    assert not AuditEntry.objects.filter(object_id=second.id).exists()


def test_resend_the_latest_webhook_of_a_payment(client, make_payment, endpoint):
    _staff(client, "operator")
    payment = make_payment(10000)
    payments.refund_create(merchant=payment.merchant, payment_id=payment.id, amount=100)
    before = WebhookDelivery.objects.count()
    response = client.post(_url(payment, "resend"), follow=True)
    assert "Queued 1 new webhook delivery" in _messages(response)
    newest = WebhookDelivery.objects.order_by("-created_at").first()
    assert WebhookDelivery.objects.count() == before + 1
    assert newest.event.type == "refund.succeeded"
    assert AuditEntry.objects.get(action="webhook.resend").object_id == newest.event_id


def test_resend_without_an_endpoint_says_so(client, make_payment):
    _staff(client, "operator")
    payment = make_payment(10000)
    response = client.post(_url(payment, "resend"), follow=True)
    assert "No enabled webhook endpoint" in _messages(response)


def test_the_timeline_merges_every_source_in_time_order(client, make_payment, endpoint):
    _staff(client, "viewer")
    payment = make_payment(10000)
    refund = payments.refund_create(merchant=payment.merchant, payment_id=payment.id,
                                    amount=4000, reason="duplicate")
    dispute = payments.dispute_open(payment_id=payment.id, amount=1000)
    page = client.get(_url(payment)).content.decode()
    timeline = page[page.index('id="bo-timeline"'):]
    for text in ("payment.created", "Authorize at sandbox", "Ledger entry: capture",
                 f"Refund {refund.id}", "Ledger entry: refund_created",
                 "Ledger entry: refund_succeeded", f"Dispute {dispute.id}",
                 "Webhook refund.created", "40.00 USD", "provider_clearing:sandbox"):
        assert text in timeline, text
    assert timeline.index("payment.created") < timeline.index(f"Refund {refund.id}") \
        < timeline.index(f"Dispute {dispute.id}")
    assert "Provider exchange (redacted)" in timeline or "authorize" in timeline


def test_a_viewer_sees_no_action_forms(client, make_payment):
    _staff(client, "viewer")
    payment = make_payment(10000)
    page = client.get(_url(payment)).content.decode()
    for action in ("refund", "capture", "cancel", "dispute", "resend"):
        assert f'action="{_url(payment, action)}"' not in page
    assert "<button type=\"submit\" name=" not in page and "need the operator role" in page


def test_an_operator_sees_the_forms_that_fit_the_state(client, make_payment):
    _staff(client, "operator")
    page = client.get(_url(make_payment(10000))).content.decode()
    assert 'id="bo-refund"' in page and 'id="bo-dispute"' in page
    assert 'id="bo-capture"' not in page and 'id="bo-cancel"' not in page
    assert "Refunds above 500.00 USD wait for an approver" in page


def test_search_finds_payments_by_id_reference_merchant_and_refund(client, make_payment,
                                                                    merchant):
    _staff(client, "viewer")
    payment = make_payment(10000)
    other = make_payment(2000)
    refund = payments.refund_create(merchant=merchant, payment_id=other.id, amount=100)

    def found(term: str) -> set[str]:
        page = client.get("/admin/payments/payment/", {"q": term})
        return {row.id for row in page.context["cl"].result_list}

    assert found(payment.id) == {payment.id}
    assert found(payment.provider_reference) == {payment.id}
    assert found(merchant.id) == {payment.id, other.id}
    assert found(merchant.name) == {payment.id, other.id}
    assert found(refund.id) == {other.id}
    assert found("nothing-like-this") == set()


def test_list_filters_by_status_provider_currency_and_date(client, make_payment):
    _staff(client, "viewer")
    captured = make_payment(10000)
    make_payment(10000, state="authorized")
    page = client.get("/admin/payments/payment/", {
        "status__exact": "captured", "provider": "sandbox", "currency": "usd",
        "created_at__gte": "2000-01-01 00:00:00+00:00"})
    assert [row.id for row in page.context["cl"].result_list] == [captured.id]
    text = page.content.decode()
    assert "100.00 USD" in text and "USD" in text


def test_escaped_and_unescaped_links_open_the_same_page(client):
    """An id starting with two hex digits (acct_4F…) would be misread from an unescaped link
    (older pages and backoffice.admin.ledger.entry_links build those); both forms work."""
    from tests.factories import MerchantFactory

    merchant = MerchantFactory(id="acct_4Fhexlooking0000000000", name="Hexa Shop")
    _staff(client, "viewer")
    for url in (f"/admin/core/merchant/{merchant.id}/change/",
                f"/admin/core/merchant/{quote(merchant.id)}/change/"):
        page = client.get(url)
        assert page.status_code == 200 and "Hexa Shop" in page.content.decode(), url


def test_the_refunds_list_costs_the_same_queries_with_1_or_11_refunds(
        client, make_payment, django_assert_max_num_queries):
    _staff(client, "viewer")
    payments.refund_create(merchant=(p := make_payment(10000)).merchant, payment_id=p.id,
                           amount=100)
    with django_assert_max_num_queries(30) as one:
        assert client.get("/admin/payments/refund/").status_code == 200
    for _ in range(10):
        other = make_payment(10000)
        payments.refund_create(merchant=other.merchant, payment_id=other.id, amount=100)
    with django_assert_max_num_queries(len(one.captured_queries)):
        page = client.get("/admin/payments/refund/")
    assert len(page.context["cl"].result_list) == 11


@pytest.mark.parametrize("url", [
    "/admin/payments/payment/?currency=%00",
    "/admin/payments/payment/?provider=%00",
    "/admin/payments/payment/?status__exact=%00",
    "/admin/payments/payment/?currency=xyz",
    "/admin/payments/payment/?q=%00",
])
def test_nul_bytes_and_unknown_values_in_list_filters_are_ignored(client, make_payment, url):
    _staff(client, "viewer")
    payment = make_payment(10000)
    page = client.get(url)
    assert page.status_code == 200
    if "q=" not in url:
        assert [row.id for row in page.context["cl"].result_list] == [payment.id]


@pytest.mark.parametrize("url", [
    "/admin/payments/payment/pay_%00x/change/",
    "/admin/payments/refund/re_%00x/change/",
    "/admin/payments/dispute/dp_%00x/change/",
])
def test_a_nul_byte_in_an_object_id_is_not_found(client, url):
    _staff(client, "viewer")
    assert client.get(url).status_code == 404


def test_a_nul_byte_in_an_action_url_is_not_found(client):
    _staff(client, "operator")
    response = client.post("/admin/payments/payment/pay_%00x/refund/",
                           {"amount": "1", "reason": "duplicate", "note": "x"})
    assert response.status_code == 404 and not Refund.objects.exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("١٠", "digits and a dot"),  # Arabic-Indic ten: not an amount here
    ("１０", "digits and a dot"),  # full-width digits
    ("10\n", None),
    ("0", "more than zero"),
    ("1000000000", "at most 999,999,999.99 USD"),
])
def test_amounts_are_ascii_digits_within_the_maximum(text, expected):
    from django import forms

    from backoffice.forms import parse_amount

    if expected is None:
        assert parse_amount(text, "usd") == 1000
        return
    with pytest.raises(forms.ValidationError) as raised:
        parse_amount(text, "usd")
    assert expected in " ".join(raised.value.messages)


def test_staff_partial_captures_each_show_in_the_timeline_with_their_entry(client,
                                                                          make_payment):
    _staff(client, "operator")
    payment = make_payment(10000, state="authorized")
    partial = client.post(_url(payment, "capture"), {"amount": "30.00", "partial": "on"},
                          follow=True)
    assert "Captured 30.00 USD; the payment is authorized" in _messages(partial)
    final = client.post(_url(payment, "capture"), {"amount": "20.00"}, follow=True)
    assert "Captured 50.00 USD; the payment is captured" in _messages(final)
    page = client.get(_url(payment)).content.decode()
    timeline = page[page.index('id="bo-timeline"'):]
    assert timeline.count("Capture at sandbox") == 2
    assert timeline.count("Ledger entry: capture") == 2
    assert "no (partial)" in timeline and "payment.partially_captured" in timeline
