"""The event catalogue: every event type the API emits, the object its payload carries and what
it means. Each app registers its own types when it starts (its apps.py), so webhooks can refuse
an unknown type in `enabled_events` and the OpenAPI schema can publish one typed payload per
type, without a lower layer importing a higher one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventType:
    name: str  # "payment.captured"
    object: str  # "payment": the `object` of `data.object` in the payload
    serializer: type  # the object's OpenAPI shape (a DRF serializer class)
    description: str


_CATALOGUE: dict[str, EventType] = {}


def event_types_register(*, object: str, serializer: type, types: dict[str, str]) -> None:
    """Register `types` ({name: description}) whose payloads carry an `object`. Registering
    a name twice with another object is a programming error."""
    for name, description in types.items():
        if not name.startswith(f"{object}."):
            raise ValueError(f"event type {name!r} must start with {object!r}.")
        known = _CATALOGUE.get(name)
        if known is not None and known.serializer is not serializer:
            raise ValueError(f"event type {name!r} is already registered for another object.")
        _CATALOGUE[name] = EventType(name=name, object=object, serializer=serializer,
                                     description=description)


def event_types() -> list[EventType]:
    """Every registered type, sorted by name."""
    return [_CATALOGUE[name] for name in sorted(_CATALOGUE)]


def event_type_get(name: str) -> EventType | None:
    return _CATALOGUE.get(name)


def event_type_check(name: str, obj: dict[str, Any]) -> None:
    """Refuse to record an event the catalogue does not list, or whose object is not the one the
    catalogue promises: receivers' code is written against the catalogue."""
    known = _CATALOGUE.get(name)
    if known is None:
        raise ValueError(f"event type {name!r} is not in the catalogue (core.events); register "
                         "it in its app's ready() so it is documented and subscribable.")
    if obj.get("object") != known.object:
        raise ValueError(f"event type {name!r} carries a {known.object}, not "
                         f"{obj.get('object')!r}.")
