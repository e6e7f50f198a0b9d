"""The provider simulator over real HTTP on 127.0.0.1: wire formats, idempotency, faults,
seeded reproducibility, outbound webhooks, settlement files, payouts and deposits."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers.simulator.__main__ import config_from_environment
from providers.simulator.control import (
    ControlClient,
    RunningSimulator,
    WebhookRecorder,
    running_simulator,
)
from providers.simulator.engine import DEFAULTS
from providers.simulator.getnet import request_signature

CIELO = DEFAULTS["cielo"]["credentials"]
REDE = DEFAULTS["rede"]["credentials"]
GETNET = DEFAULTS["getnet"]["credentials"]
CIELO_AUTH = {"MerchantId": CIELO["merchant_id"], "MerchantKey": CIELO["merchant_key"]}
REDE_AUTH = {"Authorization": "Basic " + base64.b64encode(
    f"{REDE['pv']}:{REDE['token']}".encode()).decode()}


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSimulator]:
    with running_simulator(seed="tests") as simulator:
        yield simulator


@pytest.fixture
def sim(running: RunningSimulator) -> RunningSimulator:
    running.control.reset(seed="tests")
    return running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def cielo_sale(http: httpx.Client, sim: RunningSimulator, key: str, *,
               method: str = "pm_card_visa", amount: int = 1050, order: str = "order-1",
               capture: bool = True, timeout: float = 5) -> httpx.Response:
    return http.post(f"{sim.base_url}/cielo/1/sales/", headers={**CIELO_AUTH, "RequestId": key},
                     json={"MerchantOrderId": order, "Payment": {
                         "Type": "CreditCard", "Amount": amount, "Currency": "BRL",
                         "Capture": capture, "CreditCard": {"CardToken": method}}},
                     timeout=timeout)


def getnet_request(http: httpx.Client, sim: RunningSimulator, method: str, path: str,
                   body: Any = None, *, key: str = "", signing_secret: str = "",
                   timestamp: str = "") -> httpx.Response:
    token = http.post(f"{sim.base_url}/getnet/auth/oauth/v2/token",
                      content=b"grant_type=client_credentials",
                      auth=(GETNET["client_id"], GETNET["client_secret"])).json()["access_token"]
    content = b"" if body is None else json.dumps(body).encode()
    url = httpx.URL(f"{sim.base_url}/getnet{path}")
    timestamp = timestamp or str(int(time.time()))
    signature = request_signature(signing_secret or GETNET["signing_secret"], timestamp, method,
                                  url.raw_path.decode(), content)
    headers = {"Authorization": f"Bearer {token}", "X-Getnet-Timestamp": timestamp,
               "X-Getnet-Signature": signature, "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return http.request(method, url, content=content, headers=headers)


def test_simulator_package_does_not_import_django() -> None:
    code = ("import sys, providers.simulator.__main__; "
            "sys.exit(1 if any(m == 'django' or m.startswith(('django.', 'payments', 'ledger')) "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_health_and_unknown_paths(sim: RunningSimulator, http: httpx.Client) -> None:
    assert http.get(f"{sim.base_url}/_control/health").json()["providers"] == [
        "cielo", "rede", "getnet"]
    assert http.get(f"{sim.base_url}/stripe/v1/charges").status_code == 404
    assert http.get(f"{sim.base_url}/cielo/2/whatever", headers=CIELO_AUTH).status_code == 404


def test_each_provider_rejects_bad_credentials_in_its_own_format(
        sim: RunningSimulator, http: httpx.Client) -> None:
    cielo = http.post(f"{sim.base_url}/cielo/1/sales/",
                      headers={"MerchantId": CIELO["merchant_id"], "MerchantKey": "wrong"},
                      json={})
    rede = http.post(f"{sim.base_url}/rede/v1/transactions", auth=(REDE["pv"], "wrong"), json={})
    getnet = http.post(f"{sim.base_url}/getnet/v1/payments/credit",
                       headers={"Authorization": "Bearer nope"}, json={})
    assert (cielo.status_code, cielo.json()[0]["Code"]) == (401, 132)
    assert (rede.status_code, rede.json()["returnCode"]) == (401, "401")
    assert (getnet.status_code, getnet.json()["error"]) == (401, "invalid_token")
    assert sim.control.charges() == []


def test_cielo_speaks_integer_cents_and_answers_a_decline_with_201_status_3(
        sim: RunningSimulator, http: httpx.Client) -> None:
    approved = cielo_sale(http, sim, "k-approve", capture=False)
    declined = cielo_sale(http, sim, "k-decline", method="pm_card_insufficient_funds",
                          order="order-2")
    assert approved.status_code == 201
    assert approved.json()["Payment"] | {"Amount": 1050, "Status": 1, "ReturnCode": "4"} == (
        approved.json()["Payment"])
    assert declined.status_code == 201
    assert (declined.json()["Payment"]["Status"], declined.json()["Payment"]["ReturnCode"]) == (
        3, "51")


@pytest.mark.parametrize(("currency", "amount", "minor"), [
    ("BRL", "10.50", 1050), ("JPY", "1050", 1050), ("KWD", "1.050", 1050)])
def test_rede_amounts_are_decimal_strings_with_the_currency_exponent(
        sim: RunningSimulator, http: httpx.Client, currency: str, amount: str, minor: int
        ) -> None:
    response = http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
        "capture": True, "kind": "credit", "reference": f"o-{currency}", "amount": amount,
        "currency": currency, "cardToken": "pm_card_visa"})
    assert response.status_code == 200
    assert (response.json()["returnCode"], response.json()["amount"]) == ("00", amount)
    assert sim.control.charges("rede")[0]["amount"] == minor


def test_rede_rejects_a_float_or_wrongly_scaled_amount(sim: RunningSimulator,
                                                       http: httpx.Client) -> None:
    for amount in (10.5, "10.5", "10.500"):
        response = http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
            "capture": True, "reference": "o", "amount": amount, "currency": "BRL",
            "cardToken": "pm_card_visa"})
        assert (response.status_code, response.json()["returnCode"]) == (400, "37")
    assert sim.control.charges() == []


def test_rede_declines_with_402_and_its_own_return_code(sim: RunningSimulator,
                                                       http: httpx.Client) -> None:
    response = http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
        "capture": True, "reference": "o", "amount": "10.50", "currency": "BRL",
        "cardToken": "pm_card_do_not_honor"})
    assert (response.status_code, response.json()["returnCode"]) == (402, "105")


def test_getnet_needs_a_bearer_token_and_a_fresh_hmac_signature(
        sim: RunningSimulator, http: httpx.Client) -> None:
    body = {"seller_id": GETNET["seller_id"],
            "amount": {"value": 105, "scale": 1, "currency": "BRL"},
            "order": {"order_id": "o-g"},
            "credit": {"delayed": True, "number_token": "pm_card_visa"}}
    forged = getnet_request(http, sim, "POST", "/v1/payments/credit", body,
                            signing_secret="not-the-secret")
    stale = getnet_request(http, sim, "POST", "/v1/payments/credit", body,
                           timestamp=str(int(time.time()) - 301))
    good = getnet_request(http, sim, "POST", "/v1/payments/credit", body, key="g-1")
    assert (forged.status_code, forged.json()["error"]) == (401, "invalid_signature")
    assert (stale.status_code, stale.json()["error"]) == (401, "invalid_signature")
    assert good.status_code == 200
    assert good.json()["status"] == "AUTHORIZED"
    assert good.json()["amount"] == {"value": 1050, "scale": 2, "currency": "BRL"}
    assert [c["amount"] for c in sim.control.charges("getnet")] == [1050]


def test_same_idempotency_key_replays_the_first_answer_and_charges_once(
        sim: RunningSimulator, http: httpx.Client) -> None:
    first = cielo_sale(http, sim, "same-key")
    second = cielo_sale(http, sim, "same-key")
    assert second.content == first.content
    assert second.headers["X-Simulator-Replayed"] == "true"
    assert len(sim.control.charges()) == 1


def test_same_key_with_a_different_body_is_refused_and_charges_nothing_new(
        sim: RunningSimulator, http: httpx.Client) -> None:
    cielo_sale(http, sim, "key-1", amount=1000)
    other = cielo_sale(http, sim, "key-1", amount=2000)
    assert (other.status_code, other.json()[0]["Code"]) == (409, 901)
    assert [c["amount"] for c in sim.control.charges()] == [1000]


def test_concurrent_requests_with_one_key_charge_once(sim: RunningSimulator) -> None:
    sim.control.configure("cielo", latency_ms=100)
    bodies: list[bytes] = []

    def send() -> None:
        with httpx.Client(timeout=5) as client:
            bodies.append(cielo_sale(client, sim, "racing-key").content)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(bodies)) == 1
    assert len(sim.control.charges()) == 1


def test_503_charges_nothing_and_is_not_stored_so_the_same_key_may_retry(
        sim: RunningSimulator, http: httpx.Client) -> None:
    sim.control.configure("cielo", unavailable_rate=1.0)
    refused = cielo_sale(http, sim, "retry-me")
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1")
    assert sim.control.charges() == []
    sim.control.configure("cielo", unavailable_rate=0.0)
    assert cielo_sale(http, sim, "retry-me").status_code == 201
    assert len(sim.control.charges()) == 1


def test_unavailable_token_always_answers_503_before_charging(sim: RunningSimulator,
                                                              http: httpx.Client) -> None:
    assert cielo_sale(http, sim, "u-1", method="pm_card_unavailable").status_code == 503
    assert sim.control.charges() == []


def test_drop_charges_then_resets_the_connection_and_a_retry_learns_the_truth(
        sim: RunningSimulator, http: httpx.Client) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        cielo_sale(http, sim, "drop-key", method="pm_card_drop")
    [charge] = sim.control.charges()
    assert (charge["status"], charge["order_id"]) == ("captured", "order-1")
    replay = cielo_sale(http, sim, "drop-key", method="pm_card_drop")
    assert replay.json()["Payment"]["PaymentId"] == charge["reference"]
    assert len(sim.control.charges()) == 1


def test_timeout_charges_and_holds_the_answer_past_the_client_read_timeout(
        sim: RunningSimulator, http: httpx.Client) -> None:
    sim.control.configure("cielo", timeout_ms=1500)
    with pytest.raises(httpx.ReadTimeout):
        cielo_sale(http, sim, "slow", method="pm_card_timeout", timeout=0.3)
    assert [c["status"] for c in sim.control.charges()] == ["captured"]


def test_server_error_after_charging_answers_500(sim: RunningSimulator,
                                                 http: httpx.Client) -> None:
    sim.control.configure("cielo", server_error_rate=1.0)
    assert cielo_sale(http, sim, "boom").status_code == 500
    assert len(sim.control.charges()) == 1


def test_latency_spikes_slow_the_answer(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.control.configure("cielo", spike_rate=1.0, spike_ms=150)
    started = time.monotonic()
    cielo_sale(http, sim, "spiky")
    assert time.monotonic() - started >= 0.15


def test_a_seed_makes_the_fault_dice_reproducible(sim: RunningSimulator,
                                                  http: httpx.Client) -> None:
    def run(seed: str) -> list[int]:
        sim.control.reset(seed=seed)
        sim.control.configure("cielo", decline_rate=0.5)
        return [cielo_sale(http, sim, f"k{i}", order=f"o{i}").json()["Payment"]["Status"]
                for i in range(24)]

    first, again, other = run("alpha"), run("alpha"), run("beta")
    assert first == again
    assert first != other
    assert {1, 2, 3} & set(first) == {2, 3}  # both approvals and declines happened


def test_config_rejects_unknown_keys_and_out_of_range_rates(sim: RunningSimulator,
                                                            http: httpx.Client) -> None:
    url = f"{sim.base_url}/_control/cielo/config"
    assert http.post(url, json={"decline_rat": 0.5}).status_code == 400
    assert http.post(url, json={"decline_rate": 1.5}).status_code == 400
    assert http.post(url, json={"webhook_url": "file:///etc/passwd"}).status_code == 400
    assert http.post(url, json={"decline_rate": 0.25}).json()["decline_rate"] == 0.25


def test_the_ledger_reports_an_order_charged_twice(sim: RunningSimulator,
                                                   http: httpx.Client) -> None:
    cielo_sale(http, sim, "first-key", order="order-x")
    assert sim.control.double_charged() == []
    cielo_sale(http, sim, "second-key", order="order-x")
    assert sim.control.double_charged() == ["cielo:order-x"]


# -- webhooks ----------------------------------------------------------------------------------
@pytest.fixture
def recorder() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as recording:
        yield recording


def test_each_provider_signs_its_webhooks_with_its_own_headers(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    for provider in ("cielo", "rede", "getnet"):
        sim.control.configure(provider, webhook_url=f"{recorder.url}/{provider}/")
    cielo_sale(http, sim, "c-1")
    http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
        "capture": True, "reference": "r-1", "amount": "10.50", "currency": "BRL",
        "cardToken": "pm_card_visa"})
    getnet_request(http, sim, "POST", "/v1/payments/credit", {
        "seller_id": GETNET["seller_id"], "amount": {"value": 1050, "scale": 2, "currency": "BRL"},
        "order": {"order_id": "g-1"}, "credit": {"delayed": False, "number_token": "pm_card_visa"}},
        key="g-1")
    by_path = {w.path: w for w in recorder.wait_count(3)}
    assert {"Cielo-Event-Timestamp", "Cielo-Signature"} <= set(by_path["/cielo/"].headers)
    assert by_path["/cielo/"].json()["ChangeType"] == "PaymentCaptured"
    assert {"X-Rede-Timestamp", "X-Rede-Signature"} <= set(by_path["/rede/"].headers)
    assert by_path["/rede/"].json()["event"] == "transaction.captured"
    assert by_path["/getnet/"].headers["X-Getnet-Webhook-Signature"].startswith("t=")
    assert by_path["/getnet/"].json()["event_type"] == "PAYMENT_CONFIRMED"


def test_duplicated_webhooks_carry_the_same_event_id(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_duplicate_rate=1.0,
                          webhook_duplicates=4)
    cielo_sale(http, sim, "dup")
    received = recorder.wait_count(5)
    assert len({w.json()["NotificationId"] for w in received}) == 1


def test_dropped_webhooks_are_never_sent(sim: RunningSimulator, http: httpx.Client,
                                         recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_drop_rate=1.0)
    cielo_sale(http, sim, "quiet")
    [event] = sim.control.webhooks("cielo")
    assert (event["fate"], event["deliveries"]) == ("dropped", [])
    assert recorder.received == []


def test_reordered_webhooks_swap_adjacent_events(sim: RunningSimulator, http: httpx.Client,
                                                 recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_reorder_rate=1.0)
    sale = cielo_sale(http, sim, "auth", capture=False).json()["Payment"]["PaymentId"]
    http.put(f"{sim.base_url}/cielo/1/sales/{sale}/capture",
             headers={**CIELO_AUTH, "RequestId": "cap"})
    types = [w.json()["ChangeType"] for w in recorder.wait_count(2)]
    assert types == ["PaymentCaptured", "PaymentAuthorized"]


def test_a_held_webhook_is_released_when_nothing_overtakes_it(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_reorder_rate=1.0,
                          webhook_reorder_window_ms=50)
    cielo_sale(http, sim, "alone")
    recorder.wait_count(1)
    assert sim.control.webhooks("cielo")[0]["fate"] == "sent_late"


def test_delayed_webhooks_arrive_after_the_delay(sim: RunningSimulator, http: httpx.Client,
                                                 recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_delay_ms=300)
    started = time.monotonic()
    cielo_sale(http, sim, "later")
    recorder.wait_count(1)
    assert time.monotonic() - started >= 0.3


def test_a_failing_receiver_gets_retries(sim: RunningSimulator, http: httpx.Client,
                                         recorder: WebhookRecorder) -> None:
    recorder.status = 500
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_max_attempts=3,
                          webhook_retry_ms=10)
    cielo_sale(http, sim, "retry")
    received = recorder.wait_count(3)
    assert len({w.json()["NotificationId"] for w in received}) == 1


def test_webhook_events_can_be_filtered(sim: RunningSimulator, http: httpx.Client,
                                        recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, webhook_events=["refund.succeeded"])
    cielo_sale(http, sim, "filtered")
    assert sim.control.webhooks("cielo")[0]["fate"] == "filtered"


def test_a_dispute_opened_through_control_sends_a_webhook(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    sim.control.configure("rede", webhook_url=recorder.url)
    tid = http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
        "capture": True, "reference": "r-d", "amount": "10.50", "currency": "BRL",
        "cardToken": "pm_card_visa"}).json()["tid"]
    sim.control.open_dispute("rede", tid, amount=500)
    received = recorder.wait_count(2)
    dispute = received[-1].json()
    assert dispute["event"] == "chargeback.opened"
    assert dispute["data"]["chargeback"]["amount"] == "5.00"


# -- payouts and deposits ----------------------------------------------------------------------
def test_a_payout_completes_asynchronously_and_says_so_by_webhook(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    sim.control.configure("cielo", webhook_url=recorder.url, async_completion_ms=10)
    created = http.post(f"{sim.base_url}/cielo/1/payouts", headers={**CIELO_AUTH,
                                                                     "RequestId": "po-1"},
                        json={"MerchantPayoutId": "po_1", "Amount": 5000, "Currency": "BRL",
                              "Destination": "ba_123"})
    assert created.json()["Status"] == "Pending"
    [webhook] = recorder.wait_count(1)
    assert (webhook.json()["ChangeType"], webhook.json()["Status"]) == ("PayoutPaid", "Paid")
    payout_id = created.json()["PayoutId"]
    assert http.get(f"{sim.base_url}/cielo/1/payouts/{payout_id}",
                    headers=CIELO_AUTH).json()["Status"] == "Paid"


def test_a_payout_to_a_failing_destination_fails(sim: RunningSimulator, http: httpx.Client,
                                                 recorder: WebhookRecorder) -> None:
    sim.control.configure("rede", webhook_url=recorder.url, async_completion_ms=0)
    http.post(f"{sim.base_url}/rede/v1/payouts", headers=REDE_AUTH, json={
        "reference": "po_2", "amount": "50.00", "currency": "BRL", "bankAccount": "ba_fail"})
    [webhook] = recorder.wait_count(1)
    assert (webhook.json()["event"], webhook.json()["data"]["status"]) == (
        "payout.failed", "FAILED")


def test_a_deposit_waits_for_the_control_api_when_auto_completion_is_off(
        sim: RunningSimulator, http: httpx.Client, recorder: WebhookRecorder) -> None:
    sim.control.configure("getnet", webhook_url=recorder.url, async_completion_ms=None)
    created = getnet_request(http, sim, "POST", "/v1/deposits", {
        "seller_id": GETNET["seller_id"], "order_id": "dep_1", "method": "pix",
        "amount": {"value": 2500, "scale": 2, "currency": "BRL"}}, key="dep-1").json()
    assert created["status"] == "PENDING"
    assert recorder.received == []
    sim.control.complete("getnet", "deposit", created["deposit_id"])
    [webhook] = recorder.wait_count(1)
    assert webhook.json()["event_type"] == "DEPOSIT_CONFIRMED"
    assert webhook.json()["deposit"]["amount"] == {"value": 2500, "scale": 2, "currency": "BRL"}


# -- settlement files --------------------------------------------------------------------------
def _capture_and_refund_on_each_provider(sim: RunningSimulator, http: httpx.Client) -> None:
    cielo = cielo_sale(http, sim, "s-c", amount=10_000).json()["Payment"]["PaymentId"]
    http.put(f"{sim.base_url}/cielo/1/sales/{cielo}/void", params={"amount": 2500},
             headers={**CIELO_AUTH, "RequestId": "s-c-r"})
    tid = http.post(f"{sim.base_url}/rede/v1/transactions", headers=REDE_AUTH, json={
        "capture": True, "reference": "s-r", "amount": "100.00", "currency": "BRL",
        "cardToken": "pm_card_visa"}).json()["tid"]
    http.post(f"{sim.base_url}/rede/v1/transactions/{tid}/refunds", headers=REDE_AUTH,
              json={"amount": "25.00"})
    payment = getnet_request(http, sim, "POST", "/v1/payments/credit", {
        "seller_id": GETNET["seller_id"],
        "amount": {"value": 10_000, "scale": 2, "currency": "BRL"},
        "order": {"order_id": "s-g"}, "credit": {"delayed": False, "number_token": "pm_card_visa"}},
        key="s-g").json()["payment_id"]
    getnet_request(http, sim, "POST", f"/v1/payments/credit/{payment}/refund",
                   {"amount": {"value": 2500, "scale": 2, "currency": "BRL"}}, key="s-g-r")


def test_settlement_files_list_the_days_captures_and_refunds_with_fees_in_three_formats(
        sim: RunningSimulator, http: httpx.Client) -> None:
    sim.control.freeze_clock("2026-01-05T12:00:00+00:00")
    _capture_and_refund_on_each_provider(sim, http)

    cielo = http.get(f"{sim.base_url}/cielo/settlements/2026-01-05.csv", headers=CIELO_AUTH)
    assert cielo.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(cielo.text), delimiter=";"))
    assert [(r["Tipo"], r["ValorBruto"], r["Taxa"], r["ValorLiquido"], r["DataVenda"])
            for r in rows] == [("Venda", "10000", "239", "9761", "05/01/2026"),
                               ("Estorno", "-2500", "0", "-2500", "05/01/2026")]

    rede = http.get(f"{sim.base_url}/rede/settlements/2026-01-05.csv", headers=REDE_AUTH)
    rows = list(csv.DictReader(io.StringIO(rede.text)))
    assert [(r["type"], r["gross_amount"], r["mdr_amount"], r["net_amount"],
             r["settlement_date"]) for r in rows] == [
        ("sale", "100.00", "2.09", "97.91", "2026-01-06"),
        ("refund", "-25.00", "0.00", "-25.00", "2026-01-06")]

    getnet = getnet_request(http, sim, "GET", "/settlements/2026-01-05.csv")
    rows = list(csv.DictReader(io.StringIO(getnet.text)))
    assert [(r["TRANSACTION_TYPE"], r["AMOUNT_VALUE"], r["AMOUNT_SCALE"], r["FEE_VALUE"],
             r["NET_VALUE"]) for r in rows] == [("CAPTURE", "10000", "2", "250", "9750"),
                                                ("REFUND", "-2500", "2", "0", "-2500")]

    other_day = http.get(f"{sim.base_url}/_control/cielo/settlements/2026-01-06.csv")
    assert other_day.text.count("\n") == 1  # the header only


def test_cli_reads_the_same_environment_names_as_clearhouse() -> None:
    changes = config_from_environment(
        {"CIELO_MERCHANT_KEY": "k", "GETNET_WEBHOOK_SECRET": "s"},
        "http://127.0.0.1:8000/webhooks/providers")
    assert changes["cielo"]["credentials"] == {"merchant_key": "k"}
    assert changes["getnet"]["webhook_secret"] == "s"
    assert changes["rede"]["webhook_url"] == "http://127.0.0.1:8000/webhooks/providers/rede/"


def test_a_restarted_simulator_keeps_its_books_and_never_reissues_a_reference(
        tmp_path, http: httpx.Client) -> None:
    """`make run` restarts the simulator on its state file (issue 21): charges, idempotent
    answers and the id generators carry over, so no provider reference is handed out twice."""
    from providers.simulator.server import start_simulator, stop_simulator

    state = tmp_path / "books.pickle"
    references: list[str] = []
    first_answer = b""
    for run in range(2):
        server, base_url = start_simulator(seed="same-seed", state_file=state)
        try:
            running = RunningSimulator(server, base_url, ControlClient(base_url))
            if run == 1:
                replay = cielo_sale(http, running, "key-0", order="order-0")
                assert replay.content == first_answer  # what it answered, it still answers
                assert len(running.control.charges()) == 4
            for index in range(4 * run, 4 * run + 4):
                reply = cielo_sale(http, running, f"key-{index}", order=f"order-{index}")
                assert reply.status_code == 201, reply.text
                references.append(reply.json()["Payment"]["PaymentId"])
                if index == 0:
                    first_answer = reply.content
        finally:
            stop_simulator(server)
    assert len(set(references)) == 8, references
