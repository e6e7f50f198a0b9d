"""Event relay throughput: events/s from the outbox to each broker vs. a raw publish loop.

    BENCH_DATABASE_NAME=clearhouse_stream_bench REDIS_URL=redis://127.0.0.1:6379/0 \
      NATS_URL=nats://127.0.0.1:4222 .venv/bin/python -m bench.event_stream [events]

Records `events` (default 10,000) events through event_record on a freshly created bench
database, then times, per broker that answers: the relay (`relay_once` batches of 500 until
caught up: sequencing, reading, publishing in order with acknowledgements, cursor) and the
baseline, the same messages published by the same sink with no database at all. Prints one
line per broker; docs/OPERATIONS.md quotes a run. Not part of `make bench` (it needs brokers).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

from bench import runtime

BATCH = 500


def _record(count: int) -> None:
    from django.db import transaction

    from tests.factories import MerchantFactory
    from webhooks.services import event_record

    merchant = MerchantFactory()
    for start in range(0, count, BATCH):
        with transaction.atomic():
            for n in range(start, min(count, start + BATCH)):
                event_record(merchant=merchant, type="payment.captured",
                             obj={"object": "payment", "id": f"pay_{n % (count // 3 or 1)}",
                                  "amount": 1000, "currency": "usd"})


def _measure(sink, count: int) -> tuple[float, float]:
    from webhooks import stream
    from webhooks.models import EventRelayCursor

    EventRelayCursor.objects.filter(name=sink.name).delete()
    began = time.perf_counter()
    published = 0
    while published < count:
        published += stream.relay_once(sink, batch_size=BATCH)
    relay = count / (time.perf_counter() - began)
    messages = stream.messages_after(0, limit=count)
    began = time.perf_counter()
    for start in range(0, count, BATCH):
        sink.publish(messages[start:start + BATCH])
    raw = count / (time.perf_counter() - began)
    return relay, raw


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    runtime.recreate_database(runtime.bench_database_name())
    runtime.django_setup()
    runtime.migrate()
    from webhooks import stream

    began = time.perf_counter()
    _record(count)
    print(f"recorded {count} events through event_record: "
          f"{count / (time.perf_counter() - began):,.0f} events/s")
    sinks = []
    if os.environ.get("REDIS_URL"):
        sinks.append(stream.RedisStreamSink(os.environ["REDIS_URL"],
                                            stream=f"bench:events:{uuid.uuid4().hex}"))
    if os.environ.get("NATS_URL"):
        name = f"BENCH_{uuid.uuid4().hex}"
        sinks.append(stream.NatsJetStreamSink(os.environ["NATS_URL"], stream=name,
                                              subject_prefix=f"bench.{name}",
                                              duplicate_window_seconds=1.0))
    for sink in sinks:
        relay, raw = _measure(sink, count)
        print(f"{sink.name}: relay {relay:,.0f} events/s, raw publish loop {raw:,.0f} events/s "
              f"(relay/raw {relay / raw:.2f})")
        if isinstance(sink, stream.RedisStreamSink):
            sink._client.delete(sink.stream)
        else:
            sink._run(sink._js.delete_stream(sink.stream))
        sink.close()


if __name__ == "__main__":
    main()
