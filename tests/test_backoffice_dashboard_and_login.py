"""The dashboard on the admin index (bounded queries), and login security: TOTP required when
configured, lockout after repeated failures, session expiry, the admin URL from settings."""

from __future__ import annotations

import time

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice import services
from backoffice.audit import Actor
from backoffice.middleware import LOGIN_AT, SEEN_AT
from payments import services as payments
from payments.models import Payment
from reconciliation.models import BreakType
from reconciliation.services import BreakSpec, breaks_open
from tests.factories import staff_user
from webhooks import services as webhooks
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def _user(role: str, name: str | None = None):
    return staff_user(role, name, password=PASSWORD)


# -- the dashboard ---------------------------------------------------------------------------
def test_the_dashboard_shows_what_needs_a_human(client, make_payment, merchant, settings):
    make_payment(10_000)
    make_payment(5_000)
    make_payment(700, payment_method="pm_card_declined", state="failed")
    payments.payment_create(merchant=merchant, amount=100, currency="usd",
                            payment_method="pm_card_visa", confirm=True)  # still waiting
    services.refund_request(actor=Actor(user=_user("operator")), payment_id=make_payment(
        90_000).id, amount=80_000, reason="duplicate", note="big")
    breaks_open(specs=[BreakSpec(type=BreakType.MISSING_INTERNALLY, key=f"k{i}")
                       for i in range(3)])
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    endpoint = webhooks.endpoint_create(merchant=merchant, url="http://127.0.0.1:9/x",
                                        enabled_events=["*"]).endpoint
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(status="disabled")
    client.force_login(_user("viewer"))
    page = client.get(reverse("admin:index"))
    d = page.context["dashboard"]
    (sandbox,) = d["providers"]
    assert (sandbox.provider, sandbox.payments, sandbox.succeeded, sandbox.failed) == (
        "sandbox", 5, 3, 1)
    assert sandbox.success_rate == "75.0%" and sandbox.volume == "1,050.00 USD"
    assert d["waiting_count"] == 1 and d["pending_count"] == 1
    assert d["breaks"] == [{"type": "missing_internally", "n": 3}]
    assert [e.pk for e in d["failing_endpoints"]] == [endpoint.pk]
    assert d["unsettled_count"] == Payment.objects.filter(status="captured").count() > 0
    text = page.content.decode()
    for label in ("Pending approvals", "Payments awaiting reconciliation",
                  "Outcome unknown, waiting on the provider", "captured, not yet settled",
                  "Open reconciliation breaks", "Failing webhook endpoints",
                  "Today by provider", "75.0%"):
        assert label in text, label


def test_the_dashboard_costs_the_same_number_of_queries_with_more_data(
        client, make_payment, django_assert_max_num_queries):
    client.force_login(_user("viewer"))
    # 20 for the cards and tables, 2 for the trend charts (payments per day, open breaks).
    with django_assert_max_num_queries(22) as few:
        client.get(reverse("admin:index"))
    for _ in range(5):
        make_payment(1000)
    breaks_open(specs=[BreakSpec(type=BreakType.AMOUNT_MISMATCH, key=f"m{i}") for i in range(5)])
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("admin:index"))


# -- two-factor ------------------------------------------------------------------------------
def _login(client, username: str, password: str = PASSWORD, token: str = ""):
    return client.post(reverse("admin:login"), {"username": username, "password": password,
                                                "otp_token": token, "next": "/admin/"})


def test_staff_need_their_authenticator_code_when_2fa_is_required(client, settings):
    settings.BACKOFFICE_REQUIRE_2FA = True
    user = _user("viewer", "ola")
    client.force_login(user)  # a password-only session is not enough
    assert client.get(reverse("admin:index")).status_code == 302
    client.logout()
    no_code = _login(client, "ola")
    assert no_code.status_code == 200
    assert "Enter the 6-digit code" in no_code.content.decode()
    no_device = _login(client, "ola", token="123456")
    assert "You have no authenticator yet" in no_device.content.decode()
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    wrong = _login(client, "ola", token="000000" if totp(device.bin_key) != 0 else "111111")
    assert "That code is wrong or has expired" in wrong.content.decode()
    device.refresh_from_db()
    device.throttling_failure_count, device.throttling_failure_timestamp = 0, None
    device.save()
    good = _login(client, "ola", token=f"{totp(device.bin_key):06d}")
    assert good.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


def test_production_settings_require_2fa_and_lockout():
    source = (django_settings.BASE_DIR / "config" / "settings" / "production.py").read_text()
    assert "BACKOFFICE_REQUIRE_2FA = True" in source and "AXES_ENABLED = True" in source


def test_staff_totp_create_prints_a_link_once(capsys):
    from django.core.management import call_command

    _user("viewer", "nia")
    call_command("staff_totp_create", "nia")
    assert "otpauth://totp/" in capsys.readouterr().out
    with pytest.raises(Exception, match="already has an authenticator"):
        call_command("staff_totp_create", "nia")


# -- lockout ---------------------------------------------------------------------------------
def test_repeated_failures_lock_the_login(client, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    _user("viewer", "lee")
    for _ in range(3):
        _login(client, "lee", password="wrong")
    locked = _login(client, "lee")  # even the right password now
    assert locked.status_code in (403, 429)
    assert "Too many failed logins" in locked.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302
    from axes.utils import reset

    reset(username="lee")
    assert _login(client, "lee").status_code == 302


def test_tests_are_not_locked_out_by_default(client):
    _user("viewer", "kim")
    for _ in range(10):
        _login(client, "kim", password="wrong")
    assert _login(client, "kim").status_code == 302


# -- sessions and the admin URL --------------------------------------------------------------
def test_an_idle_session_ends_with_a_message(client, settings):
    client.force_login(_user("viewer", "sam"))
    assert client.get(reverse("admin:index")).status_code == 200
    session = client.session
    session[SEEN_AT] = int(time.time()) - settings.BACKOFFICE_SESSION_IDLE_SECONDS - 5
    session.save()
    response = client.get(reverse("admin:index"), follow=True)
    assert "Your session ended after 30 minutes without activity" in response.content.decode()
    assert not response.context["user"].is_authenticated


def test_a_busy_session_still_ends_after_the_maximum_age(client, settings):
    client.force_login(_user("viewer", "max"))
    client.get(reverse("admin:index"))
    session = client.session
    session[LOGIN_AT] = int(time.time()) - settings.SESSION_COOKIE_AGE - 5
    session.save()
    response = client.get(reverse("admin:index"), follow=True)
    assert "since login" in response.content.decode()


def test_the_admin_lives_at_the_configured_url():
    assert reverse("admin:index") == f"/{django_settings.ADMIN_URL}"
