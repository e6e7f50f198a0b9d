"""The SSRF guard: the creation-time validator and the delivery-time address check refuse every
non-public destination. Names are answered by a resolver stub and socket connect fails loudly
outside loopback (tests/test_webhooks_support.py), so a broken guard cannot reach anything."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks import delivery, ssrf
from webhooks.models import WebhookEndpoint

REFUSED_URLS = [
    "http://127.0.0.1",
    "http://127.0.0.1:8000/hook",
    "http://[::1]",
    "http://[::1]:8080/",
    "http://10.0.0.1",
    "http://172.16.5.4",
    "http://192.168.1.1",
    "http://169.254.169.254",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]",
    "http://100.64.0.1",  # CGNAT
    "http://0.0.0.0",
    "http://[::]",
    "http://224.0.0.1",  # multicast
    "http://240.0.0.1",  # reserved
    "http://[fe80::1]",  # link-local
    "http://[fc00::1]",  # unique local
    "http://[::ffff:127.0.0.1]",  # IPv4-mapped
    "http://[::ffff:7f00:1]",
    "http://[::ffff:169.254.169.254]",
    "http://[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "http://[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "http://2130706433",  # 127.0.0.1 in decimal
    "http://0x7f000001",  # … in hex
    "http://017700000001",  # … in octal
    "http://0177.0.0.1",
    "http://127.1",
    "http://127.0.1",
    "http://0x7f.0x0.0x0.0x1",
    "http://3232235777",  # 192.168.1.1
    "http://localhost",  # resolves to loopback (stub below)
    "http://internal.example",  # resolves to a private address (stub below)
    "http://metadata.example",  # resolves to the metadata service (stub below)
    "http://split.example",  # one public and one private record (stub below)
    "http://mapped.example",  # an AAAA record that maps 127.0.0.1 (stub below)
]


pytestmark = pytest.mark.usefixtures("network_guard")


@pytest.fixture(autouse=True)
def guard_settings(settings, dns):
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    settings.WEBHOOKS_REQUIRE_HTTPS = False  # the scheme rule is tested on its own below
    dns.answer("localhost", "127.0.0.1", "::1")
    dns.answer("internal.example", "10.1.2.3")
    dns.answer("metadata.example", "169.254.169.254")
    dns.answer("split.example", "93.184.216.34", "192.168.0.10")
    dns.answer("mapped.example", "::ffff:127.0.0.1")
    dns.answer("public.example", "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_non_public_urls_are_refused_by_the_validator(url):
    with pytest.raises(ssrf.UnsafeUrl):
        ssrf.vet_url(url)


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_non_public_urls_are_refused_at_delivery_without_connecting(url, network_guard):
    result = delivery.send(delivery.Outgoing(
        delivery_id="wd_x", attempt_number=1, endpoint_id="we_x", url=url, event_id="evt_x",
        body=b"{}", secrets=("whsec_x",)))
    assert result.status_code is None and result.error.startswith("refused")
    assert network_guard.connected == []


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.255.254", "::1", "10.0.0.1", "172.31.255.255", "192.168.0.1",
    "169.254.169.254", "169.254.1.1", "fd00:ec2::254", "100.64.0.1", "100.127.255.254",
    "0.0.0.0", "::", "224.0.0.251",  # noqa: S104 "ff02::1", "240.0.0.1", "255.255.255.255", "fe80::1",
    "fc00::1", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "192.0.2.1", "198.18.0.1", "2001:db8::1",
    "64:ff9b::a00:1", "2002:a00:1::",
])
def test_address_check_refuses_every_non_public_address(address):
    assert ssrf.address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1",
                                     "2606:4700:4700::1111"])
def test_address_check_allows_public_addresses(address):
    assert ssrf.address_problem(ipaddress.ip_address(address)) is None


def test_public_names_and_addresses_are_allowed_and_pinned(dns):
    target = ssrf.vet_url("https://Public.Example:8443/hooks?x=1")
    assert target.address == ipaddress.ip_address("93.184.216.34")
    assert target.host_header == "public.example:8443"
    assert target.sni_hostname == "public.example"
    assert str(target.connect_url) == "https://93.184.216.34:8443/hooks?x=1"
    assert dns.lookups == ["public.example"]
    assert ssrf.vet_url("http://93.184.216.34/").address == ipaddress.ip_address("93.184.216.34")


def test_loopback_setting_allows_loopback_only(settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    assert ssrf.vet_url("http://127.0.0.1:9000/").address == ipaddress.ip_address("127.0.0.1")
    assert ssrf.vet_url("http://[::1]:9000/").address == ipaddress.ip_address("::1")
    assert ssrf.vet_url("http://localhost:9000/").address == ipaddress.ip_address("127.0.0.1")
    for url in ("http://10.0.0.1", "http://169.254.169.254", "http://[::ffff:127.0.0.1]",
                "http://2130706433", "http://127.1", "http://100.64.0.1"):
        with pytest.raises(ssrf.UnsafeUrl):
            ssrf.vet_url(url)


@pytest.mark.parametrize(("url", "code"), [
    ("ftp://public.example/", "url_invalid"),
    ("file:///etc/passwd", "url_invalid"),
    ("gopher://public.example/", "url_invalid"),
    ("http://user:pass@public.example/", "url_invalid"),
    ("http://public.example:0/", "url_invalid"),
    ("http://public.example:99999/", "url_invalid"),
    ("http://public.example/#frag", "url_invalid"),
    ("http:///nohost", "url_invalid"),
    ("http://public.example/a b", "url_invalid"),
    ("http://public.example/\r\nX: y", "url_invalid"),
    ("http://unknown.example/", "url_unresolvable"),
    ("http://" + "a" * 2100 + ".example/", "url_invalid"),
])
def test_malformed_urls_are_refused(url, code):
    with pytest.raises(ssrf.UnsafeUrl) as caught:
        ssrf.vet_url(url)
    assert caught.value.code == code


def test_https_is_required_when_the_setting_says_so(settings):
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    with pytest.raises(ssrf.UnsafeUrl, match="https"):
        ssrf.vet_url("http://public.example/")
    assert ssrf.vet_url("https://public.example/").host == "public.example"


@pytest.mark.django_db
def test_the_api_refuses_unsafe_urls_with_400_and_param(api):
    for url in ("http://127.0.0.1:8000/", "http://169.254.169.254/", "http://2130706433/",
                "http://[::ffff:127.0.0.1]/", "http://internal.example/"):
        response = api.post("/webhook_endpoints", {"url": url, "enabled_events": ["*"]})
        assert response.status_code == 400, url
        assert response.json()["error"]["param"] == "url"
    assert not WebhookEndpoint.objects.exists()
    created = api.post("/webhook_endpoints",
                       {"url": "http://public.example/hook", "enabled_events": ["*"]})
    assert created.status_code == 201
