"""A downstream consumer of Clearhouse's event stream (Redis Streams or NATS JetStream), as an
example: it applies each event once, by event id, and checks each object's events arrive in order.

    python tools/event_consumer.py redis --url redis://127.0.0.1:6379/0 --group billing
    python tools/event_consumer.py nats --url nats://127.0.0.1:4222 --durable billing

The relay publishes at least once: after a crash it sends its last batch again. A consumer
therefore remembers the ids it applied (here a SQLite file; in a real service, a table written
in the same transaction as the event's effect, so "applied" and "remembered" cannot diverge)
and skips an id it has seen. `object_seq` numbers each object's events 1, 2, 3…: an event
whose `object_seq` is at most the last one applied for its object is a repeat as well.
It needs only redis-py or nats-py, not Django.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any


class Deduplicator:
    """Event ids already applied, and the last `object_seq` applied per object."""

    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY)")
        self._db.execute("CREATE TABLE IF NOT EXISTS objects "
                         "(object_id TEXT PRIMARY KEY, object_seq INTEGER NOT NULL)")

    def apply_once(self, message: dict[str, Any], effect: Callable[[dict[str, Any]], None]
                   ) -> bool:
        """Run `effect(message)` unless this event was applied already; True when it ran.
        Raises OutOfOrder when an object's event arrives before one it follows."""
        with self._db:  # one SQLite transaction: the effect's record and the id together
            if self._db.execute("SELECT 1 FROM applied WHERE event_id = ?",
                                (message["id"],)).fetchone():
                return False
            row = self._db.execute("SELECT object_seq FROM objects WHERE object_id = ?",
                                   (message["object_id"],)).fetchone()
            last = row[0] if row else None
            if last is not None and message["object_seq"] <= last:
                return False  # an earlier repeat of something already applied
            # An object first seen mid-history (a consumer started late, a trimmed stream)
            # starts wherever it is; after that, each event must follow the one before.
            if last is not None and message["object_seq"] != last + 1:
                raise OutOfOrder(f"{message['object_id']}: event {message['object_seq']} "
                                 f"arrived after {last}")
            effect(message)
            self._db.execute("INSERT INTO applied (event_id) VALUES (?)", (message["id"],))
            self._db.execute("INSERT OR REPLACE INTO objects (object_id, object_seq) "
                             "VALUES (?, ?)", (message["object_id"], message["object_seq"]))
        return True


class OutOfOrder(RuntimeError):
    """An object's events came out of order: a bug in the producer, never to be skipped."""


def redis_messages(url: str, stream: str, *, group: str, consumer: str = "example",
                   block_ms: int = 1000, stop_when_idle: bool = False
                   ) -> Iterator[tuple[dict[str, Any], Callable[[], None]]]:
    """(message, ack) pairs from a Redis consumer group, oldest first; a message not acked
    (the consumer died) is read again from the group's pending list on the next start."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:  # BUSYGROUP: the group exists, resume it
        if "BUSYGROUP" not in str(exc):
            raise
    start = "0"  # first what this consumer read but never acked, then new entries (">")
    while True:
        batch = client.xreadgroup(group, consumer, {stream: start}, count=500, block=block_ms)
        entries = batch[0][1] if batch else []
        if not entries:
            if start == "0":
                start = ">"
                continue
            if stop_when_idle:
                return
            continue
        for entry_id, fields in entries:
            yield (json.loads(fields[b"body"]),
                   lambda entry_id=entry_id: client.xack(stream, group, entry_id))


def nats_messages(url: str, stream: str, *, durable: str, stop_when_idle: bool = False
                  ) -> Iterator[tuple[dict[str, Any], Callable[[], None]]]:
    """(message, ack) pairs from a durable JetStream pull consumer, in stream order."""
    import nats

    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(nats.connect(url))
    try:
        subscription = loop.run_until_complete(
            connection.jetstream().pull_subscribe("", durable=durable, stream=stream))
        while True:
            try:
                batch = loop.run_until_complete(subscription.fetch(500, timeout=1))
            except TimeoutError:  # nats.errors.TimeoutError, or asyncio's when part came
                if stop_when_idle:
                    return
                continue
            for message in batch:
                yield (json.loads(message.data),
                       lambda message=message: loop.run_until_complete(message.ack()))
    finally:
        loop.run_until_complete(connection.close())
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("broker", choices=["redis", "nats"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", help="Redis key or JetStream stream name")
    parser.add_argument("--group", "--durable", dest="group", default="example",
                        help="Redis consumer group or JetStream durable consumer")
    parser.add_argument("--state", default="event_consumer.sqlite3",
                        help="where the applied ids are remembered")
    args = parser.parse_args()
    if args.broker == "redis":
        messages = redis_messages(args.url, args.stream or "clearhouse:events", group=args.group)
    else:
        messages = nats_messages(args.url, args.stream or "CLEARHOUSE_EVENTS",
                                 durable=args.group)
    seen = Deduplicator(args.state)
    for message, ack in messages:
        applied = seen.apply_once(message, lambda m: print(m["seq"], m["event"]["type"],
                                                           m["object_id"], flush=True))
        if not applied:
            print("repeat skipped:", message["id"], flush=True)
        ack()  # after the effect and its record: a crash before this only repeats a message


if __name__ == "__main__":
    main()
