"""3-D Secure in a real browser: the customer is sent to the provider's challenge page (the
simulator's plain HTML form), approves, comes back through Clearhouse's return address (which
asks the provider, not the redirect, what happened) and lands on the merchant's return_url with
the payment captured. The challenge page's screenshot goes to the `screenshots` folder as
three-d-secure-challenge.png (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments import services as payments
from payments.models import Payment
from tests.conftest import routing_rule

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("code", ["cielo", "getnet"])
def test_a_customer_approves_the_challenge_and_the_payment_is_captured(
        browser_page, live_server, simulator, merchant, settings, screenshots: Path, code):
    page = browser_page
    settings.PUBLIC_URL = live_server.url
    routing_rule(code)
    # The merchant's checkout page, standing in: any page the browser can land on.
    shop = f"{simulator.base_url}/_control/health"
    payment = payments.payment_create(merchant=merchant, amount=12_990, currency="brl",
                                      payment_method="pm_card_threeDSecureRequired",
                                      return_url=shop)
    payments.payment_confirm(merchant=merchant, payment_id=payment.id)
    payments.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    payment = Payment.objects.get(pk=payment.pk)
    assert payment.status == "requires_action"

    page.goto(payment.next_action_url)
    page.wait_for_selector("text=3-D Secure")
    assert page.locator("#state").inner_text() == "pending_authentication"
    page.screenshot(path=str(screenshots / "three-d-secure-challenge.png"), full_page=True)
    page.click("#approve")
    page.wait_for_url(f"{shop}?payment={payment.id}")
    assert '"status":"ok"' in page.content()

    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.status, payment.amount_captured) == ("captured", 12_990)
    assert list(payment.attempts.values_list("kind", "status")) == [("authorize", "approved")]
    assert len(simulator.control.charges(provider=code, order_id=payment.id)) == 1
