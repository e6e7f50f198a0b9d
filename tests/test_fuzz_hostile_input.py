"""Every /api/v1/ route and method, fed hostile input with a valid API key: never a 5xx, every 4xx
in the contract's error body, and a refused request changes no row. Routes come from the URL
resolver, fields and query parameters from the OpenAPI schema, so new endpoints are covered."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.idempotency import NOT_STORED_STATUSES
from payments import services as payment_services

PAN = "4242424242424242"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ERROR_KEYS = {"type", "code", "message", "param", "request_id", "doc_url"}
ERROR_TYPES = {"invalid_request_error", "authentication_error", "idempotency_error",
               "state_error", "provider_error", "rate_limit_error", "api_error"}
# Every app that owns rows a request could create.
OWNING_APPS = ("core", "payments", "wallet", "webhooks", "ledger", "providers", "reconciliation")
_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class Route:
    pattern: str  # "api/v1/payments/<str:payment_id>"
    methods: tuple[str, ...]  # those the view implements
    params: tuple[str, ...]

    def __str__(self) -> str:
        return self.pattern

    def path(self, values: dict[str, str]) -> str:
        return "/" + _PARAM.sub(lambda match: values[match.group("name")], self.pattern)

    @property
    def openapi_path(self) -> str:
        return "/" + _PARAM.sub(lambda match: "{" + match.group("name") + "}", self.pattern)


def _walk(patterns: list, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def api_routes() -> list[Route]:
    routes = []
    for pattern, callback in _walk(get_resolver().url_patterns):
        if not pattern.startswith("api/v1/"):
            continue
        view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        methods = tuple(m for m in METHODS if view is not None and hasattr(view, m.lower()))
        routes.append(Route(pattern, methods,
                            tuple(m.group("name") for m in _PARAM.finditer(pattern))))
    return routes


ROUTES = api_routes()


@cache
def openapi() -> dict[str, Any]:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = {**_resolve(part), **merged}
        return merged
    return schema


def operation(route: Route, method: str) -> dict[str, Any]:
    return openapi()["paths"].get(route.openapi_path, {}).get(method.lower(), {})


def body_schema(route: Route, method: str) -> dict[str, Any]:
    content = operation(route, method).get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    return _resolve(schema) if schema else {"properties": {}, "required": []}


def query_names(route: Route, method: str) -> list[str]:
    documented = [p["name"] for p in operation(route, method).get("parameters", [])
                  if p.get("in") == "query"]  # $ref parameters are the shared headers
    return sorted({*documented, *COMMON_QUERY})


# A valid value per field name where a schema cannot say what "valid" means (a token, a route).
KNOWN_VALID = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
               "method": "pix", "destination": "ba_checking", "url": "http://127.0.0.1:9/hook",
               "enabled_events": ["*"], "reason": "requested_by_customer",
               "evidence": {"text": "delivered"}}


def valid_value(name: str, schema: dict[str, Any]) -> Any:
    if name in KNOWN_VALID:
        return KNOWN_VALID[name]
    schema = _resolve(schema)
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    return {"integer": 1, "boolean": True, "array": [], "object": {}}.get(
        schema.get("type", "string"), "x")


def valid_body(route: Route, method: str) -> dict[str, Any]:
    schema = body_schema(route, method)
    return {name: valid_value(name, prop) for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", [])}


# -- the battery ---------------------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


RAW_BODIES: list[tuple[str, bytes, str]] = [
    ("depth_10000", _nested(10_000).encode(), "application/json"),
    ("depth_8000_objects", ('{"a":' * 2700 + "1" + "}" * 2700).encode(), "application/json"),
    ("depth_5000", _nested(5000).encode(), "application/json"),
    ("depth_33", ('{"metadata": ' + _nested(33) + "}").encode(), "application/json"),
    ("huge_int", b'{"amount": 1' + b"0" * 400 + b"}", "application/json"),
    ("huge_int_4301", b'{"amount": ' + b"9" * 4301 + b"}", "application/json"),
    ("huge_float", b'{"amount": 1e400}', "application/json"),
    ("neg_huge_float", b'{"amount": -1e400}', "application/json"),
    ("nan", b'{"amount": NaN}', "application/json"),
    ("infinity", b'{"amount": Infinity}', "application/json"),
    ("nul_value", b'{"description": "a\\u0000b"}', "application/json"),
    ("nul_key", b'{"a\\u0000": 1}', "application/json"),
    ("raw_nul", b'{"description": "a\x00b"}', "application/json"),
    ("lone_high_surrogate", b'{"description": "\\ud800"}', "application/json"),
    ("lone_low_surrogate_key", b'{"\\udfff": "x"}', "application/json"),
    ("duplicate_keys", b'{"amount": 1, "amount": 2}', "application/json"),
    ("duplicate_nested", b'{"metadata": {"a": "1", "a": "2"}}', "application/json"),
    ("invalid_utf8", b'{"description": "\xff\xfe"}', "application/json"),
    ("overlong_utf8", b'{"description": "\xc0\xaf"}', "application/json"),
    ("utf8_surrogate_bytes", b'{"description": "\xed\xa0\x80"}', "application/json"),
    ("bom", b'\xef\xbb\xbf{}', "application/json"),
    ("utf16", '{"amount": 1}'.encode("utf-16"), "application/json"),
    ("array", b"[]", "application/json"),
    ("array_of_object", b'[{"amount": 1000}]', "application/json"),
    ("string", b'"x"', "application/json"),
    ("number", b"1", "application/json"),
    ("null", b"null", "application/json"),
    ("true", b"true", "application/json"),
    ("whitespace", b"   ", "application/json"),
    ("two_documents", b"{}{}", "application/json"),
    ("truncated", b'{"amount": ', "application/json"),
    ("unterminated_string", b'{"a": "' + b'\\"' * 4000, "application/json"),
    ("escaped_pan", b'{"description": "\\u0034242424242424242"}', "application/json"),
    ("pan_key", b'{"metadata": {"4242 4242 4242 4242": "x"}}', "application/json"),
    ("pan_number", b'{"metadata": {"n": 4242424242424242}}', "application/json"),
    ("too_large", b'{"description": "' + b"x" * 17_000 + b'"}', "application/json"),
    ("long_string", b'{"description": "' + "é".encode() * 7000 + b'"}', "application/json"),
    ("form", b"amount=1000&currency=usd", "application/x-www-form-urlencoded"),
    ("multipart", b"--b\r\n\r\nx\r\n--b--", "multipart/form-data; boundary=b"),
    ("text_plain_json", b'{"amount": 1000}', "text/plain"),
    ("xml", b"<amount>1000</amount>", "application/xml"),
    ("bogus_charset", b'{"amount": 1000}', "application/json; charset=bogus"),
    ("latin1_charset", b'{"amount": 1000}', "application/json; charset=latin-1"),
    ("no_content_type", b'{"amount": 1000}', ""),
    ("json_suffix", b'{"amount": 1000}', "application/vnd.api+json"),
]

# Values that survive the JSON parser and must be refused (or accepted) by each field.
FIELD_VALUES: list[Any] = [
    "١٠", "²", "１０", "10", "10.5", "", " ", "\u202e", "\U0001f600" * 10, "x" * 3000,
    "pay_١", "pm_card_visa\n", "' OR 1=1 --", 0, -1, 10.5, 1e308, 2**63 - 1, -(2**63),
    10**19 - 1, 100_000_000_000, True, None, [], [1, 2], {}, {"a": {"b": {"c": "d"}}},
    json.loads(_nested(30)), ["*"] * 200, {f"k{i}": "v" for i in range(50)},
]

# Already URL-encoded where they contain "%".
QUERY_VALUES: list[str] = [
    "١٠", "²", "１０", "0", "-1", "101", "1e1", "+5", "1" * 5000, "", "%00", "%ED%A0%80",
    "%ff", "%C0%80", "%E2%80%AE", "pay_١٢", "x" * 3000, "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59", "2026-13-45", "٢٠٢٦-٠٣-٠١T00:00:00Z", "1e400", "[]", PAN,
    "4242%204242%204242%204242", "%34242424242424242",
]
# The query parameters every list takes, fuzzed on every route (ignored where not read).
COMMON_QUERY = ("limit", "starting_after", "ending_before", "created_gte")

PATH_VALUES: list[str] = [
    "pay_١٢", "x" * 2000, "%00", "%ED%A0%80", "%ff", "é", "%E2%80%AE", "..", "' OR 1=1 --",
    PAN, "4242-4242-4242-4242", "1" * 500,
]


# -- assertions ----------------------------------------------------------------------------
@cache
def _counted_tables() -> tuple[str, ...]:
    tables = {model._meta.db_table for model in apps.get_models()
              if model._meta.app_label in OWNING_APPS and model._meta.managed}
    return tuple(sorted(tables))


def row_counts() -> tuple[int, ...]:
    # One row with a column per table: UNION ALL has no order (a parallel append on the
    # machine's PostgreSQL returned the counts shuffled, which read as "rows changed").
    sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{t}")' for t in _counted_tables())
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchone())


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    counts: tuple[int, ...] | None = None  # the rows after the last request


def check(api: Any, tally: Tally, method: str, path: str, *, body: bytes = b"",
          content_type: str = "application/json", label: str = "") -> None:
    before = tally.counts if tally.counts is not None else row_counts()
    tally.counts = None
    extra = {"HTTP_IDEMPOTENCY_KEY": f"fuzz-{tally.requests}"} if method == "POST" else {}
    tally.requests += 1
    try:
        # A savepoint per request, as each request has its own transaction in production: a
        # database error is reported as the 5xx it causes, not as every later request's failure.
        with transaction.atomic():
            response = api.client.generic(method, path, data=body, content_type=content_type,
                                          **extra)
    except Exception as exc:
        tally.failures.append(f"{method} {path[:120]} [{label}] raised {exc!r}"[:400])
        return
    status = response.status_code
    tally.statuses[status] = tally.statuses.get(status, 0) + 1
    where = f"{method} {path[:120]} [{label}] -> {status}"
    if status >= 500:
        tally.failures.append(f"{where}: {response.content[:300]!r}")
        return
    if "Request-Id" not in response:
        tally.failures.append(f"{where}: no Request-Id header")
    if status < 400 or method == "HEAD":
        return
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        tally.failures.append(f"{where}: not the contract's error body: {response.content[:200]!r}")
        return
    if set(error) != ERROR_KEYS or error["type"] not in ERROR_TYPES or not error["message"] \
            or error["request_id"] != response.get("Request-Id"):
        tally.failures.append(f"{where}: malformed error body {error!r}"[:400])
    if PAN in response.content.decode("utf-8", errors="replace"):
        tally.failures.append(f"{where}: the card number came back in the response")
    # A refused request changes nothing. 409 is stored for replay under its Idempotency-Key
    # (contract: Idempotency), so only the statuses that are never stored are checkable here.
    if status in NOT_STORED_STATUSES:
        tally.counts = row_counts()
        if tally.counts != before:
            changed = [f"{table} {was}→{now}" for table, was, now in zip(
                _counted_tables(), before or (), tally.counts, strict=False) if was != now]
            tally.failures.append(f"{where}: a refused request changed rows: {changed}")


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def quiet(settings, monkeypatch):
    """No rate limits (thousands of requests on one key) and no DNS: a fuzzed webhook URL is
    refused as unresolvable instead of waiting on a resolver."""
    settings.RATE_LIMIT_ENABLED = False
    settings.WEBHOOKS_ALLOW_LOOPBACK = True

    from webhooks import ssrf

    def no_dns(host: str, port: int) -> list[Any]:
        raise ssrf.UnsafeUrl(f"The host {host!r} could not be resolved.",
                             code="url_unresolvable")

    monkeypatch.setattr(ssrf, "resolve", no_dns)


@pytest.fixture
def objects(api, merchant, make_payment, quiet) -> dict[str, str]:
    """One real object of every kind, so hostile input reaches past the lookups."""
    from ledger.models import Posting  # noqa: F401  (the ledger app must be importable)
    from webhooks.models import Event

    captured = make_payment(state="captured")
    disputed = make_payment(state="captured")
    refund = payment_services.refund_create(merchant=merchant, payment_id=captured.id, amount=100)
    dispute = payment_services.dispute_open(payment_id=disputed.id, amount=200)
    deposit = api.post("/deposits", {"amount": 50_000, "currency": "usd", "method": "pix"},
                       key="fuzz-deposit").json()
    payout = api.post("/payouts", {"amount": 1000, "currency": "usd",
                                   "destination": "ba_checking"}, key="fuzz-payout").json()
    endpoint = api.post("/webhook_endpoints", {"url": "http://127.0.0.1:9/hook",
                                               "enabled_events": ["*"]}, key="fuzz-we").json()
    posting = api.get("/balance_transactions").json()["data"][0]["id"]
    event = Event.objects.filter(merchant=merchant).order_by("created_at").first()
    found = {"payment_id": captured.id, "refund_id": refund.id, "dispute_id": dispute.id,
             "deposit_id": deposit["id"], "payout_id": payout["id"],
             "endpoint_id": endpoint["id"], "posting_id": posting, "event_id": event.id}
    assert all(found.values()), found
    return found


def _values_for(route: Route, objects: dict[str, str]) -> dict[str, str]:
    return {name: objects.get(name, "x") for name in route.params}


def _report(tally: Tally, started: float, route: Route) -> None:
    seconds = time.monotonic() - started
    print(f"\n{route}: {tally.requests} requests in {seconds:.1f}s, statuses {tally.statuses}")
    assert not tally.failures, "\n".join(tally.failures[:40])


# -- the tests -----------------------------------------------------------------------------
def test_the_routes_cover_the_documented_api():
    documented = {path for path in openapi()["paths"] if path.startswith("/api/v1/")}
    assert {route.openapi_path for route in ROUTES} >= documented
    assert len(ROUTES) >= 20


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_hostile_input_never_answers_5xx(api, objects, route):
    started, tally = time.monotonic(), Tally()
    values = _values_for(route, objects)
    path = route.path(values)
    implemented = [m for m in route.methods if m not in ("HEAD", "OPTIONS")]
    # Every method, with no body and with an empty object.
    for method in METHODS:
        check(api, tally, method, path, label="no body")
        check(api, tally, method, path, body=b"{}", label="empty object")
    # Every implemented method with every hostile body (the guard sees every method alike).
    for method in implemented:
        for label, body, content_type in RAW_BODIES:
            check(api, tally, method, path, body=body, content_type=content_type, label=label)
    # Each documented field, set to each hostile value in an otherwise valid body.
    for method in implemented:
        base = valid_body(route, method)
        for name in body_schema(route, method).get("properties", {}):
            for value in FIELD_VALUES:
                body = json.dumps({**base, name: value}).encode()
                check(api, tally, method, path, body=body, label=f"{name}={value!r}"[:60])
    # Each query parameter (documented, and the common list ones) with each hostile value.
    method = implemented[0]
    for name in query_names(route, method):
        for value in QUERY_VALUES:
            encoded = value if "%" in value else quote(value, safe="")
            check(api, tally, method, f"{path}?{name}={encoded}", label=name)
    check(api, tally, method, f"{path}?limit=1&limit=%C2%B2&limit=", label="repeated")
    check(api, tally, method, f"{path}?%ff=1&%00=2&{PAN}=3", label="hostile names")
    # Each path parameter replaced by hostile text.
    for name in route.params:
        for value in PATH_VALUES:
            for method in implemented:
                check(api, tally, method, route.path({**values, name: value}), body=b"{}",
                      label=f"path {name}")
    _report(tally, started, route)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)


HYPOTHESIS_EXAMPLES = 20  # per route; two requests each


def _random_requests(route: Route, path: str, tally: Tally, api: Any) -> None:
    methods = [m for m in route.methods if m not in ("HEAD", "OPTIONS")] or ["GET"]
    fields = sorted({name for method in methods
                     for name in body_schema(route, method).get("properties", {})})
    keys = st.sampled_from(fields) | st.text(max_size=10) if fields else st.text(max_size=10)
    bodies = st.one_of(
        json_values,
        st.dictionaries(keys, json_values, max_size=len(fields) + 1),
        st.builds(lambda method, extra: {**valid_body(route, method), **extra},
                  st.sampled_from(methods), st.dictionaries(keys, json_values, max_size=2)),
    )
    queries = st.dictionaries(st.sampled_from(query_names(route, "GET")) | st.text(max_size=8),
                              st.text(max_size=30) | st.integers().map(str), max_size=3)

    @given(method=st.sampled_from(methods), body=bodies, query=queries,
           raw=st.binary(max_size=40))
    @settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(method: str, body: Any, query: dict[str, str], raw: bytes) -> None:
        text = json.dumps(body, allow_nan=True).encode()
        encoded = "&".join(f"{quote(k, safe='', errors='surrogatepass')}="
                           f"{quote(v, safe='', errors='surrogatepass')}"
                           for k, v in query.items())
        check(api, tally, method, f"{path}?{encoded}" if encoded else path, body=text,
              label=f"hypothesis {text[:80]!r}")
        check(api, tally, method, path, body=raw, label=f"hypothesis raw {raw!r}")

    run()


@pytest.mark.django_db
def test_random_json_and_query_strings_never_answer_5xx(api, objects):
    """Hypothesis-generated JSON values (NaN and infinities included), object keys drawn from
    each route's documented fields, random bytes and random query strings, on every route."""
    started, tally = time.monotonic(), Tally()
    for route in ROUTES:
        _random_requests(route, route.path(_values_for(route, objects)), tally, api)
    seconds = time.monotonic() - started
    print(f"\nhypothesis: {tally.requests} requests over {len(ROUTES)} routes in {seconds:.1f}s, "
          f"statuses {tally.statuses}")
    assert not tally.failures, "\n".join(tally.failures[:40])


@pytest.mark.django_db
def test_provider_webhooks_answer_hostile_bodies_without_a_5xx(settings):
    """The guard also reads provider webhooks (card numbers only; their format is the
    provider's): hostile bodies there are refused or rejected unsigned, never a 5xx."""
    from rest_framework.test import APIClient

    failures = []
    for code in (*sorted(settings.PROVIDERS), "nope"):
        for label, body, content_type in RAW_BODIES:
            response = APIClient().generic("POST", f"/webhooks/providers/{code}/", data=body,
                                           content_type=content_type)
            if response.status_code >= 500 or "error" not in response.json():
                failures.append(f"{code} [{label}] -> {response.status_code}")
    assert not failures, failures
