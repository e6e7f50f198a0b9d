"""Customers and saved payment methods: a card tokenized at one acquirer's vault (the
simulator's, standing in for each acquirer's), saved as `pm_…`, charged with each acquirer's own
token (enrolled when routing first needs it), with stored-credential flags, through the API and
the database guards."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from backoffice.selectors import payment_story
from payments import services
from payments.models import Payment, PaymentMethod, PaymentMethodToken
from providers.breaker import BreakerState
from providers.models import ProviderBreaker
from providers.registry import get_provider
from tests.conftest import routing_rule

VISA = "4242424242424242"


def tokenize(code: str, number: str = VISA, expiry: str = "12/2030") -> str:
    """What a merchant's front-end does: hand the card to the acquirer's vault, get its token.
    Clearhouse never sees this request (the test uses the adapter's transport only to sign it
    the way each acquirer wants)."""
    adapter = get_provider(code)
    vault = adapter.vault
    sent = adapter.send("POST", vault.path, body={
        {"cielo": "CardNumber", "rede": "cardNumber", "getnet": "card_number"}[code]: number,
        vault.expiry: expiry})
    assert sent.status_code == 201, sent.exchange
    return sent.data[vault.issued]


def charge(merchant, method_id: str, *, amount: int = 2500, off_session: bool = False,
           customer: str | None = None) -> Payment:
    payment = services.payment_create(merchant=merchant, amount=amount, currency="brl",
                                      payment_method=method_id, customer=customer,
                                      off_session=off_session, confirm=True)
    services.payment_authorization_execute(
        attempt_id=payment.attempts.get(kind="authorize").id)
    return Payment.objects.get(pk=payment.pk)


def save_card(merchant, code: str, **kwargs) -> PaymentMethod:
    return services.payment_method_create(merchant=merchant, provider=code,
                                          token=tokenize(code), **kwargs)


@pytest.mark.django_db
def test_failover_after_the_breaker_opens_charges_rede_with_rede_s_own_token(
        simulator, merchant, settings):
    settings.PROVIDER_BREAKER = {"failure_threshold": 1}
    routing_rule("cielo", "rede")
    customer = services.customer_create(merchant=merchant, email="ana@example.com")
    method = save_card(merchant, "cielo", customer=customer.id)
    cielo_token = PaymentMethodToken.objects.get(payment_method=method).token
    simulator.control.configure("cielo", unavailable_rate=1.0)

    payment = charge(merchant, method.id)

    assert (payment.status, payment.provider, payment.customer_id) == (
        "captured", "rede", customer.id)
    assert ProviderBreaker.objects.get(provider="cielo").state == BreakerState.OPEN
    tokens = dict(PaymentMethodToken.objects.filter(payment_method=method)
                  .values_list("provider", "token"))
    assert set(tokens) == {"cielo", "rede"} and tokens["rede"] != cielo_token
    # In the order they were answered: the authorization at rede was opened by the failover,
    # then waited for the enrolment there.
    steps = list(payment.attempts.order_by("completed_at")
                 .values_list("kind", "provider", "status", "error_code"))
    assert steps == [("authorize", "cielo", "declined", "provider_unavailable"),
                     ("enroll", "rede", "approved", ""),
                     ("authorize", "rede", "approved", "")]
    # One charge in total, at rede, with rede's token and the stored-credential flags of a
    # customer-present use of a stored card.
    charges = simulator.control.charges(order_id=payment.id)
    assert [(c["provider"], c["payment_method"], c["stored_credential"]) for c in charges] == [
        ("rede", tokens["rede"], "2:cardholder")]
    assert simulator.control.double_charged() == []
    # The timeline shows the failed try, the enrolment and the charge.
    story = payment_story(payment_id=payment.id)
    titles = [item.title for item in story.items if item.source == "attempt"]
    assert titles == ["Authorize at cielo", "Authorize at rede", "Enroll at rede"]

    # The next charge goes straight to rede (cielo's breaker is open) with the token it has.
    again = charge(merchant, method.id, amount=900)
    assert (again.status, again.provider) == ("captured", "rede")
    assert list(again.attempts.values_list("kind", flat=True)) == ["authorize"]


@pytest.mark.django_db
def test_an_acquirer_refuses_another_acquirer_s_token(simulator, merchant):
    """Why failover needs enrolment: sending cielo's token to rede is a decline there."""
    routing_rule("rede")
    payment = services.payment_create(merchant=merchant, amount=100, currency="brl",
                                      payment_method="pm_card_visa", confirm=True)
    attempt = payment.attempts.get()
    from providers.base import AuthorizeRequest
    from providers.calls import provider_call
    result = provider_call("rede", "authorize", AuthorizeRequest(
        idempotency_key=attempt.id, amount=100, currency="brl",
        payment_method=tokenize("cielo"), capture=True, merchant_reference=payment.id))
    assert (result.outcome, result.error_code) == ("declined", "invalid_payment_method")


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "flag"), [("cielo", "M1"), ("rede", "2:merchant"),
                                            ("getnet", "RECURRING")])
def test_off_session_sends_each_provider_its_merchant_initiated_flags(simulator, merchant,
                                                                      code, flag):
    routing_rule(code)
    method = save_card(merchant, code)
    payment = charge(merchant, method.id, off_session=True)
    assert (payment.status, payment.off_session) == ("captured", True)
    [sent] = simulator.control.charges(order_id=payment.id)
    assert sent["stored_credential"] == flag


@pytest.mark.django_db
def test_a_saved_test_card_keeps_its_behaviour_and_a_decline_is_not_failed_over(
        simulator, merchant):
    routing_rule("cielo", "rede")
    method = services.payment_method_create(
        merchant=merchant, provider="cielo", token=tokenize("cielo", "4000000000009995"))
    payment = charge(merchant, method.id)
    assert (payment.status, payment.failure_code) == ("failed", "insufficient_funds")
    assert list(payment.attempts.values_list("provider", flat=True)) == ["cielo"]


@pytest.mark.django_db
def test_enrolment_refused_everywhere_fails_the_payment_without_a_charge(simulator, merchant,
                                                                         settings):
    settings.PROVIDER_BREAKER = {"failure_threshold": 1}
    routing_rule("cielo", "getnet")
    method = save_card(merchant, "cielo")
    PaymentMethod.objects.filter(pk=method.pk).update(network_token="")  # nothing to enrol
    simulator.control.configure("cielo", unavailable_rate=1.0)
    payment = charge(merchant, method.id)
    assert (payment.status, payment.failure_code) == ("failed", "payment_method_not_enrolled")
    assert simulator.control.charges(order_id=payment.id) == []


# -- the API ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_customers_api_create_update_list_and_tenancy(api, other_api):
    created = api.post("/customers", {"email": "ana@example.com", "name": "Ana",
                                      "metadata": {"tier": "gold"}}, key="c-1")
    assert created.status_code == 200, created.json()
    body = created.json()
    assert body["id"].startswith("cus_") and body["object"] == "customer"
    replay = api.post("/customers", {"email": "ana@example.com", "name": "Ana",
                                     "metadata": {"tier": "gold"}}, key="c-1")
    assert replay.json() == body and replay["Idempotent-Replayed"] == "true"
    assert api.post("/customers", {"email": "x@example.com"}, key="c-1").status_code == 422
    assert api.post("/customers", {"email": "not-an-email"}).status_code == 400
    assert api.post("/customers", {"balance": 5}).status_code == 400

    updated = api.post(f"/customers/{body['id']}", {"name": "Ana Lima",
                                                    "metadata": {"tier": "", "vip": "1"}})
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["metadata"]) == ("Ana Lima", {"vip": "1"})
    for i in range(3):
        api.post("/customers", {"email": f"c{i}@example.com"})
    page = api.get("/customers", {"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"]
    assert api.get("/customers", {"email": "ana@example.com"}).json()["data"][0]["id"] == (
        body["id"])
    assert other_api.get(f"/customers/{body['id']}").status_code == 404
    assert other_api.post(f"/customers/{body['id']}", {"name": "x"}).status_code == 404


@pytest.mark.django_db
def test_payment_methods_api_save_charge_detach(simulator, api, other_api, merchant):
    routing_rule("getnet")
    customer = api.post("/customers", {"email": "ana@example.com"}).json()["id"]
    token = tokenize("getnet")
    bad = api.post("/payment_methods", {"provider": "getnet", "token": "not-a-real-token"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == (
        "payment_method_token_invalid")
    assert PaymentMethod.objects.count() == 0
    saved = api.post("/payment_methods", {"provider": "getnet", "token": token,
                                          "customer": customer}, key="pm-1")
    assert saved.status_code == 200, saved.json()
    method = saved.json()
    assert method["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12,
                              "exp_year": 2030}
    assert (method["customer"], method["providers"]) == (customer, ["getnet"])
    assert token not in str(method)
    assert api.post("/payment_methods", {"provider": "getnet", "token": token}
                    ).json()["error"]["code"] == "payment_method_exists"
    assert api.post("/payment_methods", {"provider": "getnet", "token": token,
                                         "customer": customer}, key="pm-1").json() == method
    assert other_api.get(f"/payment_methods/{method['id']}").status_code == 404
    assert other_api.post("/payments", {
        "amount": 100, "currency": "brl", "payment_method": method["id"]}).status_code == 404
    listed = api.get("/payment_methods", {"customer": customer}).json()
    assert [m["id"] for m in listed["data"]] == [method["id"]]

    paid = api.post("/payments", {"amount": 1200, "currency": "brl",
                                  "payment_method": method["id"], "off_session": True})
    assert paid.status_code == 201, paid.json()
    assert (paid.json()["customer"], paid.json()["off_session"]) == (customer, True)
    assert api.post("/payments", {"amount": 1, "currency": "brl",
                                  "payment_method": "pm_card_visa", "off_session": True}
                    ).status_code == 400

    detached = api.post(f"/payment_methods/{method['id']}/detach")
    assert detached.status_code == 200
    assert (detached.json()["detached"], detached.json()["customer"]) == (True, None)
    refused = api.post("/payments", {"amount": 100, "currency": "brl",
                                     "payment_method": method["id"]})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "payment_method_detached"
    assert api.get("/payment_methods", {"customer": customer}).json()["data"] == []


# -- the database guards -----------------------------------------------------------------------
@pytest.mark.django_db
def test_tokens_are_one_per_acquirer_and_never_rewritten(simulator, merchant):
    method = save_card(merchant, "cielo")
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentMethodToken.objects.create(payment_method=method, provider="cielo",
                                          token="another-token")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE payments_paymentmethodtoken SET token = 'x' "
                       "WHERE payment_method_id = %s", [method.id])


@pytest.mark.django_db
def test_the_database_refuses_another_merchant_s_method_and_a_detached_one(simulator, merchant):
    from tests.factories import merchant_with_key

    stranger = merchant_with_key()[0]
    method = save_card(merchant, "cielo")
    with pytest.raises(IntegrityError, match="another merchant"), transaction.atomic():
        Payment.objects.create(merchant=stranger, amount=100, currency="brl",
                               payment_method=method.id, saved_method=method)
    services.payment_method_detach(merchant=merchant, payment_method_id=method.id)
    with pytest.raises(IntegrityError, match="detached"), transaction.atomic():
        Payment.objects.create(merchant=merchant, amount=100, currency="brl",
                               payment_method=method.id, saved_method=method)


@pytest.mark.django_db
def test_an_approval_at_an_acquirer_without_the_method_s_token_is_refused(simulator, merchant):
    method = save_card(merchant, "cielo")
    payment = Payment.objects.create(merchant=merchant, amount=100, currency="brl",
                                     payment_method=method.id, saved_method=method)
    with pytest.raises(IntegrityError, match="without a token"), transaction.atomic():
        payment.attempts.create(kind="authorize", provider="rede", amount=100,
                                status="approved")


@pytest.mark.django_db
def test_the_back_office_shows_customers_and_saved_cards_without_their_secrets(
        simulator, merchant, client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    customer = services.customer_create(merchant=merchant, email="ana@example.com")
    method = save_card(merchant, "rede", customer=customer.id)
    user = get_user_model().objects.create_user("viewer-1", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    listed = client.get("/admin/payments/paymentmethod/").content.decode()
    assert method.id in listed and "rede (saved)" in listed
    page = client.get(f"/admin/payments/paymentmethod/{method.id}/change/")
    assert page.status_code == 200
    assert method.network_token not in page.content.decode()
    assert client.get(f"/admin/payments/customer/{customer.id}/change/").status_code == 200


@pytest.mark.django_db
def test_another_merchant_s_saved_token_reads_as_a_token_the_vault_does_not_know(
        simulator, api, other_api):
    """The acquirer accounts are the platform's, so a token is good at any merchant: another
    merchant who learns one must neither save (and charge) it nor learn that it is saved
    here. Its answer is the vault's own answer to an unknown token, byte for byte."""
    token = tokenize("getnet")
    assert api.post("/payment_methods", {"provider": "getnet", "token": token}
                    ).status_code == 200
    unknown = tokenize("getnet")[:-4] + "zzzz"
    taken = other_api.post("/payment_methods", {"provider": "getnet", "token": token})
    never = other_api.post("/payment_methods", {"provider": "getnet", "token": unknown})
    assert taken.status_code == never.status_code == 400
    body = {k: v for k, v in taken.json()["error"].items() if k != "request_id"}
    assert body == {k: v for k, v in never.json()["error"].items() if k != "request_id"}
    assert body["code"] == "payment_method_token_invalid"
    assert PaymentMethod.objects.count() == 1
