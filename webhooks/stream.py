"""The event stream: every Event (the outbox, the one source of truth) published in order to a
broker by one relay per broker (Redis Streams, NATS JetStream; Kafka for production).

Two steps, both driven by the relay (`manage.py events_relay --sink …`):

1. The sequencer gives each committed event its stream position `seq` (1, 2, 3… with no gaps)
   and its number among its object's events `object_seq`, under one advisory lock, in the
   order the events were inserted (`insert_order`, filled by the database). It only ever sees
   committed events, so positions follow commit order: an event committed late (a long
   transaction) gets a late position instead of being skipped by a cursor that moved past it.
   Events of one object are written under that object's row lock, one transaction after the
   other, so they are sequenced in the order they happened.
2. Each relay reads the events after its cursor (`EventRelayCursor`, one row per sink) in
   `seq` order, publishes them in that order, and advances its cursor only after the broker
   acknowledged them. A relay killed in between publishes the batch again when it restarts:
   delivery is at least once, and consumers drop repeats by event id (JetStream already drops
   them within its duplicate window: the event id is the `Nats-Msg-Id`).

Every message carries `id` (the event id, the de-duplication key), `seq`, `object_id`,
`object_seq` (a consumer that sees `object_seq` ≤ the last it applied for that object has a
repeat) and the event as the API and webhooks render it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from webhooks.models import Event, EventRelayCursor
from webhooks.payloads import event_to_dict

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
PUBLISH_TIMEOUT_SECONDS = 5.0
SINKS = ("redis", "nats", "kafka")
_EVENT = Event._meta.db_table
_SEQUENCER_LOCK = zlib.crc32(b"clearhouse.events.sequencer")
# Numbers the events not yet sequenced (committed ones only: this statement's snapshot), in
# insertion order, after the highest position given so far; each object's numbering continues
# from its latest sequenced event (index event_object_seq).
_SEQUENCE_SQL = f"""
    WITH pending AS (
        SELECT id, object_id, insert_order FROM {_EVENT}
        WHERE seq IS NULL ORDER BY insert_order LIMIT %(limit)s
    ), base AS (
        SELECT coalesce((SELECT seq FROM {_EVENT} WHERE seq IS NOT NULL
                         ORDER BY seq DESC LIMIT 1), 0) AS seq
    ), numbered AS (
        SELECT p.id,
               base.seq + row_number() OVER (ORDER BY p.insert_order) AS seq,
               coalesce((SELECT e.object_seq FROM {_EVENT} e
                         WHERE e.object_id = p.object_id AND e.object_seq IS NOT NULL
                         ORDER BY e.object_seq DESC LIMIT 1), 0)
                 + row_number() OVER (PARTITION BY p.object_id ORDER BY p.insert_order)
                 AS object_seq
        FROM pending p CROSS JOIN base
    )
    UPDATE {_EVENT} e SET seq = n.seq, object_seq = n.object_seq
    FROM numbered n WHERE e.id = n.id"""  # noqa: S608


@dataclass(frozen=True)
class StreamMessage:
    """One event as a broker receives it."""

    event_id: str
    seq: int
    object_type: str
    object_id: str
    object_seq: int
    type: str
    body: bytes  # JSON: the fields above plus the event as the API renders it

    def headers(self) -> dict[str, str]:
        return {"event_id": self.event_id, "seq": str(self.seq), "object_id": self.object_id,
                "object_seq": str(self.object_seq), "type": self.type}


class Sink(Protocol):
    """A broker the relay publishes to. `publish` returns only once the broker has stored and
    acknowledged every message, in the given order; it raises on any failure (the relay then
    keeps its cursor and publishes the whole batch again)."""

    name: str

    def publish(self, messages: Sequence[StreamMessage]) -> None: ...

    def close(self) -> None: ...


class SinkError(RuntimeError):
    """The broker did not acknowledge a batch."""


# -- the sequencer and the cursor -------------------------------------------------------------
def sequence(*, limit: int = BATCH_SIZE * 4) -> int:
    """Give stream positions to up to `limit` committed events that have none; how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SEQUENCER_LOCK])
        cursor.execute(_SEQUENCE_SQL, {"limit": limit})
        return cursor.rowcount


def cursor_position(name: str) -> int:
    return EventRelayCursor.objects.get_or_create(name=name)[0].position


def cursor_advance(name: str, position: int) -> None:
    """Record that the broker acknowledged everything up to `position` (never moves back)."""
    EventRelayCursor.objects.filter(name=name).update(position=Greatest(F("position"), position))


def _message(event: Event) -> StreamMessage:
    body = {"id": event.id, "seq": event.seq, "object_type": event.object_type,
            "object_id": event.object_id, "object_seq": event.object_seq,
            "merchant": event.merchant_id, "event": event_to_dict(event)}
    return StreamMessage(event_id=event.id, seq=event.seq, object_type=event.object_type,
                         object_id=event.object_id, object_seq=event.object_seq, type=event.type,
                         body=json.dumps(body, separators=(",", ":")).encode())


def messages_after(position: int, *, limit: int = BATCH_SIZE) -> list[StreamMessage]:
    """The sequenced events after `position`, in stream order."""
    events = Event.objects.filter(seq__gt=position).order_by("seq")[:limit]
    return [_message(event) for event in events]


def relay_once(sink: Sink, *, batch_size: int = BATCH_SIZE) -> int:
    """Sequence, then publish one batch after the sink's cursor and advance the cursor once
    the broker acknowledged it. Returns how many events were published."""
    sequence(limit=batch_size * 4)
    messages = messages_after(cursor_position(sink.name), limit=batch_size)
    if not messages:
        return 0
    sink.publish(messages)
    # Nothing between the broker's acknowledgement and this line may be skipped: a relay that
    # dies here publishes the batch again (the consumers' de-duplication absorbs it).
    cursor_advance(sink.name, messages[-1].seq)
    return len(messages)


def _holds_relay_lock(name: str, held_on: list[object]) -> bool:
    """Take (once per database connection) the session lock that makes this the only relay
    publishing `name`'s cursor; a second relay started by mistake waits instead."""
    connection.ensure_connection()
    if held_on and held_on[0] is connection.connection:
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)",
                       [zlib.crc32(f"clearhouse.events.relay.{name}".encode())])
        acquired = bool(cursor.fetchone()[0])
    held_on[:] = [connection.connection] if acquired else []
    return acquired


def relay_run(sink: Sink, *, batch_size: int = BATCH_SIZE, poll_interval: float = 0.5,
              should_stop: Callable[[], bool] = lambda: False) -> int:
    """Relay until `should_stop()`: full batches back to back, a pause of `poll_interval` when
    caught up, a growing pause (at most 30 s) while the broker or the database fails."""
    published, failures, held_on = 0, 0, []
    while not should_stop():
        try:
            if not _holds_relay_lock(sink.name, held_on):
                logger.warning("events relay %s: another relay holds its lock; waiting",
                               sink.name)
                time.sleep(max(poll_interval, 1.0))  # waiting for the other relay to stop
                continue
            count = relay_once(sink, batch_size=batch_size)
            published, failures = published + count, 0
        except Exception:
            failures += 1
            logger.exception("events relay %s: batch not published (failure %d in a row); "
                             "the cursor stays, the batch will be sent again", sink.name,
                             failures)
            held_on.clear()
            time.sleep(min(30.0, poll_interval * 2 ** failures))  # backing off a failing broker
            continue
        if count < batch_size:
            time.sleep(poll_interval)  # caught up: poll the outbox again shortly
    return published


# -- sinks --------------------------------------------------------------------------------------
class RedisStreamSink:
    """Redis Streams: one XADD per event into one stream, a batch in one MULTI/EXEC (stored
    whole or not at all, in order). Entry ids are Redis's own; `seq` is a field."""

    name = "redis"

    def __init__(self, url: str, *, stream: str = "clearhouse:events",
                 maxlen: int | None = None) -> None:
        import redis

        self.stream = stream
        self.maxlen = maxlen
        self._client = redis.Redis.from_url(url, socket_timeout=PUBLISH_TIMEOUT_SECONDS,
                                            socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS)

    def publish(self, messages: Sequence[StreamMessage]) -> None:
        pipe = self._client.pipeline(transaction=True)
        for message in messages:
            pipe.xadd(self.stream, {**message.headers(), "body": message.body},
                      maxlen=self.maxlen, approximate=True)
        pipe.execute()  # raises on any refused command; MULTI/EXEC stores all or nothing

    def close(self) -> None:
        self._client.close()


class NatsJetStreamSink:
    """NATS JetStream: one stream (created if missing) on subjects `<prefix>.<event type>`,
    each event published with `Nats-Msg-Id: <event id>` and awaited before the next, so the
    stream stores them in order and drops a repeat within its duplicate window."""

    name = "nats"

    def __init__(self, url: str, *, stream: str = "CLEARHOUSE_EVENTS",
                 subject_prefix: str = "clearhouse.events",
                 duplicate_window_seconds: float = 600.0) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.duplicate_window_seconds = duplicate_window_seconds
        self._loop = asyncio.new_event_loop()
        self._nc: Any = None
        self._js: Any = None

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    async def _connect(self) -> None:
        import nats
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        self._nc = await nats.connect(self.url, connect_timeout=PUBLISH_TIMEOUT_SECONDS,
                                      allow_reconnect=False, max_reconnect_attempts=0)
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT_SECONDS)
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            await self._js.add_stream(StreamConfig(
                name=self.stream, subjects=[f"{self.subject_prefix}.>"],
                duplicate_window=self.duplicate_window_seconds))

    async def _publish(self, messages: Sequence[StreamMessage]) -> None:
        if self._nc is None or self._nc.is_closed:
            await self._connect()
        for message in messages:
            await self._js.publish(f"{self.subject_prefix}.{message.type}", message.body,
                                   timeout=PUBLISH_TIMEOUT_SECONDS,
                                   headers={"Nats-Msg-Id": message.event_id,
                                            "Clearhouse-Seq": str(message.seq),
                                            "Clearhouse-Object-Id": message.object_id,
                                            "Clearhouse-Object-Seq": str(message.object_seq)})

    def publish(self, messages: Sequence[StreamMessage]) -> None:
        try:
            self._run(self._publish(messages))
        except Exception:
            self._reset()
            raise

    def _reset(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                self._run(nc.close())
            except Exception:  # already broken; a fresh connection comes with the next batch
                logger.debug("closing a failed NATS connection", exc_info=True)

    def close(self) -> None:
        self._reset()
        self._loop.close()


class KafkaSink:
    """Kafka (production): one topic, each event keyed by its object id so one object's events
    share a partition and keep their order; an idempotent producer (`enable.idempotence`,
    `acks=all`) so broker retries neither reorder nor repeat. Needs `confluent-kafka`, which
    is imported only when this sink is built (not installed here, nor exercised against a
    broker by the suite)."""

    name = "kafka"

    def __init__(self, bootstrap_servers: str, *, topic: str = "clearhouse.events",
                 config: dict[str, Any] | None = None) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:
            raise SinkError("the Kafka sink needs the confluent-kafka package: "
                            "`uv add confluent-kafka` in the image that runs the relay") from exc
        self.topic = topic
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all",
            "max.in.flight.requests.per.connection": 5, "linger.ms": 5,
            "message.timeout.ms": int(PUBLISH_TIMEOUT_SECONDS * 6000), **(config or {})})

    def publish(self, messages: Sequence[StreamMessage]) -> None:
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for message in messages:
            self._producer.produce(self.topic, key=message.object_id.encode(),
                                   value=message.body, on_delivery=delivered,
                                   headers=[(k, v.encode()) for k, v in message.headers().items()])
            self._producer.poll(0)
        left = self._producer.flush(PUBLISH_TIMEOUT_SECONDS * 6)
        if left or failures:
            raise SinkError(f"Kafka did not acknowledge {left or len(failures)} event(s): "
                            f"{failures[:3]}")

    def close(self) -> None:
        self._producer.flush(PUBLISH_TIMEOUT_SECONDS)


def sink_from_settings(name: str) -> Sink:
    """The sink `name` (redis | nats | kafka) configured by the EVENT_STREAM_* settings."""
    if name == "redis":
        url = settings.EVENT_STREAM_REDIS_URL
        if not url:
            raise SinkError("EVENT_STREAM_REDIS_URL (or REDIS_URL) is not set")
        return RedisStreamSink(url, stream=settings.EVENT_STREAM_REDIS_KEY,
                               maxlen=settings.EVENT_STREAM_REDIS_MAXLEN)
    if name == "nats":
        return NatsJetStreamSink(settings.EVENT_STREAM_NATS_URL,
                                 stream=settings.EVENT_STREAM_NATS_STREAM,
                                 subject_prefix=settings.EVENT_STREAM_NATS_SUBJECT_PREFIX)
    if name == "kafka":
        if not settings.EVENT_STREAM_KAFKA_BOOTSTRAP_SERVERS:
            raise SinkError("EVENT_STREAM_KAFKA_BOOTSTRAP_SERVERS is not set")
        return KafkaSink(settings.EVENT_STREAM_KAFKA_BOOTSTRAP_SERVERS,
                         topic=settings.EVENT_STREAM_KAFKA_TOPIC,
                         config=settings.EVENT_STREAM_KAFKA_CONFIG)
    raise SinkError(f"unknown event sink {name!r}; choose one of {', '.join(SINKS)}")
