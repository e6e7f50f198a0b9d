"""Events and webhook endpoints as plain dicts: the API's responses and what a webhook delivers,
built here so services never depend on the API layer."""

from __future__ import annotations

from typing import Any

from core import versions
from core.payloads import unix
from webhooks.models import Event, WebhookEndpoint


def event_to_dict(event: Event, *, version: str = versions.LATEST) -> dict[str, Any]:
    """The event as the API lists it and as a webhook delivers it (the signed body), its data
    rendered in `version` from the version it was stored in. An event stored in a version this
    release does not know (recorded by a newer release, before a rollback) cannot be rendered:
    it is shown as stored and labelled with its own version, never refused or guessed at."""
    if not versions.is_version(event.api_version):
        version = event.api_version
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "api_version": version,
        "created": int(event.created_at.timestamp()),
        "data": {"object": versions.render(event.data, version=version,
                                           stored=event.api_version)},
    }


def endpoint_to_dict(endpoint: WebhookEndpoint, *, secret: str | None = None) -> dict[str, Any]:
    """The endpoint as the API shows it. `secret` only in the create and rotate responses."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "enabled_events": endpoint.enabled_events,
        "description": endpoint.description,
        "api_version": endpoint.api_version,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason or None,
        "failing_since": unix(endpoint.failing_since),
        "previous_secret_expires": unix(endpoint.previous_secret_expires_at),
        "created": int(endpoint.created_at.timestamp()),
    }
    if secret is not None:
        body["secret"] = secret
    return body
