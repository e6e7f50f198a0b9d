"""Dated API versions: the list of versions and the changes between them, in one place.

The code builds every object in the newest shape. A merchant is pinned to the version that was
newest when it was created (`Merchant.api_version`); a request may ask for another with the
`Clearhouse-Version` header, and a webhook endpoint renders in the version it was created with.
Each breaking change is one `VersionChange`: the version that introduced it, the objects it
touches and two pure functions on their dicts. To ship a new breaking change, add a version to
VERSIONS and a VersionChange here; nothing else needs to know about old shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEADER = "Clearhouse-Version"
META_HEADER = "HTTP_CLEARHOUSE_VERSION"
# Oldest first. The first is the API as it was before versions were dated.
VERSIONS = ["2026-06-01", "2026-12-06"]
OLDEST, LATEST = VERSIONS[0], VERSIONS[-1]

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def latest() -> str:
    """The default version of a new merchant, endpoint or event (a callable, so migrations do not
    freeze today's value)."""
    return LATEST


@dataclass(frozen=True)
class VersionChange:
    version: str  # the first version with the new shape
    objects: frozenset[str]  # the `object` values it applies to
    description: str  # for the changelog (docs/API.md)
    downgrade: Transform  # new shape → the shape before `version`
    upgrade: Transform  # the shape before `version` → new shape


def _replace_keys(obj: dict[str, Any], old: tuple[str, ...], new: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the keys `old` replaced, where the first of them stood, by `new`."""
    result: dict[str, Any] = {}
    for key, value in obj.items():
        if key == old[0]:
            result.update(new)
        elif key not in old:
            result[key] = value
    return result


def _failure_to_last_error(obj: dict[str, Any]) -> dict[str, Any]:
    if "failure_code" not in obj:
        return obj
    code = obj.get("failure_code")
    last_error = {"code": code, "message": obj.get("failure_message")} if code else None
    return _replace_keys(obj, ("failure_code", "failure_message"), {"last_error": last_error})


def _last_error_to_failure(obj: dict[str, Any]) -> dict[str, Any]:
    if "last_error" not in obj:
        return obj
    error = obj.get("last_error") or {}
    return _replace_keys(obj, ("last_error",), {"failure_code": error.get("code"),
                                                "failure_message": error.get("message")})


CHANGES = [
    VersionChange(
        version="2026-12-06", objects=frozenset({"payment", "deposit", "payout"}),
        description="Payments, deposits and payouts: `failure_code` and `failure_message` are "
                    "replaced by one object, `last_error`: `{\"code\", \"message\"}`, or "
                    "null when the object has not failed.",
        downgrade=_last_error_to_failure, upgrade=_failure_to_last_error,
    ),
]


def is_version(value: str) -> bool:
    return value in VERSIONS


def _index(version: str) -> int:
    return VERSIONS.index(version)


def render(body: Any, *, version: str, stored: str = LATEST) -> Any:
    """`body` (built in version `stored`) as a client of `version` sees it: every object in it,
    at any depth, passed through the changes between the two versions. Events say which
    version their `data` is in."""
    if version == stored:
        return body
    low, high = sorted((_index(version), _index(stored)))
    between = [change for change in CHANGES if low < _index(change.version) <= high]
    if _index(version) < _index(stored):
        steps = [(change.objects, change.downgrade) for change in reversed(between)]
    else:
        steps = [(change.objects, change.upgrade) for change in between]
    return _walk(body, steps, version)


# The client's own key-value data: never read as an object, whatever keys it holds.
_FREE_FORM = frozenset({"metadata", "evidence"})


def _walk(value: Any, steps: list[tuple[frozenset[str], Transform]], version: str) -> Any:
    if isinstance(value, list):
        return [_walk(item, steps, version) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("object") == "event" and not is_version(value.get("api_version", LATEST)):
        return value  # stored by a newer release (webhooks.payloads.event_to_dict): as stored
    result = {key: item if key in _FREE_FORM else _walk(item, steps, version)
              for key, item in value.items()}
    kind = result.get("object")
    if not isinstance(kind, str):  # an event's `data`: {"object": {…}}
        return result
    for objects, transform in steps:
        if kind in objects:
            result = transform(result)
    if kind == "event" and "api_version" in result:
        result["api_version"] = version
    return result
