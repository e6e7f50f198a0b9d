"""OpenAPI docs, health endpoints and management commands."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from core import versions
from core.models import ApiKey, Merchant

pytestmark = pytest.mark.django_db


def test_schema_swagger_and_redoc_render(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    spec = schema.json()
    assert "/api/v1/payments" in spec["paths"]
    assert "/api/v1/refunds" in spec["paths"]
    post = spec["paths"]["/api/v1/payments"]["post"]
    assert {"400", "401", "409", "422"} <= set(post["responses"])
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/redoc/").status_code == 200


def test_readyz_reports_database_and_broker(client):
    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"]["ok"] is True
    assert "broker" in body["checks"]


def test_merchant_create_prints_exactly_one_json_object():
    out = StringIO()
    call_command("merchant_create", "Acme Ltd", stdout=out)
    data = json.loads(out.getvalue())
    assert set(data) == {"id", "name", "api_version", "api_key"}
    assert data["name"] == "Acme Ltd"
    assert data["api_key"].startswith("sk_test_")
    merchant = Merchant.objects.get(pk=data["id"])
    key = ApiKey.objects.get(merchant=merchant)
    assert data["api_key"] not in (key.hashed_key, key.prefix)
    assert data["api_version"] == merchant.api_version == versions.LATEST


def test_merchant_create_pins_the_api_version_asked_for():
    out = StringIO()
    call_command("merchant_create", "Old Co", "--api-version", versions.OLDEST, stdout=out)
    data = json.loads(out.getvalue())
    assert Merchant.objects.get(pk=data["id"]).api_version == versions.OLDEST


def test_demo_seed_is_idempotent_and_its_key_works(client, settings):
    first, second = StringIO(), StringIO()
    call_command("demo_seed", stdout=first)
    call_command("demo_seed", stdout=second)
    assert json.loads(first.getvalue()) == json.loads(second.getvalue())
    assert Merchant.objects.filter(name="Demo Merchant").count() == 1
    key = json.loads(first.getvalue())["api_key"]
    response = client.get("/api/v1/payments", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200


def test_every_response_carries_a_request_id(client):
    assert client.get("/healthz")["Request-Id"].startswith("req_")
