"""3-D Secure (strong customer authentication): a payment whose issuer wants the customer
authenticated waits `requires_action` with the provider's challenge page; the outcome comes from
the provider (lookup on the customer's return, a signed notice, the janitor), never from the
redirect itself; failed and abandoned challenges end `failed` with their codes; duplicated or
late results change nothing."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.admin.utils import quote
from django.db import IntegrityError, connection, transaction
from django.test import Client

from payments import services
from payments.models import PAYMENT_TRANSITIONS, Payment, PaymentStatus
from payments.payloads import payment_to_dict
from tests.conftest import routing_rule
from tests.factories import staff_user
from webhooks.models import Event

pytestmark = pytest.mark.django_db
PROVIDERS = ["cielo", "rede", "getnet"]
CARD = "pm_card_threeDSecureRequired"
SHOP = "https://shop.example/checkout/done"


def _challenged(merchant, *, capture_method="automatic", return_url=SHOP) -> Payment:
    payment = services.payment_create(merchant=merchant, amount=4200, currency="brl",
                                      payment_method=CARD, capture_method=capture_method,
                                      return_url=return_url)
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    services.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    return Payment.objects.get(pk=payment.pk)


def _answer_challenge(payment: Payment, action: str) -> str:
    """The customer's browser on the provider's challenge page: press `action`; returns where
    the provider sends the browser next (our return address)."""
    answer = httpx.post(payment.next_action_url, data={"action": action}, timeout=10)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def _come_back(location: str):
    """The browser follows the provider's redirect to our return endpoint."""
    return Client().get(urlsplit(location).path)


def _through_challenge(merchant, code: str, action: str) -> tuple[Payment, str, str]:
    """A challenged payment at `code` whose customer pressed `action` and came back: the
    payment as it then stands, the challenge page and our return address."""
    routing_rule(code)
    payment = _challenged(merchant)
    challenge = payment.next_action_url
    location = _answer_challenge(payment, action)
    _come_back(location)
    payment.refresh_from_db()
    return payment, challenge, location


def _notice(payment: Payment, type: str, **fields) -> str:
    """The provider's verified notice about the payment's charge, applied as the inbox does."""
    return services.payment_provider_event_apply(
        provider=payment.provider, type=type, provider_reference=payment.provider_reference,
        merchant_reference=payment.id, **fields)


def _events(payment: Payment) -> list[str]:
    return list(Event.objects.filter(object_id=payment.id).order_by("created_at", "id")
                .values_list("type", flat=True))


@pytest.mark.parametrize("code", PROVIDERS)
def test_an_approved_challenge_captures_the_payment(simulator, merchant, code):
    routing_rule(code)
    payment = _challenged(merchant)
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert payment.next_action_url.startswith(simulator.base_url + "/_challenge/")
    body = payment_to_dict(payment)
    assert body["next_action"]["type"] == "redirect_to_url"
    assert body["next_action"]["redirect_to_url"] == {"url": payment.next_action_url,
                                                      "return_url": SHOP}
    # Nothing is charged while the customer has not authenticated.
    [charge] = simulator.control.charges(provider=code, order_id=payment.id)
    assert not charge["is_charged"]

    page = httpx.get(payment.next_action_url, timeout=10)
    assert page.status_code == 200 and 'value="approve"' in page.text
    back = _come_back(_answer_challenge(payment, "approve"))
    assert back.status_code == 302
    assert back["Location"] == f"{SHOP}?payment={payment.id}"
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    assert (payment.next_action_url, payment.action_expires_at) == ("", None)
    assert payment_to_dict(payment)["next_action"] is None
    assert _events(payment) == ["payment.created", "payment.processing",
                                "payment.requires_action", "payment.captured"]
    assert len(simulator.control.charges(provider=code, order_id=payment.id)) == 1


def test_a_manual_capture_payment_is_authorized_after_its_challenge(simulator, merchant):
    routing_rule("cielo")
    payment = _challenged(merchant, capture_method="manual")
    _come_back(_answer_challenge(payment, "approve"))
    payment.refresh_from_db()
    assert (payment.status, payment.amount_authorized) == ("authorized", 4200)
    assert payment.authorization_expires_at is not None


@pytest.mark.parametrize("code", PROVIDERS)
def test_a_failed_challenge_fails_the_payment_with_authentication_failed(simulator, merchant,
                                                                         code):
    routing_rule(code, "rede" if code != "rede" else "getnet")
    payment = _challenged(merchant)
    _come_back(_answer_challenge(payment, "fail"))
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_failed")
    # No failover after the customer took part in a challenge: one attempt, one provider.
    assert payment.attempts.count() == 1
    assert _events(payment)[-1] == "payment.failed"


def test_the_redirect_alone_proves_nothing(simulator, merchant):
    """Coming back without having passed the challenge (or forging the redirect) leaves the
    payment waiting: the provider, asked, says it is still pending."""
    routing_rule("rede")
    payment = _challenged(merchant)
    attempt = payment.attempts.get()
    return_path = urlsplit(services.authentication_return_url(attempt.id)).path
    assert Client().get(return_path).status_code == 302
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    forged = return_path.rsplit("/", 1)[0] + "/" + "0" * 64
    assert Client().get(forged).status_code == 404
    assert Client().get(return_path.replace(attempt.id, "att_unknown")).status_code == 404


def test_an_abandoned_challenge_expires_and_fails_the_payment(simulator, merchant):
    payment, challenge, location = _through_challenge(merchant, "getnet", "abandon")
    assert payment.status == PaymentStatus.REQUIRES_ACTION  # the customer may still return
    assert services.payment_authentications_expire() == 0  # not yet due
    later = payment.action_expires_at + timedelta(seconds=1)
    assert services.payment_authentications_expire(now=later) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    # The challenge was voided at the provider before the payment failed here.
    assert dict(payment.attempts.values_list("kind", "status")) == {
        "authorize": "declined", "void": "approved"}
    # A second run, and a challenge approved after the payment failed, change nothing.
    assert services.payment_authentications_expire(now=later) == 0
    assert httpx.post(challenge, data={"action": "approve"}, timeout=10).status_code == 409
    _come_back(location)
    _notice(payment, "payment.captured", amount=4200, currency="brl")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("failed", 0)


def test_a_challenge_the_provider_let_lapse_is_read_as_abandoned(simulator, merchant):
    """The provider ended the challenge itself (its own timeout): the janitor's lookup applies
    its decline, with the provider's abandoned code."""
    routing_rule("cielo")
    simulator.control.configure("cielo", challenge_timeout_ms=0)
    payment = _challenged(merchant)
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    later = payment.action_expires_at + timedelta(seconds=1)
    assert services.payment_authentications_expire(now=later) == 0  # the provider's answer
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")


@pytest.mark.parametrize("late", ["approve", "fail"])
def test_a_duplicated_or_late_challenge_result_changes_nothing(simulator, merchant, late):
    payment, challenge, location = _through_challenge(merchant, "cielo", "approve")
    assert payment.status == "captured"
    before = _events(payment)
    # The customer presses again (the provider ignores it: the challenge is over), comes back
    # twice, and the provider's notices arrive late and twice.
    again = httpx.post(challenge, data={"action": late}, timeout=10)
    assert again.status_code == 303
    for _ in range(2):
        assert _come_back(location).status_code == 302
        _notice(payment, "payment.declined", error_code="authentication_failed")
        _notice(payment, "payment.captured", amount=4200, currency="brl")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    assert _events(payment) == before
    [charge] = simulator.control.charges(provider="cielo", order_id=payment.id)
    assert charge["status"] == "captured"


def test_a_signed_notice_completes_the_challenge_without_the_customer_returning(
        simulator, merchant):
    routing_rule("getnet")
    payment = _challenged(merchant)
    # The customer closed the tab right after approving: only the provider's notice comes.
    httpx.post(payment.next_action_url, data={"action": "approve"}, timeout=10)
    _notice(payment, "payment.captured", amount=4200, currency="brl")
    payment.refresh_from_db()
    assert payment.status == "captured"


def test_a_notice_with_another_amount_moves_no_money(simulator, merchant):
    routing_rule("getnet")
    payment = _challenged(merchant)
    _notice(payment, "payment.captured", amount=99, currency="brl")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("requires_action", 0)


def test_the_database_refuses_leaving_requires_action_sideways(simulator, merchant):
    routing_rule("cielo")
    payment = _challenged(merchant)
    for status in ("canceled", "authorization_requested", "refunded"):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE payments_payment SET status = %s, next_action_url = '', "
                           "action_expires_at = NULL WHERE id = %s", [status, payment.id])
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        # requires_action without a challenge page
        cursor.execute("UPDATE payments_payment SET next_action_url = '' WHERE id = %s",
                       [payment.id])


def test_return_url_must_be_https(api, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    body = {"amount": 1000, "currency": "brl", "payment_method": CARD}
    answer = api.post("/payments", {**body, "return_url": "http://shop.example/done"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "return_url"
    loopback = api.post("/payments", {**body, "return_url": "http://127.0.0.1:9/done"})
    assert loopback.status_code == 400
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    loopback = api.post("/payments", {**body, "return_url": "http://127.0.0.1:9/done"})
    assert loopback.status_code == 201
    created = api.post("/payments", {**body, "return_url": SHOP})
    assert created.status_code == 201 and created.json()["return_url"] == SHOP
    confirmed = api.post(f"/payments/{created.json()['id']}/confirm",
                         {"return_url": "javascript:alert(1)"})
    assert confirmed.status_code == 400


def test_the_back_office_timeline_shows_the_challenge_and_its_outcome(client, simulator,
                                                                      merchant):
    staff_user("viewer", client=client)
    routing_rule("rede")
    payment = _challenged(merchant)
    challenge = payment.next_action_url
    _come_back(_answer_challenge(payment, "fail"))
    page = client.get(f"/admin/payments/payment/{quote(payment.id)}/change/").content.decode()
    timeline = page[page.index('id="bo-timeline"'):]
    for text in ("payment.requires_action", challenge, "abandoned after", "payment.failed",
                 "authentication_failed"):
        assert text in timeline, text
    assert timeline.index("payment.requires_action") < timeline.index("payment.failed")


def test_the_database_trigger_holds_the_same_table_as_the_fsm():
    """PAYMENT_TRANSITIONS (django-fsm) and the status trigger's table are one table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = "
                       "'payments_payment_guard_status'")
        [(source,)] = cursor.fetchall()
    in_database = set(re.findall(r"\('(\w+)','(\w+)'\)", source))
    assert in_database == {(str(a), str(b)) for a, b in PAYMENT_TRANSITIONS}
    assert ("authorization_requested", "requires_action") in in_database
