"""Dated API versions: a merchant pinned to the older version sees the old payment shape in
responses, lists, events and webhooks; `Clearhouse-Version` chooses another version per request;
an endpoint delivers in the version it was created with."""

from __future__ import annotations

import json

import pytest

from core import versions
from core.services import merchant_create
from tests.conftest import Api
from tests.test_webhooks_support import (  # noqa: F401 (fixtures)
    dns_fixture,
    loopback_allowed_fixture,
    network_guard_fixture,
    receivers_fixture,
)
from webhooks import services as webhook_services
from webhooks.models import Event

pytestmark = pytest.mark.django_db
OLD, NEW = versions.OLDEST, versions.LATEST
DECLINED = {"amount": 1050, "currency": "usd", "payment_method": "pm_card_declined",
            "metadata": {"object": "payment", "failure_code": "mine"}}


def _merchant(version: str | None) -> tuple[object, Api]:
    merchant, issued = merchant_create(name="Versioned", api_version=version)
    return merchant, Api(issued.raw_key)


def _declined(api: Api, django_capture_on_commit_callbacks, **headers: str) -> str:
    payment = api.post("/payments", DECLINED, **headers).json()
    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/payments/{payment['id']}/confirm")
    return payment["id"]


def test_a_new_merchant_is_pinned_to_the_newest_version():
    merchant, api = _merchant(None)
    assert merchant.api_version == NEW
    response = api.get("/payments")
    assert response["Clearhouse-Version"] == NEW


def test_the_newer_version_shows_last_error(django_capture_on_commit_callbacks):
    _, api = _merchant(NEW)
    payment_id = _declined(api, django_capture_on_commit_callbacks)
    response = api.get(f"/payments/{payment_id}")
    body = response.json()
    assert response["Clearhouse-Version"] == NEW
    assert body["last_error"] == {"code": "card_declined", "message": "The card was declined."}
    assert "failure_code" not in body and "failure_message" not in body
    assert body["metadata"] == DECLINED["metadata"]  # the client's data is never reshaped


def test_a_merchant_pinned_to_the_older_version_sees_the_old_shape_everywhere(
        django_capture_on_commit_callbacks):
    _, api = _merchant(OLD)
    payment_id = _declined(api, django_capture_on_commit_callbacks)
    one = api.get(f"/payments/{payment_id}")
    listed = api.get("/payments").json()["data"][0]
    events = api.get("/events", {"object_id": payment_id}).json()["data"]
    assert one["Clearhouse-Version"] == OLD
    assert events[0]["type"] == "payment.failed"
    for event in events:
        assert "failure_code" in event["data"]["object"]
        assert "last_error" not in event["data"]["object"]
    for body in (one.json(), listed, events[0]["data"]["object"]):
        assert (body["failure_code"], body["failure_message"]) == (
            "card_declined", "The card was declined.")
        assert "last_error" not in body
        assert body["metadata"] == DECLINED["metadata"]
    assert {event["api_version"] for event in events} == {OLD}
    # Keys keep their place: the old shape is the one the merchant integrated against.
    keys = list(one.json())
    assert keys.index("failure_code") == keys.index("provider") + 1


def test_the_header_chooses_the_version_per_request(django_capture_on_commit_callbacks):
    _, old_api = _merchant(OLD)
    payment_id = _declined(old_api, django_capture_on_commit_callbacks)
    newer = old_api.get(f"/payments/{payment_id}", HTTP_CLEARHOUSE_VERSION=NEW)
    assert newer["Clearhouse-Version"] == NEW
    assert newer.json()["last_error"]["code"] == "card_declined"

    _, new_api = _merchant(NEW)
    created = new_api.post("/payments", DECLINED, HTTP_CLEARHOUSE_VERSION=OLD)
    assert created["Clearhouse-Version"] == OLD
    assert created.json()["failure_code"] is None and "last_error" not in created.json()


def test_an_unknown_version_is_400_naming_the_versions(api):
    response = api.get("/payments", HTTP_CLEARHOUSE_VERSION="2020-01-01")
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("api_version_invalid", "Clearhouse-Version")
    assert all(version in error["message"] for version in versions.VERSIONS)
    assert response["Clearhouse-Version"] == NEW
    refused = api.post("/payments", DECLINED, HTTP_CLEARHOUSE_VERSION="latest")
    assert refused.status_code == 400 and not api.get("/payments").json()["data"]


def test_a_replay_renders_in_the_version_of_the_retry(api):
    first = api.post("/payments", DECLINED, key="versioned-1")
    replay = api.post("/payments", DECLINED, key="versioned-1", HTTP_CLEARHOUSE_VERSION=OLD)
    assert replay["Idempotent-Replayed"] == "true"
    assert "last_error" in first.json() and "failure_code" in replay.json()
    assert replay.json()["id"] == first.json()["id"]


def test_events_stored_in_the_older_shape_render_in_the_newer_one():
    merchant, api = _merchant(NEW)
    old_payment = {"id": "pay_old", "object": "payment", "status": "failed",
                   "provider": "sandbox", "failure_code": "card_declined",
                   "failure_message": "The card was declined.", "livemode": False}
    event = Event.objects.create(merchant=merchant, type="payment.failed", object_type="payment",
                                 object_id="pay_old", data=old_payment, api_version=OLD)
    body = api.get(f"/events/{event.id}").json()
    assert body["api_version"] == NEW
    assert body["data"]["object"]["last_error"] == {"code": "card_declined",
                                                    "message": "The card was declined."}
    assert api.get(f"/events/{event.id}", HTTP_CLEARHOUSE_VERSION=OLD).json()[
        "data"]["object"] == old_payment


@pytest.mark.usefixtures("loopback_allowed")
def test_webhooks_render_in_the_endpoint_pinned_version(receivers,
                                                        django_capture_on_commit_callbacks):
    _, api = _merchant(OLD)
    old_receiver, new_receiver = receivers(), receivers()
    for receiver, headers in ((old_receiver, {}), (new_receiver,
                                                   {"HTTP_CLEARHOUSE_VERSION": NEW})):
        created = api.post("/webhook_endpoints", {"url": receiver.url,
                                                  "enabled_events": ["payment.failed"]},
                           **headers).json()
        receiver.secrets.append(created["secret"])
        assert created["api_version"] == headers.get("HTTP_CLEARHOUSE_VERSION", OLD)
    _declined(api, django_capture_on_commit_callbacks)
    webhook_services.delivery_sweep(concurrency=1)

    (old,), (new,) = old_receiver.received, new_receiver.received
    assert old.verified and new.verified
    old_body, new_body = json.loads(old.body), json.loads(new.body)
    assert old_body["id"] == new_body["id"]
    assert (old_body["api_version"], new_body["api_version"]) == (OLD, NEW)
    assert old_body["data"]["object"]["failure_code"] == "card_declined"
    assert "last_error" not in old_body["data"]["object"]
    assert new_body["data"]["object"]["last_error"]["code"] == "card_declined"
    assert "failure_code" not in new_body["data"]["object"]
