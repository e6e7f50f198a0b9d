"""Attacks on 3-D Secure (issue 18): a hostile customer's browser on the return endpoint, a
hostile merchant on a payment waiting for its challenge, and a provider whose challenge page,
notices and lookups lie, repeat or come late. The customer is charged once at most, the books
move only on the provider's word, and what cannot be applied is kept as a break."""

from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.db import IntegrityError, connection, transaction
from django.test import Client

from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment, PaymentStatus
from providers.base import Outcome, ProviderResult, ProviderStatus
from reconciliation.models import ReconciliationBreak
from tests.conftest import assert_error, routing_rule
from tests.test_three_d_secure import CARD, SHOP, _answer_challenge, _challenged, _notice
from tests.threads import run_threads

pytestmark = pytest.mark.django_db


def _return_path(payment: Payment) -> str:
    return urlsplit(services.authentication_return_url(
        payment.attempts.get(kind="authorize").id)).path


def _charges(simulator, payment: Payment) -> list[dict]:
    return simulator.control.charges(provider=payment.provider, order_id=payment.id)


# -- the provider lies, repeats, comes late ------------------------------------------------------
@pytest.mark.parametrize("code", ["cielo", "getnet"])
def test_an_approval_after_the_janitor_voided_the_abandoned_challenge_is_kept_as_a_break(
        simulator, merchant, code):
    """The janitor voided the abandoned challenge at the provider and failed the payment; the
    customer's late approval is refused there, yet a notice (a provider that lies, or keeps a
    charge it said it voided) reports the money taken. The payment does not move backwards,
    and the charge is not lost either."""
    routing_rule(code)
    payment = _challenged(merchant)
    later = payment.action_expires_at + timedelta(seconds=1)
    assert services.payment_authentications_expire(now=later) == 1
    late = httpx.post(payment.next_action_url, data={"action": "approve"}, timeout=10)
    assert late.status_code == 409  # the challenge page: it can no longer be completed
    [charge] = _charges(simulator, payment)
    assert (charge["status"], charge["is_charged"]) == ("voided", False)
    _notice(payment, "payment.captured", amount=4200, currency="brl")
    _notice(payment, "payment.captured", amount=4200, currency="brl")  # duplicated
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("failed", 0)
    [found] = ReconciliationBreak.objects.filter(payment_id=payment.id)
    assert (found.type, found.provider, found.provider_amount) == (
        "status_mismatch", code, 4200)


def test_a_customer_back_after_our_void_leaves_a_break_when_the_provider_still_shows_a_charge(
        simulator, merchant, monkeypatch):
    """Our void of the abandoned challenge succeeded, but the provider's lookup, asked when the
    customer's browser comes back, shows the charge captured (it lies, or voided nothing): the
    payment stays failed and the charge becomes a break. A truthful provider shows it voided
    and nothing is reported."""
    routing_rule("rede")
    payment = _challenged(merchant)
    later = payment.action_expires_at + timedelta(seconds=1)
    assert services.payment_authentications_expire(now=later) == 1
    path = _return_path(payment)
    assert Client().get(path).status_code == 302
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    real = services.provider_call

    def lying(provider, operation, request, **kwargs):
        found = real(provider, operation, request, **kwargs)
        if operation == "retrieve":
            return replace(found, status=ProviderStatus.CAPTURED, amount=4200)
        return found

    monkeypatch.setattr(services, "provider_call", lying)
    for _ in range(2):
        assert Client().get(path).status_code == 302
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("failed", 0)
    [found] = ReconciliationBreak.objects.filter(payment_id=payment.id)
    assert (found.type, found.provider_amount) == ("status_mismatch", 4200)


def test_a_provider_that_cannot_say_never_fails_a_challenge_nor_starves_the_others(
        simulator, merchant, monkeypatch):
    """After the deadline the provider's lookup for one payment keeps failing (unknown): that
    payment waits (never failed on an unknown outcome), and it does not hold the janitor's
    batch against the other abandoned challenges behind it."""
    routing_rule("cielo")
    stuck, other = _challenged(merchant), _challenged(merchant)
    Payment.objects.filter(pk=stuck.pk).update(
        action_expires_at=other.action_expires_at - timedelta(minutes=1))
    real = services.provider_call

    def lookup(provider, operation, request, **kwargs):
        if operation == "retrieve" and request.merchant_reference == stuck.id:
            return ProviderResult(outcome=Outcome.UNKNOWN, status=ProviderStatus.UNKNOWN,
                                  error_code="processing_error")
        return real(provider, operation, request, **kwargs)

    monkeypatch.setattr(services, "provider_call", lookup)
    later = other.action_expires_at + timedelta(seconds=1)
    for _ in range(2):
        services.payment_authentications_expire(now=later, limit=1)
    stuck.refresh_from_db()
    other.refresh_from_db()
    assert stuck.status == PaymentStatus.REQUIRES_ACTION
    assert (other.status, other.failure_code) == ("failed", "authentication_abandoned")


def test_a_notice_of_approval_after_a_failed_challenge_is_kept_as_a_break(simulator, merchant):
    """The provider's notice said the challenge failed; a later notice (or its lookup) says
    the charge went through: the first fact stands, the second is recorded, not dropped."""
    routing_rule("rede")
    payment = _challenged(merchant)
    _notice(payment, "payment.declined", error_code="authentication_failed")
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_failed")
    _notice(payment, "payment.authorized", amount=4200, currency="brl")
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert ReconciliationBreak.objects.filter(payment_id=payment.id,
                                              type="status_mismatch").count() == 1


def test_a_declined_notice_after_the_approval_changes_nothing_and_reports_nothing(
        simulator, merchant):
    routing_rule("cielo")
    payment = _challenged(merchant)
    _notice(payment, "payment.captured", amount=4200, currency="brl")
    _notice(payment, "payment.declined", error_code="authentication_failed")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()


@pytest.mark.parametrize(("amount", "currency", "kind"), [
    (4200, "usd", "currency_mismatch"), (4201, "brl", "amount_mismatch")])
def test_an_approval_for_another_amount_or_currency_moves_no_money(simulator, merchant, amount,
                                                                   currency, kind):
    routing_rule("cielo")
    payment = _challenged(merchant, capture_method="manual")
    _notice(payment, "payment.authorized", amount=amount, currency=currency)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_authorized, payment.amount_captured) == (
        "requires_action", 0, 0)
    assert ReconciliationBreak.objects.filter(payment_id=payment.id, type=kind).exists()


def test_a_notice_from_a_provider_that_does_not_hold_the_charge_changes_nothing(
        simulator, merchant):
    routing_rule("cielo")
    payment = _challenged(merchant)
    services.payment_provider_event_apply(
        provider="rede", type="payment.captured", provider_reference=payment.provider_reference,
        merchant_reference=payment.id, amount=4200, currency="brl")
    services.payment_provider_event_apply(
        provider="rede", type="payment.declined", provider_reference=payment.provider_reference,
        merchant_reference=payment.id, error_code="authentication_failed")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("requires_action", 0)


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>",
    "//evil.example/challenge", "https://issuer.example/" + "a" * 3000,
    "https://issuer.example/\r\nSet-Cookie: a=b",
])
def test_a_challenge_page_the_provider_made_up_is_never_handed_to_the_customer(
        simulator, merchant, url):
    """The challenge address is the provider's evidence: only an http(s) URL we can store goes
    to the merchant's front end; anything else leaves the attempt without an answer (the
    janitor keeps asking) instead of crashing or redirecting the customer to it."""
    routing_rule("cielo")
    payment = services.payment_create(merchant=merchant, amount=4200, currency="brl",
                                      payment_method=CARD, return_url=SHOP)
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    attempt = payment.attempts.get()
    services.payment_authorization_record(attempt_id=attempt.id, result=ProviderResult(
        outcome=Outcome.ACTION_REQUIRED, provider_reference="ref-3ds-1",
        status=ProviderStatus.ACTION_REQUIRED, action_url=url))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.AUTHORIZATION_REQUESTED
    assert payment.next_action_url == ""


@pytest.mark.parametrize(("url", "status"), [
    ("http://issuer.example/challenge/1", "authorization_requested"),
    ("https://issuer.example/challenge/1", "requires_action")])
def test_a_live_provider_sends_customers_to_https_challenge_pages_only(
        simulator, merchant, settings, url, status):
    """Plain http is for test providers (the simulator); a live provider's challenge page over
    http would put the customer's authentication in the clear."""
    routing_rule("cielo")
    payment = services.payment_create(merchant=merchant, amount=4200, currency="brl",
                                      payment_method=CARD, return_url=SHOP)
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    settings.PROVIDERS_LIVE = ["cielo"]
    services.payment_authorization_record(
        attempt_id=payment.attempts.get().id, result=ProviderResult(
            outcome=Outcome.ACTION_REQUIRED, provider_reference="ref-3ds-2",
            status=ProviderStatus.ACTION_REQUIRED, action_url=url))
    payment.refresh_from_db()
    assert payment.status == status


def test_the_database_refuses_a_challenge_page_that_is_not_http():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conname = 'payment_next_action_url_http'")
        assert cursor.fetchall(), "no CHECK on next_action_url's scheme"


def test_the_database_refuses_a_javascript_challenge_page(simulator, merchant):
    routing_rule("getnet")
    payment = _challenged(merchant)
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE payments_payment SET next_action_url = 'javascript:alert(1)' "
                       "WHERE id = %s", [payment.id])


# -- a hostile customer's browser ----------------------------------------------------------------
def test_query_parameters_on_the_return_address_mean_nothing(simulator, merchant, other_api):
    routing_rule("rede")
    payment = _challenged(merchant)
    other = _challenged(merchant)
    back = Client().get(_return_path(payment), {"status": "succeeded", "payment": other.id,
                                                "outcome": "approved"})
    assert back.status_code == 302
    assert parse_qs(urlsplit(back["Location"]).query) == {"payment": [payment.id]}
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert not _charges(simulator, payment)[0]["is_charged"]


def test_one_payments_token_opens_no_other_payment(simulator, merchant):
    routing_rule("cielo")
    first, second = _challenged(merchant), _challenged(merchant)
    first_path, second_path = _return_path(first), _return_path(second)
    token = first_path.rsplit("/", 1)[1]
    swapped = second_path.rsplit("/", 1)[0] + "/" + token
    assert Client().get(swapped).status_code == 404
    assert Client().get(first_path.replace(token, token.upper())).status_code == 404
    assert Client().post(first_path).status_code == 405
    # A token for a payment's other attempt kinds is no return address either.
    _answer_challenge(first, "approve")
    Client().get(first_path)
    first.refresh_from_db()
    assert first.status == "captured"
    for attempt in first.attempts.exclude(kind="authorize"):
        path = urlsplit(services.authentication_return_url(attempt.id)).path
        assert Client().get(path).status_code == 404


def test_a_return_replayed_many_times_charges_once(simulator, merchant):
    routing_rule("getnet")
    payment = _challenged(merchant)
    path = _return_path(payment)
    _answer_challenge(payment, "approve")
    for _ in range(4):
        assert Client().get(path).status_code == 302
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    assert len(_charges(simulator, payment)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_returns_and_notices_capture_once(simulator, merchant):
    """The customer's browser comes back four times at once while the provider's notice lands:
    one capture, one journal entry, one charge at the provider, and a ledger that verifies."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    path = _return_path(payment)
    _answer_challenge(payment, "approve")

    def work(i: int) -> int:
        if i == 4:
            _notice(payment, "payment.captured", amount=4200, currency="brl")
            return 302
        return Client().get(path, {"status": "succeeded"}).status_code

    results, errors = run_threads(5, work)
    assert not errors and results == [302] * 5
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    entries = JournalEntry.objects.filter(kind="capture", reference_id=payment.id)
    assert entries.count() == 1
    assert len(_charges(simulator, payment)) == 1
    assert ledger_verify().ok


def test_the_merchants_fragment_stays_last_in_the_redirect(simulator, merchant):
    """`?payment=` goes into the query, before a `#fragment` (after it, the merchant's server
    never sees it), and replaces a `payment` the return_url already carried."""
    routing_rule("cielo")
    payment = services.payment_create(
        merchant=merchant, amount=4200, currency="brl", payment_method=CARD,
        return_url="https://shop.example/done?order=7&payment=pay_forged#receipt")
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    services.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    payment.refresh_from_db()
    back = Client().get(_return_path(payment))
    parts = urlsplit(back["Location"])
    assert (parts.netloc, parts.path, parts.fragment) == ("shop.example", "/done", "receipt")
    assert parse_qs(parts.query) == {"order": ["7"], "payment": [payment.id]}


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "data:text/html,hi", "//evil.example/x", "https:evil.example",
    "https://shop.example/\r\nLocation: https://evil.example", "ftp://shop.example/x",
    "http://shop.example/done", "https://shop.example/" + "a" * 2100, "https://",
    "https://shop.example\\@evil.example/",
])
def test_return_urls_that_are_no_https_address_are_refused(api, settings, url):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    answer = api.post("/payments", {"amount": 1000, "currency": "brl",
                                    "payment_method": CARD, "return_url": url})
    assert_error(answer, 400, param="return_url")


# -- a hostile merchant ---------------------------------------------------------------------------
def test_a_payment_waiting_for_its_challenge_cannot_be_captured_canceled_refunded_or_confirmed(
        simulator, merchant, api, other_api):
    routing_rule("cielo")
    payment = _challenged(merchant)
    for path, body in [("capture", {}), ("cancel", {}), ("confirm", {}),
                       ("confirm", {"return_url": "https://evil.example/"}),
                       ("increment_authorization", {"amount": 9000})]:
        answer = api.post(f"/payments/{payment.id}/{path}", body)
        assert 400 <= answer.status_code < 500, (path, answer.content)
        assert other_api.post(f"/payments/{payment.id}/{path}", body).status_code == 404
    refund = api.post("/refunds", {"payment": payment.id, "amount": 100})
    assert 400 <= refund.status_code < 500
    assert other_api.get(f"/payments/{payment.id}").status_code == 404
    payment.refresh_from_db()
    assert (payment.status, payment.return_url) == ("requires_action", SHOP)
    assert not _charges(simulator, payment)[0]["is_charged"]


def test_a_confirm_replayed_with_another_return_url_changes_nothing(simulator, api):
    routing_rule("cielo")
    created = api.post("/payments", {"amount": 4200, "currency": "brl", "payment_method": CARD})
    payment_id = created.json()["id"]
    first = api.post(f"/payments/{payment_id}/confirm", {"return_url": SHOP}, key="k-3ds")
    assert first.status_code == 202
    replay = api.post(f"/payments/{payment_id}/confirm",
                      {"return_url": "https://evil.example/"}, key="k-3ds")
    assert 400 <= replay.status_code < 500
    again = api.post(f"/payments/{payment_id}/confirm", {"return_url": SHOP}, key="k-3ds")
    assert (again.status_code, again.json()["id"]) == (202, payment_id)
    assert Payment.objects.get(pk=payment_id).return_url == SHOP
    assert Payment.objects.get(pk=payment_id).attempts.count() == 1
