"""SSRF guard for merchant-supplied webhook URLs: only public addresses, vetted at delivery time.

A merchant controls the URL and its DNS, so they could point us at our own network (metadata
service, database, admin ports). `vet_url` parses the URL with the same parser that sends
(httpx), refuses numeric-encoded hosts outright, resolves the name, refuses the URL if ANY
address is not public, and returns the address to connect to. The sender connects to that exact
address (with the original Host header and TLS SNI), so a DNS answer that changes between the
check and the connect (rebinding) cannot move the request. Redirects are never followed.

`settings.WEBHOOKS_ALLOW_LOOPBACK` (default False) lets 127.0.0.0/8 and ::1 through, and nothing
else, for tests and the local demo. `settings.WEBHOOKS_REQUIRE_HTTPS` (default True) refuses
plain http.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
# IPv6 ranges that carry an IPv4 address inside them: a router or the kernel may deliver them to
# that IPv4 address, so they could smuggle 127.0.0.1 or 10/8 past a purely IPv6 check.
_EMBEDS_IPV4 = [
    ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("2002::/16"),  # 6to4
    ipaddress.ip_network("2001::/32"),  # Teredo
]
_V6_SPECIAL = {ipaddress.ip_address("::"), ipaddress.ip_address("::1")}  # inside ::/96
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")
# WHATWG URL "ends in a number": a last label like 1, 0x7f or 017 makes resolvers (inet_aton)
# read the whole host as an IPv4 address in decimal, hex or octal (2130706433, 127.1, …).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class UnsafeUrl(ValueError):
    """The URL may not be called. `code` is a stable machine-readable reason."""

    def __init__(self, message: str, *, code: str = "url_not_allowed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where to send: the parsed URL, and the vetted address to connect to instead of its host."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host name as written, without brackets
    port: int
    address: IPAddress

    @property
    def connect_url(self) -> httpx.URL:
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.url.port is None else f"{host}:{self.url.port}"

    @property
    def sni_hostname(self) -> str:
        return self.host.rstrip(".")


def _loopback_allowed() -> bool:
    return bool(getattr(settings, "WEBHOOKS_ALLOW_LOOPBACK", False))


def _https_required() -> bool:
    return bool(getattr(settings, "WEBHOOKS_REQUIRE_HTTPS", True))


def address_problem(address: IPAddress) -> str | None:
    """Why `address` may not be called, or None if it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "a scoped IPv6 address"
    if _loopback_allowed() and (address in _LOOPBACK_V4 or address == _LOOPBACK_V6):
        return None
    if (isinstance(address, ipaddress.IPv6Address) and address not in _V6_SPECIAL
            and any(address in net for net in _EMBEDS_IPV4)):
        return "an IPv6 address that embeds an IPv4 address (mapped, NAT64, 6to4, Teredo)"
    if address in _METADATA:
        return "a cloud metadata address"
    checks = [
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT,
         "a shared (CGNAT) address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "an address that is not publicly routable"),
    ]
    for failed, reason in checks:
        if failed:
            return reason
    return None


def check_address(address: IPAddress) -> None:
    problem = address_problem(address)
    if problem is not None:
        raise UnsafeUrl(f"The URL resolves to {problem} ({address}); webhook endpoints must be "
                        "reachable on the public internet.", code="url_not_public")


def parse_url(url: str) -> tuple[httpx.URL, str, int]:
    """Syntax and scheme checks: (parsed URL, ASCII host, port). No network."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"The URL must be 1–{MAX_URL_LENGTH} characters.", code="url_invalid")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UnsafeUrl("The URL may not contain spaces or control characters.",
                        code="url_invalid")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower()
        default_port = {"http": 80, "https": 443}.get(parsed.scheme, 0)
        port = parsed.port if parsed.port is not None else default_port
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise UnsafeUrl(f"The URL is not valid: {exc}.", code="url_invalid") from exc
    allowed_schemes = ("https",) if _https_required() else ("https", "http")
    if parsed.scheme not in allowed_schemes:
        raise UnsafeUrl(f"The URL must use {' or '.join(allowed_schemes)}.", code="url_invalid")
    if parsed.userinfo:
        # The URL is stored and shown in plain text; credentials would leak from both.
        raise UnsafeUrl("The URL may not contain a user name or password.", code="url_invalid")
    if parsed.fragment:
        raise UnsafeUrl("The URL may not contain a fragment (#…).", code="url_invalid")
    if not host:
        raise UnsafeUrl("The URL has no host.", code="url_invalid")
    if not 1 <= port <= 65535:
        raise UnsafeUrl("The URL's port must be from 1 to 65535.", code="url_invalid")
    return parsed, host, port


def literal_address(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal in canonical form; refuses numeric encodings."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.match(last_label):
        raise UnsafeUrl(f"The host {host!r} is a numeric-encoded IP address; use a host name.",
                        code="url_not_public")
    if not _HOSTNAME.match(host):
        raise UnsafeUrl(f"The host {host!r} is not a valid host name.", code="url_invalid")
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the OS resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(f"The host {host!r} could not be resolved.",
                        code="url_unresolvable") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if isinstance(address, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            address = ipaddress.ip_address(f"{sockaddr[0]}%{sockaddr[3]}")
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeUrl(f"The host {host!r} could not be resolved.", code="url_unresolvable")
    return addresses


def vet_url(url: str) -> Target:
    """Check `url` and resolve it now; raise UnsafeUrl, or return the address to connect to.

    Every resolved address must pass: a name with one public and one private record is
    refused, since which of them a client uses is up to the attacker's DNS."""
    parsed, host, port = parse_url(url)
    literal = literal_address(host)
    addresses = [literal] if literal is not None else resolve(host, port)
    for address in addresses:
        check_address(address)
    return Target(url=parsed, host=host, port=port, address=addresses[0])
