"""Outbound webhooks end to end against a real HTTP receiver on 127.0.0.1: outbox, signing,
retries with backoff, the sweeper, leases, rotation and draining a backlog."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from reconciliation import tasks as recon_tasks
from tests.factories import MerchantFactory
from tests.test_webhooks_support import GUARDED, subscribe
from tests.threads import run_threads
from webhooks import delivery, services, tasks
from webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    Event,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from webhooks.receiver import Reply
from webhooks.verify import parse_header, verify_signature

pytestmark = GUARDED

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _record(merchant, type: str = "payment.captured", object_id: str = "pay_test") -> Event:
    return services.event_record(merchant=merchant, type=type,
                                 obj={"id": object_id, "object": "payment", "amount": 1050})


def _sweep() -> int:
    return services.delivery_sweep(concurrency=1)


def test_successful_payment_sends_one_signed_delivery_per_subscribed_endpoint(
        merchant, make_payment, receivers):
    all_events, captured_only = receivers(), receivers()
    refunds_only, disabled, other_merchant = receivers(), receivers(), receivers()
    subscribe(merchant, all_events, ["*"])
    subscribe(merchant, captured_only, ["payment.captured"])
    subscribe(merchant, refunds_only, ["refund.created"])
    off = subscribe(merchant, disabled, ["*"])
    services.endpoint_update(merchant=merchant, endpoint_id=off.endpoint.id, disabled=True)
    subscribe(MerchantFactory(), other_merchant, ["*"])

    payment = make_payment(state="captured")
    _sweep()  # covers a conftest that does not run tasks inline; a no-op when it does

    captured = Event.objects.get(object_id=payment.id, type="payment.captured")
    deliveries = WebhookDelivery.objects.filter(event=captured)
    assert deliveries.count() == 2
    assert set(deliveries.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert [r.event_id for r in captured_only.received] == [captured.id]
    assert all_events.event_counts()[captured.id] == 1
    assert not refunds_only.received and not disabled.received and not other_merchant.received

    request = captured_only.received[0]
    body, header, secrets = request.body, request.headers["Clearhouse-Signature"], \
        captured_only.secrets
    assert request.verified is True
    assert json.loads(body) == {
        "id": captured.id, "object": "event", "type": "payment.captured",
        "api_version": merchant.api_version,
        "created": int(captured.created_at.timestamp()),
        "data": {"object": captured.data},
    }
    assert captured.data["status"] == "captured"
    assert request.headers["Clearhouse-Event-Id"] == captured.id
    assert request.headers["User-Agent"] == "Clearhouse-Webhooks/1.0"
    assert request.headers["Content-Type"] == "application/json"
    timestamp, signatures = parse_header(header)
    assert timestamp is not None and len(signatures) == 1

    assert verify_signature(body, header, secrets, now=timestamp)
    for index in (0, len(body) // 2, len(body) - 1):
        tampered = bytearray(body)
        tampered[index] ^= 0x01
        assert not verify_signature(bytes(tampered), header, secrets, now=timestamp)
    assert not verify_signature(body, header, ["whsec_wrong"], now=timestamp)
    assert not verify_signature(body, header, all_events.secrets, now=timestamp)
    assert not verify_signature(body, header, secrets, now=timestamp + 301)
    assert not verify_signature(body, header, secrets, now=timestamp - 301)
    assert verify_signature(body, header, secrets, now=timestamp + 300)


def test_500_three_times_then_200_is_delivered_on_the_fourth_attempt(merchant, receivers):
    rx = receivers(replies=[500, 500, Reply(status=500, body=b"x" * 5000), 200])
    issued = subscribe(merchant, rx, ["payment.captured"])
    with time_machine.travel(START, tick=False) as traveller:
        _record(merchant)
        row = WebhookDelivery.objects.get(endpoint=issued.endpoint)
        due_times = []
        for _ in range(4):
            assert _sweep() == 1
            assert _sweep() == 0  # nothing else is due until the backoff has passed
            row.refresh_from_db()
            if row.status == DeliveryStatus.DELIVERED:
                break
            due_times.append(row.next_attempt_at)
            traveller.move_to(row.next_attempt_at)

    assert row.status == DeliveryStatus.DELIVERED and row.attempt_count == 4
    attempts = list(WebhookDeliveryAttempt.objects.filter(delivery=row).order_by("number"))
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.status_code for a in attempts] == [500, 500, 500, 200]
    assert [a.is_success for a in attempts] == [False, False, False, True]
    assert all(a.latency_ms >= 0 for a in attempts)
    assert len(attempts[2].response_snippet) == 1024  # capped at 1 KiB
    gaps = [(b - a.started_at) for a, b in zip(attempts, due_times, strict=False)]
    assert timedelta(seconds=30) <= gaps[0] <= timedelta(seconds=60)
    assert gaps[0] < gaps[1] < gaps[2]  # exponential, even with jitter (equal jitter)
    assert {r.event_id for r in rx.received} == {row.event_id} and len(rx.received) == 4
    assert all(r.verified for r in rx.received)
    endpoint = WebhookEndpoint.objects.get(pk=issued.endpoint.pk)
    assert endpoint.failing_since is None  # the success ended the failure streak


def test_lost_enqueue_is_delivered_by_the_sweeper_exactly_once(
        merchant, receivers, monkeypatch, django_capture_on_commit_callbacks, caplog):
    rx = receivers()
    subscribe(merchant, rx)

    def broker_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.webhook_deliver, "delay", broker_down)
    with caplog.at_level(logging.ERROR, logger="webhooks.services"), \
            django_capture_on_commit_callbacks(execute=True):
        event = _record(merchant)
    assert "could not enqueue webhook delivery" in caplog.text
    assert rx.received == []  # committed, but no worker was told
    assert WebhookDelivery.objects.get(event=event).status == DeliveryStatus.PENDING

    assert _sweep() == 1
    assert _sweep() == 0
    call_command("webhooks_sweep", "--concurrency=1", stdout=open("/dev/null", "w"))  # noqa: SIM115
    recon_tasks.webhooks_sweep()  # beat's sweep task
    assert rx.event_counts() == {event.id: 1}
    assert WebhookDelivery.objects.get(event=event).status == DeliveryStatus.DELIVERED


def test_enqueue_after_commit_sends_through_the_task(
        merchant, receivers, monkeypatch, django_capture_on_commit_callbacks):
    rx = receivers()
    subscribe(merchant, rx)
    queued: list[str] = []
    monkeypatch.setattr(tasks.webhook_deliver, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        event = _record(merchant)
        assert queued == []  # nothing is enqueued before the commit
    assert queued == [WebhookDelivery.objects.get(event=event).pk]

    tasks.webhook_deliver(queued[0])
    tasks.webhook_deliver(queued[0])  # a redelivered message (acks_late) changes nothing
    assert rx.event_counts() == {event.id: 1}
    assert WebhookDeliveryAttempt.objects.filter(delivery_id=queued[0]).count() == 1


def test_rolled_back_change_leaves_no_event_and_no_delivery(merchant, receivers):
    subscribe(merchant, receivers())
    with pytest.raises(RuntimeError), transaction.atomic():
        _record(merchant)
        raise RuntimeError("the business change failed")
    assert not Event.objects.exists() and not WebhookDelivery.objects.exists()


def test_a_leased_row_is_not_sent_until_its_lease_expires(merchant, receivers):
    """A worker that claimed a row and died: nobody sends it during the lease, the sweeper
    does after it."""
    rx = receivers()
    subscribe(merchant, rx)
    with time_machine.travel(START, tick=False) as traveller:
        event = _record(merchant)
        row = WebhookDelivery.objects.get(event=event)
        WebhookDelivery.objects.filter(pk=row.pk).update(
            locked_until=timezone.now() + services.LEASE, attempt_count=1)
        assert services.delivery_execute(delivery_id=row.pk) is False
        assert _sweep() == 0
        traveller.shift(services.LEASE + timedelta(seconds=1))
        assert _sweep() == 1
    assert rx.event_counts() == {event.id: 1}
    assert WebhookDeliveryAttempt.objects.get(delivery=row).number == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_sweepers_never_send_a_row_twice(merchant, receivers):
    rx = receivers()
    subscribe(merchant, rx)
    with transaction.atomic():
        events = [_record(merchant, object_id=f"pay_{n}") for n in range(120)]
    _, errors = run_threads(3, lambda i: services.delivery_sweep(batch_size=5, concurrency=1))
    assert not errors
    assert rx.event_counts() == {event.id: 1 for event in events}
    assert WebhookDeliveryAttempt.objects.count() == 120


def test_secret_rotation_signs_with_both_during_the_overlap_then_only_the_new(
        merchant, receivers):
    rx = receivers()
    issued = subscribe(merchant, rx)
    old = issued.secret
    with time_machine.travel(START, tick=False) as traveller:
        new = services.endpoint_rotate_secret(merchant=merchant,
                                              endpoint_id=issued.endpoint.id).secret
        assert new != old and new.startswith("whsec_")
        _record(merchant, object_id="pay_during")
        _sweep()
        traveller.shift(timedelta(hours=24, seconds=1))
        _record(merchant, object_id="pay_after")
        _sweep()

    during, after = rx.received
    for request, expected_signatures in ((during, 2), (after, 1)):
        _, signatures = parse_header(request.headers["Clearhouse-Signature"])
        assert len(signatures) == expected_signatures
    header = during.headers["Clearhouse-Signature"]
    t = parse_header(header)[0]
    assert verify_signature(during.body, header, [old], now=t)
    assert verify_signature(during.body, header, [new], now=t)
    header = after.headers["Clearhouse-Signature"]
    t = parse_header(header)[0]
    assert not verify_signature(after.body, header, [old], now=t)
    assert verify_signature(after.body, header, [new], now=t)


def test_a_thousand_queued_events_drain_with_each_delivered_exactly_once(merchant, receivers,
                                                                         caplog):
    caplog.set_level(logging.WARNING, logger="httpx")  # one INFO line per request otherwise
    rx = receivers()
    subscribe(merchant, rx, ["payment.captured"])
    with transaction.atomic():
        events = [_record(merchant, object_id=f"pay_{n}") for n in range(1000)]
    sent = services.delivery_sweep(batch_size=100, concurrency=4)
    assert sent == 1000
    assert services.delivery_sweep() == 0
    assert rx.event_counts() == {event.id: 1 for event in events}
    assert all(r.verified for r in rx.received)
    assert not WebhookDelivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists()


@pytest.mark.parametrize("jitter", [None, 0.07], ids=["random", "last-try-inside-cool-down"])
def test_failing_for_three_days_fails_the_delivery_and_disables_the_endpoint(
        merchant, receivers, monkeypatch, jitter):
    """With jitter 0.07 the try before the last lands two minutes before the window's end, so
    the endpoint's circuit is still open at the end: the last try waits for it, then fails."""
    if jitter is not None:
        monkeypatch.setattr(services.random, "uniform", lambda low, high: low + jitter * high)
    rx = receivers(default=Reply(status=503))
    watcher = receivers()
    issued = subscribe(merchant, rx, ["payment.captured"])
    subscribe(merchant, watcher, ["webhook_endpoint.disabled"])
    with time_machine.travel(START, tick=False) as traveller:
        event = _record(merchant)
        row = WebhookDelivery.objects.get(event=event)
        for _ in range(60):
            _sweep()
            row.refresh_from_db()
            if row.status != DeliveryStatus.PENDING:
                break
            assert row.next_attempt_at <= row.created_at + timedelta(days=3)
            # The next try is due at next_attempt_at, and sent once the endpoint's circuit lets
            # it: the jitter can put the try before the window's end within the cool-down.
            circuit = WebhookEndpoint.objects.get(pk=issued.endpoint.pk).circuit_open_until
            last_due = row.next_attempt_at
            traveller.move_to(max(last_due, circuit or last_due))

    assert row.status == DeliveryStatus.FAILED
    attempts = list(row.attempts.order_by("number"))
    assert 10 <= len(attempts) == len(rx.received) <= 40
    # The last try is due at the window's end exactly, and made then or when the circuit let it.
    assert last_due == row.created_at + timedelta(days=3)
    assert attempts[-1].started_at == max(last_due, circuit or last_due)
    if jitter is not None:  # the case this parameter pins: the circuit held the last try
        assert attempts[-1].started_at > last_due
    endpoint = WebhookEndpoint.objects.get(pk=issued.endpoint.pk)
    assert endpoint.status == EndpointStatus.DISABLED
    assert "3 days" in endpoint.disabled_reason
    disabled = Event.objects.get(type="webhook_endpoint.disabled")
    assert disabled.object_id == endpoint.id and "secret" not in disabled.data
    assert [r.event_id for r in watcher.received] == [disabled.id]
    # A disabled endpoint gets nothing more.
    _record(merchant, object_id="pay_later")
    assert not WebhookDelivery.objects.filter(endpoint=endpoint, status="pending").exists()


def test_timeouts_and_refused_connections_are_logged_and_retried(merchant, receivers,
                                                                  monkeypatch):
    monkeypatch.setattr(delivery, "TIMEOUT", delivery.httpx.Timeout(0.3))
    silent = socket.create_server(("127.0.0.1", 0))  # accepts the TCP handshake, never answers
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens here any more: connection refused
    try:
        for url in (f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
                    f"http://127.0.0.1:{closed_port}/hook"):
            services.endpoint_create(merchant=merchant, url=url, enabled_events=["*"])
        _record(merchant)
        assert _sweep() == 2
    finally:
        silent.close()
    errors = sorted(WebhookDeliveryAttempt.objects.values_list("error", flat=True))
    assert errors[0].startswith("ConnectError")
    assert errors[1].startswith("timeout")
    for row in WebhookDelivery.objects.all():
        assert row.status == DeliveryStatus.PENDING and row.next_attempt_at > timezone.now()
        assert row.endpoint.failing_since is not None


def _deliver_to_a_public_name(merchant, dns, network_guard, receiver, url: str) -> None:
    """An endpoint at `url`, whose host resolves to a public address played by the local
    `receiver`; one event recorded and swept once."""
    parts = urlsplit(url)
    dns.answer(parts.hostname, "93.184.216.34")
    network_guard.route(("93.184.216.34", parts.port or 80), ("127.0.0.1", receiver.port))
    services.endpoint_create(merchant=merchant, url=url, enabled_events=["*"])
    _record(merchant)
    assert _sweep() == 1


def test_redirects_are_not_followed(merchant, receivers, settings, dns, network_guard):
    """A public host answering 302 to a loopback URL: one failed attempt, the target of the
    redirect is never contacted. The public address is played by a local receiver."""
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    sentinel = receivers()
    public = receivers(default=Reply(status=302, headers=(("Location", sentinel.url),)))
    _deliver_to_a_public_name(merchant, dns, network_guard, public,
                              "http://hooks.merchant.example/webhooks")

    assert len(public.received) == 1 and sentinel.received == []
    assert public.received[0].headers["Host"] == "hooks.merchant.example"
    attempt = WebhookDeliveryAttempt.objects.get()
    assert attempt.status_code == 302 and not attempt.is_success
    assert ("93.184.216.34", 80) in network_guard.connected


def test_delivery_connects_to_the_address_it_vetted_even_if_dns_changes(
        merchant, receivers, settings, dns, network_guard):
    """DNS rebinding: the name is resolved once per attempt, checked, and that address is the
    one connected to; a later answer of 127.0.0.1 never reaches the socket."""
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    public = receivers()
    dns.answer_in_turn("rebind.example", ["93.184.216.34"], ["93.184.216.34"], ["127.0.0.1"])
    network_guard.route(("93.184.216.34", 80), ("127.0.0.1", public.port))
    services.endpoint_create(merchant=merchant, url="http://rebind.example/hook",
                             enabled_events=["*"])  # lookup 1, at creation
    _record(merchant, object_id="pay_1")
    assert _sweep() == 1  # lookup 2: public, delivered
    assert dns.lookups == ["rebind.example", "rebind.example"]
    assert len(public.received) == 1
    assert public.received[0].headers["Host"] == "rebind.example"

    _record(merchant, object_id="pay_2")
    assert _sweep() == 1  # lookup 3: loopback now, refused before any connection
    attempt = WebhookDeliveryAttempt.objects.order_by("-id").first()
    assert attempt.status_code is None and "loopback" in attempt.error
    assert len(public.received) == 1
    assert network_guard.connected.count(("93.184.216.34", 80)) == 1


def test_deliveries_to_a_deleted_endpoint_are_not_sent(merchant, receivers):
    rx = receivers()
    issued = subscribe(merchant, rx)
    event = _record(merchant)
    services.endpoint_delete(merchant=merchant, endpoint_id=issued.endpoint.id)
    assert _sweep() == 0
    assert rx.received == []
    row = WebhookDelivery.objects.get(event=event)
    assert row.status == DeliveryStatus.FAILED and "disabled" in row.last_error


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@pytest.mark.parametrize(("cert_name", "delivered"), [("hooks.merchant.example", True),
                                                      ("someone-else.example", False)])
def test_https_connects_to_the_vetted_ip_but_verifies_the_certificate_for_the_host_name(
        merchant, receivers, settings, dns, network_guard, monkeypatch, tmp_path, cert_name,
        delivered):
    import ssl

    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    cert_file, key_file = _self_signed(tmp_path, cert_name)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    rx = receivers(tls=server_tls)
    monkeypatch.setattr(delivery, "_ssl_context",
                        lambda: ssl.create_default_context(cafile=cert_file))
    _deliver_to_a_public_name(merchant, dns, network_guard, rx,
                              "https://hooks.merchant.example:8443/hook")

    attempt = WebhookDeliveryAttempt.objects.get()
    if delivered:
        assert attempt.status_code == 200, attempt.error
        assert rx.received[0].headers["Host"] == "hooks.merchant.example:8443"
    else:
        assert attempt.status_code is None and "CERTIFICATE_VERIFY_FAILED" in attempt.error
        assert rx.received == []
