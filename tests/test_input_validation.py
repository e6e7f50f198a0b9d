"""Bad input answers 400 with `param` and changes nothing (contract: Money, Requests and errors)."""

import json

import pytest

from payments.models import Payment

pytestmark = pytest.mark.django_db

BASE = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}


@pytest.mark.parametrize("amount", [0, -1, 10.5, "10", "10.5", True, 1e20, None,
                                    100_000_000_000, [], {}])
def test_bad_amounts_are_400_with_param(api, amount):
    response = api.post("/payments", {**BASE, "amount": amount})
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["param"] == "amount"
    assert error["type"] == "invalid_request_error"
    assert Payment.objects.count() == 0


def test_the_largest_allowed_amount_is_accepted(api):
    assert api.post("/payments", {**BASE, "amount": 99_999_999_999}).status_code == 201


def test_missing_currency_is_400(api):
    body = {k: v for k, v in BASE.items() if k != "currency"}
    response = api.post("/payments", body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "currency"
    assert response.json()["error"]["code"] == "parameter_missing"


@pytest.mark.parametrize("currency", ["xyz", "USD", "us", 840, ""])
def test_unknown_or_malformed_currency_is_400(api, currency):
    response = api.post("/payments", {**BASE, "currency": currency})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "currency"


def test_jpy_amounts_are_whole_yen(api):
    response = api.post("/payments", {**BASE, "amount": 500, "currency": "jpy"})
    assert response.status_code == 201
    assert response.json()["amount"] == 500
    from core.money import format_amount, to_decimal

    assert str(to_decimal(500, "jpy")) == "500"
    assert format_amount(1050, "usd") == "10.50 USD"
    assert str(to_decimal(1050, "kwd")) == "1.050"


@pytest.mark.parametrize("field", ["status", "amount_refunded", "merchant", "amount_captured",
                                   "id"])
def test_read_only_fields_in_a_create_body_are_400(api, field):
    response = api.post("/payments", {**BASE, field: "captured"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert response.json()["error"]["code"] == "parameter_unknown"
    assert Payment.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.client.post("/api/v1/payments", data="{not json",
                               content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_json_array_body_is_400(api):
    response = api.post("/payments", [BASE])
    assert response.status_code == 400


def test_unknown_content_type_is_415(api):
    response = api.client.post("/api/v1/payments", data="amount=1000",
                               content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "error" in response.json()


def test_metadata_limits(api):
    too_many = {f"k{i}": "v" for i in range(21)}
    assert api.post("/payments", {**BASE, "metadata": too_many}).status_code == 400
    assert api.post("/payments", {**BASE, "metadata": {"k": 5}}).status_code == 400
    assert api.post("/payments", {**BASE, "metadata": {"k": "a\r\nX-Injected: 1"}}
                    ).status_code == 400
    ok = api.post("/payments", {**BASE, "metadata": {"order": "A-1"}})
    assert ok.status_code == 201
    assert ok.json()["metadata"] == {"order": "A-1"}


def test_a_body_over_16_kib_is_413_and_changes_nothing(api):
    body = json.dumps({**BASE, "description": "x" * (17 * 1024)})
    response = api.client.post("/api/v1/payments", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert Payment.objects.count() == 0


def test_list_limit_out_of_range_is_400(api):
    for limit in ("0", "101", "abc"):
        response = api.get("/payments", {"limit": limit})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "limit"


def test_unknown_payment_is_404_with_param(api):
    response = api.get("/payments/pay_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "id"


# --- Hostile JSON answers 400 with the contract's error body, never 500 (issue 14, finding 9) ---

def _raw(api, text: str | bytes, *, content_type: str = "application/json", path="/payments",
         key: str | None = "hostile"):
    data = text.encode() if isinstance(text, str) else text
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.client.post(f"/api/v1{path}", data=data, content_type=content_type, **headers)


def _assert_400_changes_nothing(response, *, code: str = "invalid_json",
                                param: str | None = None) -> dict:
    from core.models import IdempotencyKey

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id", "doc_url"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["request_id"] == response["Request-Id"]
    if param is not None:
        assert error["param"] == param
    assert Payment.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0
    return error


JSON_BASE = '"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"'


@pytest.mark.parametrize("depth", [33, 1000, 10_000, 100_000])
@pytest.mark.parametrize("kind", ["arrays", "objects"])
def test_deeply_nested_json_is_400(api, depth, kind):
    inner = ('{"a": ' * depth + "1" + "}" * depth) if kind == "objects" else (
        "[" * depth + "]" * depth)
    text = f'{{{JSON_BASE}, "metadata": {{"k": {inner}}}}}'
    if len(text) > 16 * 1024:
        text = f'{{"x": {inner}}}'[: 16 * 1024 - 10]  # truncated: still must not be a 500
    response = _raw(api, text)
    assert response.status_code in (400, 413)
    assert Payment.objects.count() == 0


def test_nesting_at_ten_thousand_answers_a_clear_400(api):
    error = _assert_400_changes_nothing(_raw(api, "[" * 5000 + "]" * 5000))
    assert "nest" in error["message"]


@pytest.mark.parametrize("number", ["1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity",
                                    "-Infinity", "9" * 5000])
def test_huge_and_non_finite_numbers_are_400(api, number):
    response = _raw(api, f'{{"amount": {number}, "currency": "usd", '
                         f'"payment_method": "pm_card_visa"}}')
    assert response.status_code in (400, 413)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert Payment.objects.count() == 0


@pytest.mark.parametrize("text", [
    f'{{{JSON_BASE}, "description": "a\\u0000b"}}',
    f'{{{JSON_BASE}, "metadata": {{"k\\u0000": "v"}}}}',
    f'{{{JSON_BASE}, "description": "\\ud800"}}',
    f'{{{JSON_BASE}, "description": "x\\udfffy"}}',
    f'{{{JSON_BASE}, "metadata": {{"\\ud83d": "v"}}}}',
])
def test_nul_and_lone_surrogates_in_strings_are_400(api, text):
    _assert_400_changes_nothing(_raw(api, text))


def test_a_valid_surrogate_pair_is_an_ordinary_character(api):
    response = _raw(api, f'{{{JSON_BASE}, "description": "ok \\ud83d\\ude00"}}')
    assert response.status_code == 201, response.content
    assert response.json()["description"] == "ok \U0001f600"


@pytest.mark.parametrize("text", [
    '{"amount": 1000, "amount": 1, "currency": "usd", "payment_method": "pm_card_visa"}',
    f'{{{JSON_BASE}, "metadata": {{"k": "a", "k": "b"}}}}',
])
def test_duplicate_keys_are_400_naming_the_key(api, text):
    error = _assert_400_changes_nothing(_raw(api, text))
    assert "duplicate" in error["message"].lower()
    assert error["param"] in ("amount", "k")


@pytest.mark.parametrize("body", [b'{"amount": 1000, "currency": "\xff\xfe"}',
                                  b'\xef\xbb\xbf{"amount": 1000}', b"\xc3\x28", b"{\xed\xa0\x80}"])
def test_invalid_utf8_is_400(api, body):
    _assert_400_changes_nothing(_raw(api, body))


@pytest.mark.parametrize("text", ["[]", "[{}]", '"x"', "1", "null", "true", " ", "{} {}"])
def test_only_a_json_object_is_a_body(api, text):
    _assert_400_changes_nothing(_raw(api, text))


@pytest.mark.parametrize("content_type", ["application/json; charset=bogus",
                                          "application/json; charset=latin-1",
                                          "text/plain", "application/xml"])
def test_other_encodings_and_types_are_415_and_change_nothing(api, content_type):
    from core.models import IdempotencyKey

    response = _raw(api, "[" * 5000 + "]" * 5000, content_type=content_type)
    assert response.status_code == 415, response.content
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert Payment.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_an_explicit_utf8_charset_is_accepted(api):
    response = _raw(api, f'{{{JSON_BASE}}}', content_type="application/json; charset=UTF-8")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("query", ["status=caf\u00e9", "limit=%EF%BC%91", "payment=%ff",
                                   "status=%C0%80", "created_gte=2026-03-01%00"])
def test_query_parameters_are_printable_ascii(api, query):
    response = api.client.get(f"/api/v1/payments?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("length", [300, 2000])
def test_an_overlong_object_id_is_404_even_with_an_idempotency_key(api, length):
    from core.models import IdempotencyKey

    response = api.client.post(f"/api/v1/payments/pay_{'x' * length}/capture", data=b"{}",
                               content_type="application/json", HTTP_IDEMPOTENCY_KEY="long-id")
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "resource_missing"
    assert IdempotencyKey.objects.count() == 0
