"""An abandoned 3-D Secure challenge is voided at the provider before the payment fails (issue
18): a customer who finishes the challenge afterwards is charged nothing, a customer who
finished just before keeps the payment, and a void whose outcome is unknown keeps the payment
waiting and is sent again with the same provider key (the provider voids once)."""

from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from core import ratelimit
from core.models import RateWindow
from payments import services
from payments.models import Payment, PaymentAttempt, PaymentStatus
from providers.base import Outcome, ProviderResult, ProviderStatus
from reconciliation.models import ReconciliationBreak
from tests.conftest import routing_rule
from tests.test_three_d_secure import PROVIDERS, _challenged, _events

pytestmark = pytest.mark.django_db


def _charge(simulator, payment: Payment) -> dict:
    [charge] = simulator.control.charges(provider=payment.provider, order_id=payment.id)
    return charge


def _lapsed(payment: Payment):
    return payment.action_expires_at + timedelta(seconds=1)


def _attempts(payment: Payment) -> list[tuple[str, str]]:
    return list(payment.attempts.order_by("created_at", "id").values_list("kind", "status"))


def _spy(monkeypatch, operation: str, answer=None) -> list:
    """Record the `operation` requests the services send to providers from now on. `answer`
    (request → a ProviderResult, or None to pass it on) runs before the provider is called."""
    sent = []
    real = services.provider_call

    def call(provider, called, request, **kwargs):
        if called == operation:
            sent.append(request)
            result = answer(request) if answer is not None else None
            if result is not None:
                return result
        return real(provider, called, request, **kwargs)

    monkeypatch.setattr(services, "provider_call", call)
    return sent


@pytest.mark.parametrize("code", PROVIDERS)
def test_an_abandoned_challenge_is_voided_once_and_a_late_completion_charges_nothing(
        simulator, merchant, code):
    routing_rule(code)
    payment = _challenged(merchant)
    challenge, later = payment.next_action_url, _lapsed(payment)
    assert services.payment_authentications_expire(now=later) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    assert _attempts(payment) == [("authorize", "declined"), ("void", "approved")]
    assert _events(payment)[-1] == "payment.failed"
    charge = _charge(simulator, payment)
    assert (charge["status"], charge["voids"], charge["is_charged"]) == ("voided", 1, False)

    # The customer comes back to the challenge later: the page says it is over, nothing is
    # approved, and coming back to us asks the provider, which holds nothing.
    page = httpx.get(challenge, timeout=10)
    assert "can no longer be completed" in page.text and 'value="approve"' not in page.text
    late = httpx.post(challenge, data={"action": "approve"}, timeout=10)
    assert late.status_code == 409 and "can no longer be completed" in late.text
    return_path = urlsplit(services.authentication_return_url(payment.attempts.filter(
        kind="authorize").get().id)).path
    assert Client().get(return_path).status_code == 302
    assert services.payment_authentications_expire(now=later) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("failed", 0)
    charge = _charge(simulator, payment)
    assert (charge["status"], charge["voids"], charge["is_charged"]) == ("voided", 1, False)
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert simulator.control.double_charged() == []


@pytest.mark.parametrize("code", PROVIDERS)
def test_a_customer_who_finishes_just_before_the_void_keeps_the_payment(simulator, merchant,
                                                                        code, monkeypatch):
    """The lookup still saw the challenge open; the customer approved it between that lookup
    and our void: the provider refuses the void (the charge is captured), and a lookup applies
    the approval through the normal path."""
    routing_rule(code)
    payment = _challenged(merchant)

    def customer_first(request):
        answer = httpx.post(payment.next_action_url, data={"action": "approve"}, timeout=10)
        assert answer.status_code == 303

    _spy(monkeypatch, "void", customer_first)
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.failure_code) == (
        "captured", 4200, "")
    assert _attempts(payment) == [("authorize", "approved"), ("void", "declined")]
    assert "payment.failed" not in _events(payment)
    charge = _charge(simulator, payment)
    assert (charge["status"], charge["voids"]) == ("captured", 1)
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()


@pytest.mark.parametrize("code", PROVIDERS)
def test_a_void_without_an_answer_keeps_the_challenge_open_and_is_sent_again_with_its_key(
        simulator, merchant, code, monkeypatch):
    routing_rule(code)
    payment = _challenged(merchant)
    voids = _spy(monkeypatch, "void")
    # The simulator voids, then resets the connection: we cannot know it happened.
    simulator.control.configure(code, drop_rate=1.0, fault_operations=["void"])
    later = _lapsed(payment)
    assert services.payment_authentications_expire(now=later) == 0
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION  # never failed on an unknown
    assert _attempts(payment) == [("authorize", "unknown"), ("void", "unknown")]

    simulator.control.configure(code, drop_rate=0.0)
    assert services.payment_authentications_expire(now=later) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    assert _attempts(payment) == [("authorize", "declined"), ("void", "approved")]
    first, again = (request.idempotency_key for request in voids)
    assert first == again  # the re-send carries the same key
    charge = _charge(simulator, payment)
    assert (charge["status"], charge["voids"]) == ("voided", 1)  # voided once there


def test_a_void_without_an_answer_does_not_starve_the_batch(simulator, merchant, monkeypatch):
    """One payment's void keeps coming back unknown: it waits, and goes behind the others, so
    a batch of one still reaches the next abandoned challenge."""
    routing_rule("cielo")
    stuck, other = _challenged(merchant), _challenged(merchant)
    Payment.objects.filter(pk=stuck.pk).update(
        action_expires_at=other.action_expires_at - timedelta(minutes=1),
        updated_at=other.updated_at - timedelta(minutes=1))
    unknown = ProviderResult(outcome=Outcome.UNKNOWN, status=ProviderStatus.UNKNOWN,
                             error_code="timeout")
    _spy(monkeypatch, "void", lambda request: unknown
         if request.provider_reference == stuck.provider_reference else None)
    for _ in range(2):
        services.payment_authentications_expire(now=_lapsed(other), limit=1)
    stuck.refresh_from_db()
    other.refresh_from_db()
    assert stuck.status == PaymentStatus.REQUIRES_ACTION
    assert stuck.attempts.filter(kind="void").count() == 1
    assert (other.status, other.failure_code) == ("failed", "authentication_abandoned")


# -- the public return address ----------------------------------------------------------------
def _return_path(payment: Payment) -> str:
    return urlsplit(services.authentication_return_url(
        payment.attempts.get(kind="authorize").id)).path


@pytest.mark.parametrize("store", ["redis", "database"])
def test_a_hammered_return_address_asks_the_provider_a_few_times_a_minute(
        simulator, merchant, monkeypatch, settings, store):
    if store == "redis" and not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (the database path runs without it)")
    if store == "database":
        settings.REDIS_URL = ""
    settings.PAYMENT_AUTHENTICATION_RETURN_LOOKUPS_PER_MINUTE = 3
    clock = {"now": timezone.now()}  # one fixed window, whatever the wall clock does
    monkeypatch.setattr(ratelimit, "timezone", SimpleNamespace(now=lambda: clock["now"]))
    routing_rule("cielo")
    payment = _challenged(merchant)
    path, asked = _return_path(payment), _spy(monkeypatch, "retrieve")
    for _ in range(10):
        assert Client().get(path).status_code == 302
    assert [request.merchant_reference for request in asked] == [payment.id] * 3
    # Past the limit a visit answers from our state: the approval waits for the next window
    # (or the provider's notice, or the janitor).
    httpx.post(payment.next_action_url, data={"action": "approve"}, timeout=10)
    assert Client().get(path).status_code == 302
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION and len(asked) == 3
    clock["now"] += timedelta(seconds=61)
    assert Client().get(path).status_code == 302
    payment.refresh_from_db()
    assert (payment.status, len(asked)) == ("captured", 4)
    if store == "database":
        assert RateWindow.objects.filter(key__contains=payment.attempts.get(
            kind="authorize").id).count() == 2


def test_the_return_address_closes_a_day_after_the_challenge_once_the_payment_is_final(
        simulator, merchant, monkeypatch):
    routing_rule("getnet")
    waiting, done = _challenged(merchant), _challenged(merchant)
    httpx.post(done.next_action_url, data={"action": "approve"}, timeout=10)
    assert Client().get(_return_path(done)).status_code == 302
    done.refresh_from_db()
    assert done.status == "captured"
    long_ago = timezone.now() - timedelta(hours=25) - timedelta(
        seconds=settings.PAYMENT_AUTHENTICATION_TIMEOUT_SECONDS)
    PaymentAttempt.objects.filter(payment__in=[waiting, done]).update(
        created_at=long_ago, completed_at=long_ago)
    asked = _spy(monkeypatch, "retrieve")
    closed = Client().get(_return_path(done))
    assert closed.status_code == 404
    assert closed.content == b"Unknown or expired authentication link."
    assert asked == []  # answered like an unknown token, without asking the provider
    # A payment still waiting for its challenge keeps its link (the janitor ends it).
    assert Client().get(_return_path(waiting)).status_code == 302
    assert [request.merchant_reference for request in asked] == [waiting.id]
