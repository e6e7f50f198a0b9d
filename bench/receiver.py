"""Scenario 4's webhook receiver as its own process: `webhooks.receiver.Receiver` (stdlib
ThreadingHTTPServer, verifies every signature) driven by one-line commands on stdin.

It prints `{"port": N}` once listening, then answers each command with one JSON line:
`secret <whsec_…>` (verify with this secret from now on), `stats` (counts so far), `reset`.
A separate process, so that receiving never competes for the GIL with the senders it measures.
"""

from __future__ import annotations

import json
import sys

from webhooks import receiver as receiver_module
from webhooks.receiver import Receiver

# socketserver's default accept queue is 5 connections: plenty for tests, but 32 concurrent
# senders overflow it and the kernel resets connections. A load test needs a real backlog.
receiver_module._Server.request_queue_size = 256


def _stats(receiver: Receiver) -> dict[str, int]:
    with receiver._lock:  # the receiver's own lock: its threads append while we count
        received = list(receiver.received)
    counts: dict[str, int] = {}
    for item in received:
        counts[item.event_id] = counts.get(item.event_id, 0) + 1
    return {
        "received": len(received),
        "unique_events": len(counts),
        "duplicates": sum(n - 1 for n in counts.values()),
        "verified": sum(1 for item in received if item.verified),
        "unverified": sum(1 for item in received if item.verified is False),
    }


def main() -> None:
    receiver = Receiver().start()
    print(json.dumps({"port": receiver.port}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "secret":
            receiver.secrets = [argument]
            answer: dict[str, object] = {"ok": True}
        elif command == "stats":
            answer = _stats(receiver)
        elif command == "reset":
            with receiver._lock:
                receiver.received.clear()
            answer = {"ok": True}
        else:
            break
        print(json.dumps(answer), flush=True)
    receiver.stop()


if __name__ == "__main__":
    main()
