"""Verify a Clearhouse webhook signature. Standard library only: merchants may copy this file.

Every webhook carries a header

    Clearhouse-Signature: t=1767225600,v1=5257a869e7ec…,v1=9b1f…

where each `v1` is the lower-case hex HMAC-SHA256, keyed with one of your endpoint's signing
secrets (the whole `whsec_…` string, UTF-8), of the bytes `f"{t}."` followed by the raw request
body exactly as received. While a rotated secret is still in its overlap window the header
carries one `v1` per secret, so a receiver that knows either secret accepts the request.

How to use it (any framework; read the RAW body before parsing JSON):

    from verify import verify_signature

    ok = verify_signature(request_body_bytes, request.headers["Clearhouse-Signature"],
                          ["whsec_…current", "whsec_…previous (during rotation)"])
    if not ok:
        return 400

Then de-duplicate on the event id (header `Clearhouse-Event-Id`, also the body's `id`):
delivery is at least once, so the same event may arrive more than once.

A signature is accepted only when its timestamp is within `tolerance` seconds (default 300) of
your clock, which stops an attacker who captured one request from replaying it later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"
DEFAULT_TOLERANCE = 300
MAX_TIMESTAMP_DIGITS = 12  # int() refuses past 4300 digits; a real t has 10


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + payload` keyed with `secret`."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def parse_header(header: str) -> tuple[int | None, list[str]]:
    """(timestamp, [v1 signatures]) from a `t=…,v1=…` header; (None, []) if malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if (not value.isascii() or not value.isdigit() or len(value) > MAX_TIMESTAMP_DIGITS
                    or timestamp is not None):
                return None, []  # a second or non-numeric `t` is an attempt to confuse us
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    return timestamp, signatures


def verify_signature(payload: bytes, header: str, secrets: str | list[str],
                     tolerance: int = DEFAULT_TOLERANCE, now: int | None = None) -> bool:
    """True if some `v1` in `header` is the signature of `payload` under some secret in
    `secrets` (one secret, or a list), and the header's timestamp is at most `tolerance`
    seconds from `now`. An empty secret fails everything: anyone can sign with it."""
    # One string is one secret, never its characters (each would be a guessable key).
    keys = [secrets] if isinstance(secrets, str) else list(secrets or [])
    if not header or not keys or not all(isinstance(key, str) and key for key in keys):
        return False
    timestamp, signatures = parse_header(header)
    if timestamp is None or not signatures:
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    matched = False
    for secret in keys:
        expected = compute_signature(payload, secret, timestamp)
        for candidate in signatures:
            # Constant time, and no early exit, so timing reveals nothing about which matched.
            matched |= hmac.compare_digest(expected.encode("ascii"),
                                           candidate.encode("utf-8", errors="replace"))
    return matched
