"""The event stream: every event of a 1,000-payment run reaches Redis Streams and NATS JetStream
exactly once per consumer after de-duplication, in order per object, across a relay killed
mid-batch; late commits are not skipped; relay lag is a metric; the Kafka sink's interface.

The brokers are the ones that answer at REDIS_URL and NATS_URL (CI sets both when the machine
runs them); without them these tests skip, saying so. Nothing here starts a broker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import types
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence

import pytest
from django.db import connection, transaction

from tests.factories import MerchantFactory
from tools.event_consumer import Deduplicator, nats_messages, redis_messages
from webhooks import selectors, stream
from webhooks.models import Event, EventRelayCursor
from webhooks.services import event_record

REDIS_URL = os.environ.get("REDIS_URL", "")
NATS_URL = os.environ.get("NATS_URL", "")
PAYMENTS = 1000
TYPES = ("payment.created", "payment.authorized", "payment.captured")


def _redis_answers() -> bool:
    import redis

    try:
        return bool(REDIS_URL) and bool(
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _nats_answers() -> bool:
    import nats

    async def probe() -> bool:
        client = await nats.connect(NATS_URL, connect_timeout=1, allow_reconnect=False,
                                    max_reconnect_attempts=0)
        try:
            await client.jetstream().account_info()  # JetStream enabled, not only core NATS
            return True
        finally:
            await client.close()

    try:
        return bool(NATS_URL) and asyncio.run(probe())
    except Exception:
        return False


needs_redis = pytest.mark.skipif(not _redis_answers(),
                                 reason="needs Redis: set REDIS_URL (CI does)")
needs_nats = pytest.mark.skipif(not _nats_answers(),
                                reason="needs NATS with JetStream: set NATS_URL (CI does when "
                                       "a server answers on 127.0.0.1:4222)")


@pytest.fixture
def redis_sink() -> Iterator[stream.RedisStreamSink]:
    sink = stream.RedisStreamSink(REDIS_URL, stream=f"test:events:{uuid.uuid4().hex}")
    yield sink
    sink._client.delete(sink.stream)
    sink.close()


@pytest.fixture
def nats_sink() -> Iterator[stream.NatsJetStreamSink]:
    name = f"TEST_EVENTS_{uuid.uuid4().hex}"
    sink = stream.NatsJetStreamSink(NATS_URL, stream=name, subject_prefix=f"test.{name}")
    yield sink
    if sink._js is not None:
        sink._run(sink._js.delete_stream(name))
    sink.close()


def _record_run(payments: int = PAYMENTS) -> dict[str, list[str]]:
    """Three events per payment through event_record, the objects' events interleaved across
    transactions as concurrent traffic would; {payment id: its event ids in order}."""
    merchant = MerchantFactory()
    ids = [f"pay_{uuid.uuid4().hex[:24]}" for _ in range(payments)]
    recorded: dict[str, list[str]] = defaultdict(list)
    for type_ in TYPES:
        for start in range(0, payments, 250):
            with transaction.atomic():
                for payment_id in ids[start:start + 250]:
                    obj = {"object": "payment", "id": payment_id, "status": type_.split(".")[1],
                           "amount": 1000, "currency": "usd"}
                    recorded[payment_id].append(
                        event_record(merchant=merchant, type=type_, obj=obj).id)
    return recorded


class _Killed(BaseException):
    """The relay's thread dies here, as a process would on SIGKILL: no except clause runs."""


class _DiesMidBatch:
    """Passes the first `after` messages of the batch numbered `batch` to the real broker, then
    kills the relay: the broker holds part of a batch whose cursor was never committed."""

    def __init__(self, sink: stream.Sink, *, batch: int, after: int) -> None:
        self.name, self._sink, self._batch, self._after = sink.name, sink, batch, after
        self._batches = 0

    def publish(self, messages: Sequence[stream.StreamMessage]) -> None:
        self._batches += 1
        if self._batches == self._batch:
            self._sink.publish(messages[:self._after])
            raise _Killed
        self._sink.publish(messages)

    def close(self) -> None:
        self._sink.close()


def _relay_in_thread(sink: stream.Sink, *, until_seq: int | None) -> BaseException | None:
    """Run relay_run in its own thread (its own database connection) until the cursor reaches
    `until_seq` or the thread dies; what killed it, if anything."""
    died: list[BaseException] = []

    def caught_up() -> bool:
        return until_seq is not None and stream.cursor_position(sink.name) >= until_seq

    def run() -> None:
        try:
            stream.relay_run(sink, batch_size=400, poll_interval=0.01, should_stop=caught_up)
        except BaseException as exc:
            died.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=600)
    assert not thread.is_alive(), "the relay did not finish"
    return died[0] if died else None


def _consume_and_check(messages, recorded: dict[str, list[str]]) -> int:
    """Apply every message once through the example consumer; check each payment's events
    arrived complete and in order. Returns how many messages the broker handed over."""
    seen, applied, delivered = Deduplicator(), defaultdict(list), 0
    for message, ack in messages:
        delivered += 1
        seen.apply_once(message, lambda m: applied[m["object_id"]].append(
            (m["object_seq"], m["id"])))
        ack()
    assert sum(len(events) for events in applied.values()) == 3 * PAYMENTS
    for payment_id, event_ids in recorded.items():
        assert applied[payment_id] == list(enumerate(event_ids, start=1)), payment_id
    return delivered


def _relay_killed_then_restarted(real_sink: stream.Sink) -> int:
    """A 1,000-payment run relayed by a relay killed in the middle of its third batch (250 of
    400 events at the broker, cursor not committed), then by a fresh one to the end."""
    killed = _relay_in_thread(_DiesMidBatch(real_sink, batch=3, after=250), until_seq=None)
    assert isinstance(killed, _Killed)
    assert stream.cursor_position(real_sink.name) == 800  # two batches acknowledged and kept
    last = Event.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert last == 3 * PAYMENTS
    assert _relay_in_thread(real_sink, until_seq=last) is None
    return last


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_every_event_reaches_redis_once_in_order_across_a_killed_relay(redis_sink):
    recorded = _record_run()
    _relay_killed_then_restarted(redis_sink)

    # The killed batch's first 250 events are in the stream twice; the consumer applies each once.
    assert redis_sink._client.xlen(redis_sink.stream) == 3 * PAYMENTS + 250
    delivered = _consume_and_check(
        redis_messages(REDIS_URL, redis_sink.stream, group="test", block_ms=100,
                       stop_when_idle=True), recorded)
    assert delivered == 3 * PAYMENTS + 250


@needs_nats
@pytest.mark.django_db(transaction=True)
def test_every_event_reaches_jetstream_once_in_order_across_a_killed_relay(nats_sink):
    recorded = _record_run()
    _relay_killed_then_restarted(nats_sink)

    # JetStream dropped the 250 repeats itself (Nats-Msg-Id within its duplicate window).
    info = nats_sink._run(nats_sink._js.stream_info(nats_sink.stream))
    assert info.state.messages == 3 * PAYMENTS
    delivered = _consume_and_check(
        nats_messages(NATS_URL, nats_sink.stream, durable="test", stop_when_idle=True),
        recorded)
    assert delivered == 3 * PAYMENTS


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.published: list[stream.StreamMessage] = []

    def publish(self, messages: Sequence[stream.StreamMessage]) -> None:
        self.published.extend(messages)

    def close(self) -> None:
        pass


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_late_is_published_not_skipped():
    """A transaction that recorded its event first but commits last: a cursor over insertion
    order would already have moved past it. Positions follow commit order instead."""
    merchant = MerchantFactory()
    recorded, commit_late = threading.Event(), threading.Event()

    def slow_transaction() -> None:
        try:
            with transaction.atomic():
                event_record(merchant=merchant, type="payment.created",
                             obj={"object": "payment", "id": "pay_slow"})
                recorded.set()
                commit_late.wait(timeout=60)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_transaction)
    thread.start()
    assert recorded.wait(timeout=60)
    event_record(merchant=merchant, type="payment.created",
                 obj={"object": "payment", "id": "pay_fast"})  # autocommit: commits first
    sink = _Recorder()
    assert stream.relay_once(sink) == 1
    commit_late.set()
    thread.join(timeout=60)
    assert stream.relay_once(sink) == 1
    assert [(m.object_id, m.seq) for m in sink.published] == [("pay_fast", 1), ("pay_slow", 2)]
    assert stream.relay_once(sink) == 0


@pytest.mark.django_db(transaction=True)
def test_object_sequence_continues_across_batches_and_lag_is_reported():
    merchant = MerchantFactory()
    for status in ("created", "authorized", "captured"):
        for payment_id in ("pay_a", "pay_b"):
            event_record(merchant=merchant, type=f"payment.{status}",
                         obj={"object": "payment", "id": payment_id})
    sink = _Recorder()
    stream.cursor_position(sink.name)  # the relay's row exists once it has started
    assert [row[:2] for row in selectors.event_relay_lags()] == [("recorder", 6)]
    while stream.relay_once(sink, batch_size=4):
        pass
    assert [(m.object_id, m.object_seq) for m in sink.published] == [
        ("pay_a", 1), ("pay_b", 1), ("pay_a", 2), ("pay_b", 2), ("pay_a", 3), ("pay_b", 3)]
    assert [m.seq for m in sink.published] == [1, 2, 3, 4, 5, 6]
    assert selectors.event_relay_lags() == [("recorder", 0, 0.0)]
    assert EventRelayCursor.objects.get(name="recorder").position == 6


@pytest.mark.django_db
def test_relay_lag_is_on_metrics(client, settings):
    settings.METRICS_TOKEN = ""
    merchant = MerchantFactory()
    event_record(merchant=merchant, type="payment.created", obj={"object": "payment", "id": "p"})
    stream.cursor_position("redis")
    body = client.get("/metrics").content.decode()
    assert 'clearhouse_event_relay_lag{measure="events",relay="redis"} 1.0' in body
    assert 'clearhouse_event_relay_lag{measure="seconds",relay="redis"}' in body


@pytest.mark.django_db
def test_a_failed_publish_keeps_the_cursor():
    class Refusing(_Recorder):
        def publish(self, messages: Sequence[stream.StreamMessage]) -> None:
            raise stream.SinkError("broker said no")

    event_record(merchant=MerchantFactory(), type="payment.created",
                 obj={"object": "payment", "id": "pay_x"})
    with pytest.raises(stream.SinkError):
        stream.relay_once(Refusing())
    assert stream.cursor_position("recorder") == 0
    sink = _Recorder()
    assert stream.relay_once(sink) == 1 and stream.cursor_position("recorder") == 1


def test_kafka_sink_keys_by_object_and_raises_on_unacknowledged(monkeypatch):
    """Interface only: no Kafka broker or client here. A stand-in confluent_kafka module shows
    what the sink asks of the producer and that a refused delivery is an error."""
    produced, configs, fail = [], [], []

    class Producer:
        def __init__(self, config):
            configs.append(config)
            self._callbacks = []

        def produce(self, topic, *, key, value, on_delivery, headers):
            produced.append((topic, key, headers))
            self._callbacks.append(on_delivery)

        def poll(self, timeout):
            return 0

        def flush(self, timeout):
            for callback in self._callbacks:
                callback("broker refused" if fail else None, None)
            self._callbacks = []
            return 0

    monkeypatch.setitem(sys.modules, "confluent_kafka", types.SimpleNamespace(Producer=Producer))
    sink = stream.KafkaSink("kafka:9092", topic="events", config={"client.id": "relay"})
    message = stream.StreamMessage(event_id="evt_1", seq=7, object_type="payment",
                                   object_id="pay_1", object_seq=2, type="payment.captured",
                                   body=b"{}")
    sink.publish([message])
    assert configs[0]["enable.idempotence"] is True and configs[0]["acks"] == "all"
    assert configs[0]["client.id"] == "relay"
    assert produced == [("events", b"pay_1", [
        ("event_id", b"evt_1"), ("seq", b"7"), ("object_id", b"pay_1"), ("object_seq", b"2"),
        ("type", b"payment.captured")])]
    fail.append(True)
    with pytest.raises(stream.SinkError, match="did not acknowledge"):
        sink.publish([message])


def test_kafka_sink_without_its_client_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(stream.SinkError, match="confluent-kafka"):
        stream.KafkaSink("kafka:9092")
