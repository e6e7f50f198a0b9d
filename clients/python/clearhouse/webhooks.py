"""Check that a webhook came from Clearhouse, then read it as its typed event model.

The `Clearhouse-Signature` header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: each `v1` is the
HMAC-SHA256, keyed with an endpoint signing secret (`whsec_…`, UTF-8), of `b"<t>." + raw body`.
During a secret rotation there is one `v1` per live secret. A `t` further than `tolerance`
seconds from now is refused, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from clearhouse_api import models

DEFAULT_TOLERANCE_SECONDS = 300


class SignatureVerificationError(ValueError):
    """The delivery is not provably from Clearhouse (or is too old): answer 400 and drop it."""


def _fields(header: str) -> tuple[int, list[str]]:
    pairs = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in pairs if key == "t"]
    if len(stamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", stamps[0]):
        raise SignatureVerificationError("The signature header needs exactly one numeric t=.")
    digests = [value for key, _, value in pairs if key == "v1"]
    if not digests:
        raise SignatureVerificationError("The signature header has no v1= signature.")
    return int(stamps[0]), digests


def verify_header(payload: bytes, header: str, secrets: str | Sequence[str], *,
                  tolerance: int = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> None:
    """Raise SignatureVerificationError unless a `v1` signs `payload` with one of `secrets`
    within `tolerance` seconds of `now`."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise SignatureVerificationError("No signing secret was given.")
    if not all(isinstance(key, str) and key for key in keys):
        # An unset setting read as "": the HMAC under an empty key is anyone's to compute.
        raise SignatureVerificationError("A signing secret must be a non-empty string.")
    timestamp, digests = _fields(header or "")
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise SignatureVerificationError("The signature's timestamp is outside the tolerance.")
    message = b"%d." % timestamp + payload
    expected = [hmac.new(key.encode(), message, hashlib.sha256).hexdigest() for key in keys]
    # Every pair is compared, in constant time, so timing tells nothing about a near miss.
    matches = [hmac.compare_digest(want.encode(), got.encode("utf-8", "replace"))
               for want in expected for got in digests]
    if not any(matches):
        raise SignatureVerificationError("No signature matches the payload and secret.")


def construct_event(payload: bytes, header: str, secrets: str | Sequence[str], *,
                    tolerance: int = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> Any:
    """Verify, then parse the delivery into its event type's model (`PaymentCapturedEvent`,
    `RefundCreatedEvent`, …; the catalogue is the schema's `webhooks`)."""
    verify_header(payload, header, secrets, tolerance=tolerance, now=now)
    body = json.loads(payload)
    model = getattr(models, _model_name(str(body.get("type", ""))), None)
    if model is None:
        raise ValueError(f"Unknown event type {body.get('type')!r}: upgrade the client, or "
                         "read the verified JSON yourself.")
    return model.from_dict(body)


def _model_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", event_type)) + "Event"
