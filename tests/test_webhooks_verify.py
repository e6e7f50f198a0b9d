"""webhooks.verify: the receiver-side check merchants copy, against headers we produce."""

from __future__ import annotations

from webhooks.delivery import signature_header
from webhooks.verify import compute_signature, parse_header, verify_signature

BODY = b'{"id":"evt_1","object":"event","type":"payment.captured"}'
NOW = 1_767_225_600
SECRET, OTHER = "whsec_current", "whsec_previous"


def _header(*secrets: str, t: int = NOW) -> str:
    return signature_header(body=BODY, secrets=list(secrets), timestamp=t)


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(BODY, SECRET, NOW) == expected
    assert _header(SECRET) == f"t={NOW},v1={expected}"


def test_a_correct_signature_verifies():
    assert verify_signature(BODY, _header(SECRET), [SECRET], now=NOW)


def test_one_changed_byte_is_rejected():
    for index in range(len(BODY)):
        tampered = bytearray(BODY)
        tampered[index] ^= 0x20
        assert not verify_signature(bytes(tampered), _header(SECRET), [SECRET], now=NOW)


def test_a_wrong_secret_is_rejected():
    assert not verify_signature(BODY, _header(SECRET), [OTHER], now=NOW)
    assert not verify_signature(BODY, _header(SECRET), [], now=NOW)


def test_timestamps_more_than_300_seconds_away_are_rejected():
    header = _header(SECRET)
    assert verify_signature(BODY, header, [SECRET], now=NOW + 300)
    assert verify_signature(BODY, header, [SECRET], now=NOW - 300)
    assert not verify_signature(BODY, header, [SECRET], now=NOW + 301)
    assert not verify_signature(BODY, header, [SECRET], now=NOW - 301)
    assert verify_signature(BODY, header, [SECRET], tolerance=600, now=NOW + 500)


def test_changing_the_timestamp_breaks_the_signature():
    forged = _header(SECRET).replace(f"t={NOW}", f"t={NOW + 100}")
    assert not verify_signature(BODY, forged, [SECRET], now=NOW + 100)


def test_any_v1_matching_any_secret_is_accepted_during_rotation():
    header = _header(SECRET, OTHER)
    assert len(parse_header(header)[1]) == 2
    assert verify_signature(BODY, header, [SECRET], now=NOW)
    assert verify_signature(BODY, header, [OTHER], now=NOW)
    assert verify_signature(BODY, header, ["whsec_unrelated", OTHER], now=NOW)


def test_malformed_headers_are_rejected():
    good = compute_signature(BODY, SECRET, NOW)
    for header in ["", "garbage", f"v1={good}", f"t={NOW}", f"t=abc,v1={good}",
                   f"t={NOW},t={NOW},v1={good}", f"t={NOW},v0={good}", f"t=-{NOW},v1={good}",
                   f"t={NOW},v1={good.upper()}", f"t={NOW},v1=é{good}"]:
        assert not verify_signature(BODY, header, [SECRET], now=NOW), header


def test_unknown_schemes_and_spaces_are_tolerated():
    good = compute_signature(BODY, SECRET, NOW)
    assert verify_signature(BODY, f"t={NOW}, v2=abc, v1={good}", [SECRET], now=NOW)


def test_verify_uses_the_clock_by_default():
    import time

    header = signature_header(body=BODY, secrets=[SECRET], timestamp=int(time.time()))
    assert verify_signature(BODY, header, [SECRET])
    stale = signature_header(body=BODY, secrets=[SECRET], timestamp=int(time.time()) - 301)
    assert not verify_signature(BODY, stale, [SECRET])
