"""Attacks on issue 19: dated API versions (the `Clearhouse-Version` header, pinned versions),
`enabled_events`, and the Python client's webhook verification, retries and key handling. Each
test is an attack; the ones that found a hole failed before its fix."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import httpx
import pytest
from clearhouse import Clearhouse, SignatureVerificationError, construct_event, verify_header
from clearhouse._transport import RetryingTransport
from clearhouse_api.api.payments import payments_list
from django.utils import timezone

from core import versions
from core.services import merchant_create
from tests.conftest import Api, assert_error
from tests.test_webhooks_support import (  # noqa: F401 (fixtures)
    dns_fixture,
    loopback_allowed_fixture,
    receivers_fixture,
)
from webhooks import services as webhook_services
from webhooks import verify
from webhooks.delivery import signature_header
from webhooks.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint

BODY = json.dumps({"id": "evt_1", "object": "event", "type": "payment.captured"}).encode()
NOW = 1_767_225_600


def _forged(key: bytes, timestamp: int = NOW, body: bytes = BODY) -> str:
    """A v1 an attacker can compute without the merchant's secret: keyed with `key`."""
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


# -- (b) webhook signature verification: the client's and the copyable webhooks/verify.py ------
@pytest.mark.parametrize("secrets", ["", [""], ["whsec_real", ""]])
def test_client_verification_refuses_an_empty_secret(secrets):
    # An unset environment variable ("" secret) must not make the empty-key HMAC valid: anyone
    # can compute that one.
    header = f"t={NOW},v1={_forged(b'')}"
    with pytest.raises(SignatureVerificationError):
        verify_header(BODY, header, secrets, now=NOW)
    with pytest.raises(SignatureVerificationError):
        construct_event(BODY, header, secrets, now=NOW)


@pytest.mark.parametrize("secrets", [[""], ["whsec_real", ""]])
def test_copyable_verification_refuses_an_empty_secret(secrets):
    assert not verify.verify_signature(BODY, f"t={NOW},v1={_forged(b'')}", secrets, now=NOW)


def test_copyable_verification_reads_one_secret_given_as_a_string_whole():
    # Passed one `whsec_…` string, it iterated its characters and took each as a secret: 64
    # v1 values (one per url-safe character) then forged any delivery.
    secret = "whsec_abc"
    forged = ",".join(f"v1={_forged(char.encode())}" for char in sorted(set(secret)))
    assert not verify.verify_signature(BODY, f"t={NOW},{forged}", secret, now=NOW)
    genuine = signature_header(body=BODY, secrets=[secret], timestamp=NOW)
    assert verify.verify_signature(BODY, genuine, secret, now=NOW)


def test_copyable_verification_answers_false_for_a_huge_timestamp():
    # 5,000 digits: int() raised ValueError (the digit limit), a 500 in the merchant's handler
    # instead of a 400.
    assert verify.parse_header("t=" + "9" * 5000 + ",v1=00") == (None, [])
    assert not verify.verify_signature(BODY, "t=" + "9" * 5000 + ",v1=00", ["whsec_x"],
                                       now=NOW)


@pytest.mark.parametrize(("header", "signed_at"), [
    ("t={t},v1={sig}", NOW - 301),  # replayed: older than the tolerance
    ("t={t},v1={sig}", NOW + 301),  # far in the future
    ("v1={sig}", NOW),  # no t
    ("t={t},t={t},v1={sig}", NOW),  # two t
    ("t=\uff11{t},v1={sig}", NOW),  # a non-ASCII digit
    ("t={t},v1={sig}X", NOW),  # not the hex
    ("t={t},v1={upper}", NOW),  # upper-case hex is not what we send
    ("T={t},V1={sig}", NOW),  # keys are lower case
])
def test_tampered_headers_are_refused_by_both_verifiers(header, signed_at):
    secret = "whsec_real"
    sig = _forged(secret.encode(), signed_at)
    text = header.format(t=signed_at, sig=sig, upper=sig.upper())
    with pytest.raises(SignatureVerificationError):
        verify_header(BODY, text, secret, now=NOW)
    assert not verify.verify_signature(BODY, text, [secret], now=NOW)


def test_one_good_v1_among_wrong_ones_verifies_and_only_the_raw_bytes_do():
    secret = "whsec_real"
    header = f"t={NOW},v1={'0' * 64},v1={_forged(secret.encode())},v1=zz"
    verify_header(BODY, header, secret, now=NOW)
    assert verify.verify_signature(BODY, header, [secret], now=NOW)
    reserialised = json.dumps(json.loads(BODY), indent=1).encode()
    with pytest.raises(SignatureVerificationError):
        verify_header(reserialised, header, secret, now=NOW)
    assert not verify.verify_signature(reserialised, header, [secret], now=NOW)


# -- (b) the client's retry layer and its API key ------------------------------------------
def test_the_client_never_shows_its_api_key_in_a_repr():
    # attrs' generated repr of AuthenticatedClient printed `token='sk_…'` (and, once the httpx
    # client existed, the Authorization header): any log line, debugger or error tracker that
    # captures locals leaked the key.
    client = Clearhouse("sk_test_TOPSECRETKEY", base_url="http://api.test",
                        transport=httpx.MockTransport(
                            lambda request: httpx.Response(200, json={
                                "object": "list", "data": [], "has_more": False})))
    client.call(payments_list)
    shown = [repr(client.api), str(client.api), repr(client.api.with_headers({"X-A": "1"})),
             repr(client), repr(vars(client)), repr(client.api.get_httpx_client().headers)]
    assert not [text for text in shown if "TOPSECRETKEY" in text]
    assert client.api.get_httpx_client().headers["Authorization"] == "Bearer sk_test_TOPSECRETKEY"


@pytest.mark.parametrize("retry_after", ["²", "٣", "１0"])
def test_a_retry_after_of_non_ascii_digits_falls_back_to_backoff(retry_after):
    # "²".isdigit() is True and float("²") raises: a proxy's odd header crashed the call.
    transport = RetryingTransport(backoff_seconds=0.01)
    assert 0 <= transport._delay(0, retry_after) <= 0.01


def test_a_huge_retry_after_is_capped():
    transport = RetryingTransport()
    assert transport._delay(0, "9" * 5000) == 20.0
    assert transport._delay(0, "86400") == 20.0


# -- (a) the API as a hostile merchant -----------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("asked", [
    " 2026-06-01", "2026-06-01 ", "2026-06-01,2026-12-06", "2026-6-1", "20260601", "2026-06-01\t",
    "2026‐06‐01",  # unicode hyphens
    "9999-12-31", "2000-01-01", "latest", "",
])
def test_a_version_is_one_listed_value_exactly(api, asked):
    response = api.get("/payments", HTTP_CLEARHOUSE_VERSION=asked)
    assert_error(response, 400, code="api_version_invalid", param="Clearhouse-Version")
    assert response["Clearhouse-Version"] == versions.LATEST  # never an echo of the input


@pytest.mark.django_db
def test_a_bad_version_creates_no_endpoint(api):
    response = api.post("/webhook_endpoints", {"url": "https://example.com/hook",
                                               "enabled_events": ["*"]},
                        HTTP_CLEARHOUSE_VERSION="2026-06-02")
    assert_error(response, 400, code="api_version_invalid")
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_a_pinned_version_reads_only_its_own_merchant(api):
    _, issued = merchant_create(name="Other", api_version=versions.OLDEST)
    other = Api(issued.raw_key)
    payment = api.post("/payments", {"amount": 1000, "currency": "usd",
                                     "payment_method": "pm_card_visa"}).json()
    for version in versions.VERSIONS:
        response = other.get(f"/payments/{payment['id']}", HTTP_CLEARHOUSE_VERSION=version)
        assert_error(response, 404, code="resource_missing")
        assert not other.get("/events", HTTP_CLEARHOUSE_VERSION=version).json()["data"]


@pytest.mark.django_db
@pytest.mark.parametrize("events", [
    ["payment.capturеd"],  # a Cyrillic e
    ["Payment.Captured"], [" payment.captured"], ["payment.*"], ["*", "payment.captured"],
    ["payment.captured", "*"], ["payment.captured"] * 101, [["payment.captured"]],
    [{"payment.captured": True}], "payment.captured", [], ["payment.captured\u200b"],
])
def test_enabled_events_edge_cases_are_refused(api, events):
    response = api.post("/webhook_endpoints", {"url": "https://example.com/hook",
                                               "enabled_events": events})
    assert_error(response, 400, param="enabled_events")
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_duplicate_enabled_events_are_stored_once(api, dns):
    dns.names["example.com"] = ["93.184.216.34"]
    for events, stored in ((["payment.captured", "payment.captured"], ["payment.captured"]),
                           (["*", "*"], ["*"])):
        created = api.post("/webhook_endpoints", {"url": "https://example.com/hook",
                                                  "enabled_events": events})
        assert created.status_code == 201, created.content
        assert created.json()["enabled_events"] == stored


# -- (a) a version change racing in-flight deliveries --------------------------------------
@pytest.mark.django_db
@pytest.mark.usefixtures("loopback_allowed")
def test_an_event_in_a_version_this_release_does_not_know_does_not_stop_the_outbox(
        receivers, caplog):
    # A release that added a version recorded the event; this one (rolled back, or an old
    # worker mid-deploy) cannot render it. It raised ValueError out of the sweep, so that one
    # row, first in every batch, stopped every merchant's deliveries. Now it waits, leased, for
    # a release that knows its version; the rest of the batch goes out.
    merchant, _ = merchant_create(name="Rolled back", api_version=versions.OLDEST)
    receiver = receivers()
    endpoint = webhook_services.endpoint_create(
        merchant=merchant, url=receiver.url, enabled_events=["payment.failed"]).endpoint
    receiver.secrets.append(webhook_services.endpoint_signing_secrets(
        endpoint=endpoint, now=timezone.now())[0])
    payment = {"id": "pay_1", "object": "payment", "status": "failed", "metadata": {}}
    newer = Event.objects.create(merchant=merchant, type="payment.failed", object_type="payment",
                                 object_id="pay_1", data=payment, api_version="2099-01-01")
    known = Event.objects.create(merchant=merchant, type="payment.failed", object_type="payment",
                                 object_id="pay_1", data=payment)
    now = timezone.now()
    stuck, sent = (WebhookDelivery.objects.create(endpoint=endpoint, event=event,
                                                  next_attempt_at=now - timedelta(seconds=age))
                   for event, age in ((newer, 60), (known, 30)))

    assert webhook_services.delivery_sweep(concurrency=1) == 1
    (received,) = receiver.received
    assert received.verified and json.loads(received.body)["id"] == known.id
    sent.refresh_from_db()
    stuck.refresh_from_db()
    assert sent.status == DeliveryStatus.DELIVERED
    assert stuck.status == DeliveryStatus.PENDING and not stuck.attempts.exists()
    assert "2099-01-01" in caplog.text


@pytest.mark.django_db
def test_an_event_in_a_version_this_release_does_not_know_is_listed_and_streamed_as_stored():
    # After a rollback, GET /events and the event-stream relay met an event whose version this
    # release does not know: the API answered 500, and the relay (ordered: it cannot skip)
    # raised on it for good, stopping the stream for every merchant.
    from webhooks.stream import _message

    merchant, issued = merchant_create(name="Rolled back", api_version=versions.OLDEST)
    payment = {"id": "pay_1", "object": "payment", "status": "failed", "last_error": None,
               "metadata": {}}
    newer = Event.objects.create(merchant=merchant, type="payment.failed", object_type="payment",
                                 object_id="pay_1", data=payment, api_version="2099-01-01")
    client = Api(issued.raw_key)
    listed = client.get("/events")
    assert listed.status_code == 200, listed.content
    (shown,) = listed.json()["data"]
    assert shown["api_version"] == "2099-01-01" and shown["data"]["object"] == payment
    one = client.get(f"/events/{newer.id}")
    assert one.status_code == 200 and one.json()["api_version"] == "2099-01-01"
    streamed = json.loads(_message(newer).body)["event"]
    assert streamed["api_version"] == "2099-01-01" and streamed["data"]["object"] == payment


@pytest.mark.django_db
def test_a_wildcard_endpoint_never_gets_another_merchants_events_nor_resends_them(api, dns):
    dns.names["example.com"] = ["93.184.216.34"]
    mine = api.post("/webhook_endpoints", {"url": "https://example.com/a",
                                           "enabled_events": ["*"]}).json()
    other_merchant, issued = merchant_create(name="Other", api_version=versions.OLDEST)
    other = Api(issued.raw_key)
    theirs = other.post("/webhook_endpoints", {"url": "https://example.com/b",
                                               "enabled_events": ["*"]}).json()
    event = webhook_services.event_record(
        merchant=other_merchant, type="payment.failed",
        obj={"id": "pay_x", "object": "payment", "status": "failed", "metadata": {}})
    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [theirs["id"]]
    assert_error(api.post(f"/events/{event.id}/resend", {"endpoint": mine["id"]}), 404)
    own = webhook_services.event_record(
        merchant=WebhookEndpoint.objects.get(pk=mine["id"]).merchant, type="payment.failed",
        obj={"id": "pay_y", "object": "payment", "status": "failed", "metadata": {}})
    assert_error(api.post(f"/events/{own.id}/resend", {"endpoint": theirs["id"]}), 404,
                 param="endpoint")
    assert WebhookDelivery.objects.filter(endpoint_id=mine["id"]).count() == 1
