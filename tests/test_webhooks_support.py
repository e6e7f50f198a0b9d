"""Shared fixtures for the webhook tests, registered for the whole suite by tests/conftest.py;
the guards apply where a module asks for them (`pytestmark = GUARDED`, the webhook modules).

Two guards make the SSRF promise testable: `network_guard` patches socket connect so
that any connection outside 127.0.0.0/8 and ::1 fails loudly (and fails the test even if the
code under test swallowed the error), and `dns` answers host names from a table, so no test
ever asks a real resolver. A test may route one public (address, port) to a local receiver
with `network_guard.route(...)` to play "the internet" without leaving the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from webhooks import services
from webhooks.receiver import Receiver

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# The webhook modules' marks: a database, no connection off loopback, a table for DNS, and the
# loopback receivers allowed as endpoints.
GUARDED = [pytest.mark.django_db, pytest.mark.usefixtures("network_guard", "dns",
                                                           "loopback_allowed")]


class NetworkGuard:
    def __init__(self) -> None:
        self.violations: list[Any] = []
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}
        self.connected: list[tuple[str, int]] = []

    def route(self, public: tuple[str, int], local: tuple[str, int]) -> None:
        self.routes[public] = local

    def check(self, sock: socket.socket, address: Any) -> Any:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return address
        host, port = address[0], address[1]
        self.connected.append((host, port))
        if (host, port) in self.routes:
            return self.routes[(host, port)]
        ip = ipaddress.ip_address(host.split("%")[0])
        if (ip.version == 4 and ip in _LOOPBACK) or ip == ipaddress.ip_address("::1"):
            return address
        self.violations.append(address)
        raise AssertionError(f"a test tried to open a connection to {address!r}")


@pytest.fixture(name="network_guard")
def network_guard_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    guard = NetworkGuard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    monkeypatch.setattr(socket.socket, "connect",
                        lambda sock, address: real_connect(sock, guard.check(sock, address)))
    monkeypatch.setattr(socket.socket, "connect_ex",
                        lambda sock, address: real_connect_ex(sock, guard.check(sock, address)))
    yield guard
    assert not guard.violations, f"connections outside loopback were attempted: {guard.violations}"


class FakeDns:
    """Host name → addresses; every lookup is counted. Unknown names do not resolve."""

    def __init__(self) -> None:
        self.names: dict[str, list[str] | Callable[[], list[str]]] = {}
        self.lookups: list[str] = []

    def answer(self, name: str, *addresses: str) -> None:
        self.names[name] = list(addresses)

    def answer_in_turn(self, name: str, *answers: list[str]) -> None:
        """A different answer per lookup (the last one repeats): DNS rebinding."""
        queue = list(answers)
        self.names[name] = lambda: queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture(name="dns")
def dns_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list:
        name = host.decode() if isinstance(host, bytes) else host
        if name in fake.names:
            fake.lookups.append(name)
            entry = fake.names[name]
            addresses = entry() if callable(entry) else entry
            infos = []
            for address in addresses:
                fam = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if fam == socket.AF_INET6 else (address, port)
                infos.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return infos
        # Numeric hosts only: a name missing from the table must never reach a real resolver.
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


@pytest.fixture(name="loopback_allowed")
def loopback_allowed_fixture(settings: Any) -> None:
    """What tests and the demo use: plain http to 127.0.0.1 receivers."""
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    settings.WEBHOOKS_REQUIRE_HTTPS = False


@pytest.fixture(name="receivers")
def receivers_fixture() -> Iterator[Callable[..., Receiver]]:
    """`receivers(secrets=[…], replies=[500, 200])` starts a receiver, stopped after the test."""
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def subscribe(merchant: Any, receiver: Receiver, events: list[str] | None = None
              ) -> services.IssuedEndpoint:
    """An endpoint for `receiver`, whose receiver then verifies with the endpoint's secret."""
    issued = services.endpoint_create(merchant=merchant, url=receiver.url,
                                      enabled_events=events or ["*"])
    receiver.secrets.append(issued.secret)
    return issued
