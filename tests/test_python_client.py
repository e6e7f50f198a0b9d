"""The Python client (clients/python) against a live server on 127.0.0.1: create, confirm,
capture, refund, list with pagination, verify a delivered webhook; and its retry and
idempotency rules against a scripted transport."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import httpx
import pytest
from clearhouse import (
    Clearhouse,
    ClearhouseError,
    SignatureVerificationError,
    construct_event,
    verify_header,
)
from clearhouse_api.api.payments import (
    payments_capture,
    payments_confirm,
    payments_create,
    payments_list,
    payments_retrieve,
)
from clearhouse_api.api.refunds import refunds_create
from clearhouse_api.api.webhook_endpoints import webhook_endpoints_create
from clearhouse_api.models import (
    CaptureMethodEnum,
    CurrencyEnum,
    EventType,
    PaymentCapturedEvent,
    PaymentCaptureInputRequest,
    PaymentCreateInputRequest,
    RefundCreateInputRequest,
    WebhookEndpointCreateInputRequest,
)
from django.conf import settings

from core import versions
from tests.factories import merchant_with_key
from tests.test_webhooks_support import receivers_fixture  # noqa: F401 (fixture)
from webhooks import services as webhook_services
from webhooks.delivery import signature_header


def _payment(**fields: object) -> PaymentCreateInputRequest:
    return PaymentCreateInputRequest(amount=fields.pop("amount", 1000), currency=CurrencyEnum.USD,
                                     payment_method="pm_card_visa", **fields)


@pytest.mark.django_db(transaction=True)
def test_the_client_drives_a_payment_from_create_to_refund(live_server, settings, receivers,
                                                           run_tasks_inline):
    settings.WEBHOOKS_ALLOW_LOOPBACK, settings.WEBHOOKS_REQUIRE_HTTPS = True, False
    merchant, raw_key = merchant_with_key()
    merchant.api_version = versions.OLDEST  # the client asks for its own version anyway
    merchant.save()
    receiver = receivers()
    with Clearhouse(raw_key, base_url=live_server.url) as client:
        endpoint = client.call(webhook_endpoints_create, body=WebhookEndpointCreateInputRequest(
            url=receiver.url, enabled_events=[EventType.PAYMENT_CAPTURED]))
        receiver.secrets.append(endpoint.secret)

        created = client.call(payments_create, body=_payment(
            amount=1050, capture_method=CaptureMethodEnum.MANUAL))
        assert (created.status, created.amount) == ("created", 1050)
        assert created.last_error is None  # the newer shape: the client pins its version
        client.call(payments_confirm, payment_id=created.id)
        authorized = client.call(payments_retrieve, payment_id=created.id)
        assert authorized.status == "authorized"
        captured = client.call(payments_capture, payment_id=created.id,
                               body=PaymentCaptureInputRequest(amount=800))
        assert (captured.status, captured.amount_captured) == ("captured", 800)
        refund = client.call(refunds_create, body=RefundCreateInputRequest(
            payment=created.id, amount=300))
        assert (refund.payment, refund.amount) == (created.id, 300)
        with pytest.raises(ClearhouseError) as refused:
            client.call(refunds_create, body=RefundCreateInputRequest(payment=created.id,
                                                                      amount=600))
        assert (refused.value.status, refused.value.code) == (409, "amount_too_large")
        assert refused.value.doc_url.endswith("/api/docs/errors#amount_too_large")

        more = [client.call(payments_create, body=_payment()).id for _ in range(4)]
        gets_before = _count(client, "GET")
        listed = [payment.id for payment in client.paginate(payments_list, limit=2)]
        assert listed == [*reversed(more), created.id]
        assert _count(client, "GET") - gets_before == 3  # 5 payments, 2 a page

    webhook_services.delivery_sweep(concurrency=1)
    (delivery,) = receiver.received
    event = construct_event(delivery.body, delivery.headers["Clearhouse-Signature"],
                            endpoint.secret)
    assert isinstance(event, PaymentCapturedEvent)
    assert (event.type_, event.data.object_.id) == ("payment.captured", created.id)
    tampered = delivery.body.replace(b"1050", b"9050")
    with pytest.raises(SignatureVerificationError):
        construct_event(tampered, delivery.headers["Clearhouse-Signature"], endpoint.secret)


def _count(client: Clearhouse, method: str) -> int:
    return sum(1 for sent, _url, _status in client.transport.attempts if sent == method)


def test_webhook_verification_matches_the_server_signing():
    body = json.dumps({"id": "evt_1", "type": "payment.captured"}).encode()
    header = signature_header(body=body, secrets=["whsec_new", "whsec_old"], timestamp=1_000)
    verify_header(body, header, "whsec_old", now=1_100)
    verify_header(body, header, ["whsec_other", "whsec_new"], now=1_100)
    for secrets, now in ((["whsec_wrong"], 1_100), (["whsec_new"], 1_301)):
        with pytest.raises(SignatureVerificationError):
            verify_header(body, header, secrets, now=now)
    for bad in ("", "v1=abc", "t=1000", "t=1000,t=1001,v1=abc", "t=x,v1=abc"):
        with pytest.raises(SignatureVerificationError):
            verify_header(body, bad, "whsec_new", now=1_000)


def _scripted(*answers: tuple[int, dict, dict]) -> tuple[Clearhouse, list[httpx.Request],
                                                         list[float]]:
    """A client whose transport answers `answers` in turn (status, body, headers)."""
    queue, seen, slept = list(answers), [], []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = queue.pop(0)
        return httpx.Response(status, json=body, headers=headers)

    client = Clearhouse("sk_test_x", base_url="http://api.test", transport=httpx.MockTransport(
        answer), sleep=slept.append, backoff_seconds=0.01)
    return client, seen, slept


PAYMENT = {"id": "pay_1", "object": "payment", "amount": 1000, "currency": "usd",
           "status": "created", "capture_method": "automatic", "payment_method": "pm_card_visa",
           "customer": None, "off_session": False, "cancellation_reason": None,
           "authorization_expires": None, "return_url": None, "next_action": None,
           "amount_authorized": 0, "amount_captured": 0,
           "amount_refunded": 0, "amount_disputed": 0, "description": "", "metadata": {},
           "provider": None, "last_error": None, "livemode": False, "created": 1}


def _error(status: int, code: str, type: str) -> tuple[int, dict, dict]:
    headers = {"Retry-After": "2"} if status == 429 else {}
    return status, {"error": {"type": type, "code": code, "message": code, "param": None,
                              "request_id": "req_1", "doc_url": "x"}}, headers


def test_retries_reuse_one_idempotency_key_and_honour_retry_after():
    client, seen, slept = _scripted(
        _error(429, "rate_limited", "rate_limit_error"),
        _error(409, "idempotency_key_in_use", "idempotency_error"),
        _error(500, "internal_error", "api_error"),
        (201, PAYMENT, {}))
    payment = client.call(payments_create, body=_payment())
    assert payment.id == "pay_1" and len(seen) == 4
    keys = {request.headers["Idempotency-Key"] for request in seen}
    assert len(keys) == 1 and len(keys.pop()) == 36
    assert {request.content for request in seen} == {seen[0].content}
    assert slept[0] == 2.0 and all(0 <= delay <= 0.04 for delay in slept[1:])
    assert {request.headers["Clearhouse-Version"] for request in seen} == {versions.LATEST}


@pytest.mark.parametrize("answer", [
    _error(409, "payment_unexpected_state", "state_error"),
    _error(400, "parameter_invalid", "invalid_request_error"),
    _error(502, "card_declined", "provider_error"),
    _error(422, "idempotency_key_reused", "idempotency_error"),
])
def test_final_answers_are_not_retried(answer):
    client, seen, slept = _scripted(answer)
    with pytest.raises(ClearhouseError) as raised:
        client.call(payments_create, body=_payment(), idempotency_key="mine-1")
    assert (raised.value.status, raised.value.code) == (answer[0], answer[1]["error"]["code"])
    assert len(seen) == 1 and not slept
    assert seen[0].headers["Idempotency-Key"] == "mine-1"


def test_retries_stop_after_max_retries():
    client, seen, slept = _scripted(*[_error(503, "internal_error", "api_error")] * 4)
    with pytest.raises(ClearhouseError) as raised:
        client.call(payments_list)
    assert raised.value.status == 503 and len(seen) == 4 and len(slept) == 3
    assert "Idempotency-Key" not in seen[0].headers  # a GET needs none


def test_the_generator_pin_is_one_version():
    root = Path(settings.BASE_DIR)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    client = tomllib.loads((root / "clients" / "python" / "pyproject.toml").read_text())
    pins = {req for req in project["dependency-groups"]["client-gen"]
            if req.startswith("openapi-python-client")}
    assert pins == {req for req in client["build-system"]["requires"]
                    if req.startswith("openapi-python-client")}
    assert len(pins) == 1 and "==" in pins.pop()
