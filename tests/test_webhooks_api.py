"""The webhook endpoint API, event resend, delivery log, secret storage and the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from core import crypto
from tests.test_webhooks_support import GUARDED, subscribe
from webhooks import services
from webhooks.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint

pytestmark = GUARDED

URL = "http://127.0.0.1:9/hook"  # never contacted: these tests do not sweep unless they say so


def _create(api, **overrides):
    body = {"url": URL, "enabled_events": ["payment.captured"], **overrides}
    response = api.post("/webhook_endpoints", body)
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_shows_the_secret_once_and_stores_it_encrypted(api):
    created = _create(api, description="orders")
    assert created["id"].startswith("we_") and created["object"] == "webhook_endpoint"
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["status"] == "enabled" and created["enabled_events"] == ["payment.captured"]
    assert created["description"] == "orders"

    fetched = api.get(f"/webhook_endpoints/{created['id']}").json()
    listed = api.get("/webhook_endpoints").json()
    assert "secret" not in fetched and "secret" not in listed["data"][0]
    assert fetched == {k: v for k, v in created.items() if k != "secret"}

    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert created["secret"] not in row.secret_encrypted
    assert crypto.decrypt(row.secret_encrypted) == created["secret"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM webhooks_webhookendpoint WHERE id = %s", [row.pk])
        assert created["secret"] not in repr(cursor.fetchone())


def test_encryption_keys_rotate_with_multifernet(settings):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt("whsec_abc")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(token) == "whsec_abc"
    rotated = crypto.reencrypt(token)
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(rotated) == "whsec_abc"
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(token)


@pytest.mark.parametrize(("body", "param"), [
    ({"url": URL}, "enabled_events"),
    ({"enabled_events": ["*"]}, "url"),
    ({"url": URL, "enabled_events": []}, "enabled_events"),
    ({"url": URL, "enabled_events": "*"}, "enabled_events"),
    ({"url": URL, "enabled_events": ["*", "payment.captured"]}, "enabled_events"),
    ({"url": URL, "enabled_events": ["Payment Captured"]}, "enabled_events"),
    ({"url": URL, "enabled_events": [1]}, "enabled_events"),
    ({"url": URL, "enabled_events": ["*"], "status": "disabled"}, "status"),
    ({"url": URL, "enabled_events": ["*"], "secret": "whsec_mine"}, "secret"),
    ({"url": URL, "enabled_events": ["*"], "merchant": "acct_x"}, "merchant"),
    ({"url": "not a url", "enabled_events": ["*"]}, "url"),
])
def test_invalid_create_is_400_with_param(api, body, param):
    response = api.post("/webhook_endpoints", body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert not WebhookEndpoint.objects.exists()


def test_https_is_required_in_production_settings(api, settings):
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    response = api.post("/webhook_endpoints", {"url": URL, "enabled_events": ["*"]})
    assert response.status_code == 400 and "https" in response.json()["error"]["message"]


def test_another_merchants_endpoint_is_404_everywhere(api, other_api):
    theirs = _create(other_api)["id"]
    for response in (
        api.get(f"/webhook_endpoints/{theirs}"),
        api.post(f"/webhook_endpoints/{theirs}", {"description": "mine now"}),
        api.post(f"/webhook_endpoints/{theirs}", {"url": "http://127.0.0.1:1/x"}),
        api.client.delete(f"/api/v1/webhook_endpoints/{theirs}"),
        api.post(f"/webhook_endpoints/{theirs}/rotate_secret"),
        api.get(f"/webhook_endpoints/{theirs}/deliveries"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "resource_missing"
    assert api.get("/webhook_endpoints").json()["data"] == []
    row = WebhookEndpoint.objects.get(pk=theirs)
    assert row.description == "" and row.deleted_at is None


def test_update_url_events_and_disable_then_enable(api, merchant):
    endpoint = _create(api)
    response = api.post(f"/webhook_endpoints/{endpoint['id']}",
                        {"url": "http://127.0.0.1:10/new", "enabled_events": ["*"],
                         "description": "all"})
    assert response.status_code == 200
    assert response.json()["url"] == "http://127.0.0.1:10/new"
    assert response.json()["enabled_events"] == ["*"]

    services.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": "pay_1", "object": "payment"})
    disabled = api.post(f"/webhook_endpoints/{endpoint['id']}", {"disabled": True}).json()
    assert disabled["status"] == "disabled"
    assert WebhookDelivery.objects.get().status == DeliveryStatus.FAILED
    services.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": "pay_2", "object": "payment"})
    assert WebhookDelivery.objects.count() == 1  # nothing new for a disabled endpoint

    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(failing_since="2026-01-01T00:00Z")
    enabled = api.post(f"/webhook_endpoints/{endpoint['id']}", {"disabled": False}).json()
    assert enabled["status"] == "enabled" and enabled["failing_since"] is None

    for bad in ({"disabled": "false"}, {"status": "enabled"}, {"url": "http://10.0.0.1/"}):
        assert api.post(f"/webhook_endpoints/{endpoint['id']}", bad).status_code == 400


def test_delete_hides_the_endpoint_and_stops_deliveries(api, merchant):
    endpoint = _create(api)
    services.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": "pay_1", "object": "payment"})
    response = api.client.delete(f"/api/v1/webhook_endpoints/{endpoint['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": endpoint["id"], "object": "webhook_endpoint",
                               "deleted": True}
    assert api.get(f"/webhook_endpoints/{endpoint['id']}").status_code == 404
    assert api.get("/webhook_endpoints").json()["data"] == []
    assert WebhookDelivery.objects.get().status == DeliveryStatus.FAILED
    assert api.client.delete(f"/api/v1/webhook_endpoints/{endpoint['id']}").status_code == 404


def test_rotate_secret_returns_a_new_secret_with_an_overlap(api):
    endpoint = _create(api)
    rotated = api.post(f"/webhook_endpoints/{endpoint['id']}/rotate_secret")
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != endpoint["secret"]
    assert body["previous_secret_expires"] - body["created"] >= 24 * 3600 - 5
    row = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert crypto.decrypt(row.previous_secret_encrypted) == endpoint["secret"]

    immediate = api.post(f"/webhook_endpoints/{endpoint['id']}/rotate_secret",
                         {"expires_in": 0}).json()
    assert immediate["previous_secret_expires"] is None
    row.refresh_from_db()
    assert services.endpoint_signing_secrets(endpoint=row, now=row.updated_at) == (
        immediate["secret"],)
    for bad in ({"expires_in": -1}, {"expires_in": "60"}, {"expires_in": 10**7},
                {"expires_in": 1.5}):
        response = api.post(f"/webhook_endpoints/{endpoint['id']}/rotate_secret", bad)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "expires_in"


def test_deliveries_list_shows_attempts(api, merchant, receivers):
    rx = receivers(replies=[500, 200])
    issued = subscribe(merchant, rx)
    services.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": "pay_1", "object": "payment"})
    services.delivery_sweep(concurrency=1)
    services.WebhookDelivery.objects.update(next_attempt_at="2000-01-01T00:00Z")
    services.delivery_sweep(concurrency=1)

    listed = api.get(f"/webhook_endpoints/{issued.endpoint.id}/deliveries").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    (row,) = listed["data"]
    assert row["object"] == "webhook_delivery" and row["event_type"] == "payment.captured"
    assert row["status"] == "delivered" and row["attempt_count"] == 2
    assert [a["status_code"] for a in row["attempts"]] == [500, 200]
    assert [a["succeeded"] for a in row["attempts"]] == [False, True]
    assert row["attempts"][1]["response_snippet"] == '{"received": true}'


def test_resend_creates_new_deliveries_with_the_same_event_id(api, merchant, receivers):
    first, second = receivers(), receivers()
    one = subscribe(merchant, first, ["payment.captured"])
    subscribe(merchant, second, ["*"])
    subscribe(merchant, receivers(), ["refund.created"])
    event = services.event_record(merchant=merchant, type="payment.captured",
                                  obj={"id": "pay_1", "object": "payment"})
    services.delivery_sweep(concurrency=1)

    to_all = api.post(f"/events/{event.id}/resend")
    assert to_all.status_code == 200 and len(to_all.json()["data"]) == 2
    to_one = api.post(f"/events/{event.id}/resend", {"endpoint": one.endpoint.id},
                      key="resend-1")
    assert to_one.status_code == 200
    assert [d["endpoint"] for d in to_one.json()["data"]] == [one.endpoint.id]
    replay = api.post(f"/events/{event.id}/resend", {"endpoint": one.endpoint.id},
                      key="resend-1")
    assert replay.json() == to_one.json() and replay["Idempotent-Replayed"] == "true"
    services.delivery_sweep(concurrency=1)

    assert first.event_counts() == {event.id: 3}
    assert second.event_counts() == {event.id: 2}
    assert WebhookDelivery.objects.filter(event=event).count() == 5


def test_resend_checks_tenancy_and_endpoint_state(api, other_api, merchant):
    endpoint = _create(api)
    event = services.event_record(merchant=merchant, type="payment.captured",
                                  obj={"id": "pay_1", "object": "payment"})
    theirs = _create(other_api)["id"]
    assert other_api.post(f"/events/{event.id}/resend").status_code == 404
    missing = api.post(f"/events/{event.id}/resend", {"endpoint": theirs})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "endpoint"
    api.post(f"/webhook_endpoints/{endpoint['id']}", {"disabled": True})
    disabled = api.post(f"/events/{event.id}/resend", {"endpoint": endpoint["id"]})
    assert disabled.status_code == 409
    assert disabled.json()["error"]["code"] == "endpoint_disabled"
    assert api.post(f"/events/{event.id}/resend", {"endpoints": "x"}).status_code == 400


def test_endpoint_list_paginates_newest_first(api):
    ids = [_create(api, description=str(n))["id"] for n in range(3)]
    page = api.get("/webhook_endpoints", {"limit": 2}).json()
    assert [e["id"] for e in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = api.get("/webhook_endpoints", {"limit": 2, "starting_after": ids[1]}).json()
    assert [e["id"] for e in rest["data"]] == [ids[0]] and rest["has_more"] is False


def test_endpoint_count_is_limited(api):
    for _ in range(services.MAX_ENDPOINTS_PER_MERCHANT):
        _create(api)
    response = api.post("/webhook_endpoints", {"url": URL, "enabled_events": ["*"]})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "endpoint_limit_reached"


def test_admin_never_shows_the_secret_and_resends(client, api, merchant, receivers):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    rx = receivers()
    issued = subscribe(merchant, rx)
    event = services.event_record(merchant=merchant, type="payment.captured",
                                  obj={"id": "pay_1", "object": "payment"})
    services.delivery_sweep(concurrency=1)
    row = WebhookEndpoint.objects.get(pk=issued.endpoint.pk)

    for url in ("/admin/webhooks/webhookendpoint/",
                f"/admin/webhooks/webhookendpoint/{row.pk}/change/"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert issued.secret not in html and row.secret_encrypted not in html
    delivery = WebhookDelivery.objects.get(event=event)
    detail = client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/")
    assert detail.status_code == 200
    assert "&quot;received&quot;: true" in detail.content.decode()  # the attempts inline
    assert client.get(f"/admin/webhooks/event/{event.pk}/change/").status_code == 200
    assert client.get("/admin/webhooks/event/add/").status_code == 403

    response = client.post("/admin/webhooks/webhookdelivery/",
                           {"action": "resend", "_selected_action": [delivery.pk]})
    assert response.status_code == 302
    assert WebhookDelivery.objects.filter(event=event).count() == 2
    services.delivery_sweep(concurrency=1)
    assert rx.event_counts() == {event.id: 2}
    assert Event.objects.filter(type="webhook_endpoint.disabled").count() == 0


def test_a_reaped_key_with_the_same_request_gets_the_same_endpoint_and_another_body_422(api):
    """The endpoint keeps its create request's key and fingerprint, so after the 24 h reaper the
    same request still answers with the endpoint it made (never a second one), other parameters
    with 422, and the limit counts it once."""
    from datetime import timedelta

    from core.idempotency import idempotency_reap

    body = {"url": URL, "enabled_events": ["*"]}
    first = api.post("/webhook_endpoints", body, key="we-key")
    assert first.status_code == 201
    idempotency_reap(older_than=timedelta(seconds=-1))
    again = api.post("/webhook_endpoints", body, key="we-key")
    assert again.status_code == 201, again.json()
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["secret"] == first.json()["secret"]
    assert WebhookEndpoint.objects.count() == 1
    idempotency_reap(older_than=timedelta(seconds=-1))
    other = api.post("/webhook_endpoints", {**body, "description": "other"}, key="we-key")
    assert other.status_code == 422
    assert other.json()["error"]["type"] == "idempotency_error"
    assert WebhookEndpoint.objects.count() == 1


def test_a_retry_of_a_committed_create_finds_its_endpoint_even_at_the_limit(merchant):
    """A request that died after committing (its key row taken over) retries into the unique
    (merchant, key): it gets its endpoint, not `endpoint_limit_reached`."""
    made = [services.endpoint_create(merchant=merchant, url=URL, enabled_events=["*"],
                                     idempotency_key=f"k{n}", idempotency_fingerprint=f"f{n}")
            for n in range(services.MAX_ENDPOINTS_PER_MERCHANT)]
    retried = services.endpoint_create(merchant=merchant, url=URL, enabled_events=["*"],
                                       idempotency_key="k0", idempotency_fingerprint="f0")
    assert retried.endpoint.pk == made[0].endpoint.pk and retried.secret == made[0].secret
    assert WebhookEndpoint.objects.count() == services.MAX_ENDPOINTS_PER_MERCHANT
