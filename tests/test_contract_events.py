"""The event catalogue: one typed payload per event type in the schema's `webhooks` and in
docs/API.md, `enabled_events` checked against it, and no event recorded outside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

from core.events import event_types
from core.reference import openapi_yaml
from tests.test_webhooks_support import dns_fixture, network_guard_fixture  # noqa: F401
from webhooks import services
from webhooks.models import WebhookEndpoint

ROOT = Path(settings.BASE_DIR)


def _emitted_types() -> dict[str, str]:
    """Every event type the code records: the literal given to an `…_event(obj, "type")` helper
    or to `event_record(type=…)`, and module constants named `*_EVENT`."""
    found: dict[str, str] = {}
    for app in ("payments", "wallet", "webhooks", "reconciliation", "backoffice", "ledger"):
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                literal = None
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    arguments = [*node.args, *(k.value for k in node.keywords if k.arg == "type")]
                    if name.endswith("_event") or name == "event_record":
                        literal = next((arg.value for arg in arguments if isinstance(
                            arg, ast.Constant) and isinstance(arg.value, str)), None)
                elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                    targets = [getattr(target, "id", "") for target in node.targets]
                    if any(target.endswith("_EVENT") for target in targets):
                        literal = node.value.value
                if isinstance(literal, str) and "." in literal:
                    found[literal] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


EMITTED = set(_emitted_types())
URL = "https://hooks.example.com/clearhouse"


def _schema() -> dict:
    import yaml

    return yaml.safe_load(openapi_yaml())


def test_the_catalogue_lists_every_emitted_type():
    assert len(EMITTED) >= 20  # the scan finds what it is meant to find
    catalogue = {event_type.name for event_type in event_types()}
    missing = {name: where for name, where in _emitted_types().items() if name not in catalogue}
    assert not missing, ("register these event types in their app's apps.py "
                         f"(core.events.event_types_register), then `make schema`: {missing}")
    # Types built at run time (f"{kind}.created") escape the scan; event_record refuses them
    # anyway unless they are catalogued (test_an_event_outside_the_catalogue_is_never_recorded).
    assert catalogue >= EMITTED


@pytest.mark.django_db
def test_a_typo_in_enabled_events_is_400_naming_the_unknown_type(api):
    response = api.post("/webhook_endpoints", {
        "url": URL, "enabled_events": ["payment.captured", "payment.captred"]})
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("parameter_invalid", "enabled_events")
    assert "'payment.captred'" in error["message"]
    assert "Did you mean 'payment.captured'?" in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_an_update_to_an_unknown_type_is_refused_and_changes_nothing(api, dns):
    dns.answer("hooks.example.com", "93.184.216.34")
    created = api.post("/webhook_endpoints", {"url": URL, "enabled_events": ["refund.created"]})
    assert created.status_code == 201, created.json()
    endpoint_id = created.json()["id"]
    response = api.post(f"/webhook_endpoints/{endpoint_id}",
                        {"enabled_events": ["refund.created", "refund.updated"]})
    assert response.status_code == 400
    assert "'refund.updated'" in response.json()["error"]["message"]
    assert api.get(f"/webhook_endpoints/{endpoint_id}").json()["enabled_events"] == [
        "refund.created"]


@pytest.mark.django_db
def test_an_event_outside_the_catalogue_is_never_recorded(merchant):
    with pytest.raises(ValueError, match="not in the catalogue"):
        services.event_record(merchant=merchant, type="payment.exploded",
                              obj={"id": "pay_x", "object": "payment"})
    with pytest.raises(ValueError, match="carries a payment"):
        services.event_record(merchant=merchant, type="payment.captured",
                              obj={"id": "re_x", "object": "refund"})


def test_the_schema_publishes_one_typed_payload_per_event_type():
    schema = _schema()
    components = schema["components"]["schemas"]
    assert schema["openapi"].startswith("3.1")
    assert set(schema["webhooks"]) == {event_type.name for event_type in event_types()}
    assert set(schema["webhooks"]) >= EMITTED
    for event_type in event_types():
        body = schema["webhooks"][event_type.name]["post"]["requestBody"]
        payload = components[body["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
        assert payload["properties"]["type"]["const"] == event_type.name
        assert payload["properties"]["object"]["const"] == "event"
        data = components[payload["properties"]["data"]["$ref"].split("/")[-1]]
        target = data["properties"]["object"]
        ref = target.get("$ref") or target["allOf"][0]["$ref"]
        assert components[ref.split("/")[-1]]["properties"]["object"]
        assert set(payload["required"]) >= {"id", "type", "data", "created", "api_version"}
    assert set(components["EventType"]["enum"]) == set(schema["webhooks"])
    enabled = components["WebhookEndpointCreateInputRequest"]["properties"]["enabled_events"]
    assert enabled["oneOf"][0]["items"] == {"$ref": "#/components/schemas/EventType"}


def test_the_docs_list_every_event_type():
    text = (Path(settings.BASE_DIR) / "docs" / "API.md").read_text()
    for name in [event_type.name for event_type in event_types()]:
        assert f"| `{name}` |" in text, name
