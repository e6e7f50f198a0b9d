"""The staff audit log's writer, and who is acting (user, address, request id)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.http import HttpRequest

from backoffice.models import AuditEntry

# Every action name the back-office writes (the audit list's filter offers these).
AUDIT_ACTIONS = (
    "payment.refund", "payment.refund.result", "payment.capture", "payment.capture.result",
    "payment.cancel", "payment.cancel.result", "dispute.open", "dispute.evidence",
    "dispute.evidence.result", "dispute.evidence_file", "dispute.refresh", "dispute.won",
    "dispute.lost", "webhook.resend", "provider_event.replay",
    "provider_event.replay.result", "break.resolve", "break.ignore", "ledger.verify",
    "approval.request", "approval.approve", "approval.reject", "approval.execute",
    "apikey.revoke", "admin.add", "admin.change", "admin.delete", "admin.password_change",
    "bank_statement.import", "export", "decline_rule.change",
)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or the address our own proxies saw
    (BACKOFFICE_TRUSTED_PROXY_COUNT hops from the right of X-Forwarded-For). Also django-axes'
    AXES_CLIENT_IP_CALLABLE, so lockouts and the audit log agree."""
    address = request.META.get("REMOTE_ADDR") or None
    hops = settings.BACKOFFICE_TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if hops and forwarded:
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        # Only the entries our proxies appended are trustworthy; the client can forge the rest.
        if len(chain) >= hops:
            address = chain[-hops]
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Actor:
    """The person behind an action, as the audit log records them."""

    user: AbstractBaseUser | None
    ip_address: str | None = None
    user_agent: str = ""
    request_id: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        user = request.user if not isinstance(request.user, AnonymousUser) else None
        return cls(user=user, ip_address=client_ip(request),
                   user_agent=request.META.get("HTTP_USER_AGENT", "")[:300],
                   request_id=getattr(request, "request_id", "") or "")

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else "system"

    def has_perm(self, perm: str) -> bool:
        return self.user is not None and self.user.is_active and self.user.has_perm(perm)


def snapshot(obj: models.Model | None, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The concrete field values of a row, JSON-safe (foreign keys as ids). Secrets are never
    in a snapshot: callers pass `fields` for models that hold any."""
    if obj is None:
        return {}
    wanted = set(fields) if fields is not None else None
    data: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if wanted is not None and field.name not in wanted:
            continue
        if "secret" in field.name or "password" in field.name or field.name == "hashed_key":
            continue  # belt and braces: the log is read by many people
        data[field.attname] = field.value_from_object(obj)
    # Round-trip through the encoder the column uses, so dates and decimals are plain strings.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def audit_record(
    *, actor: Actor, action: str, object_type: str, object_id: str,
    before: dict[str, Any] | None = None, after: dict[str, Any] | None = None, note: str = "",
) -> AuditEntry:
    """Append one row. Call it inside the transaction of the action it describes, so the row
    exists exactly when the change does."""
    return AuditEntry.objects.create(
        actor=actor.user, actor_username=actor.username, ip_address=actor.ip_address,
        user_agent=actor.user_agent, request_id=actor.request_id[:40], action=action,
        object_type=object_type, object_id=str(object_id)[:64], before=before or None,
        after=after or None, note=note,
    )
