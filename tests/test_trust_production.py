"""Production fails closed: providers are enabled explicitly, every credential of an enabled
provider is required, the deploy checks refuse development secrets and the simulator or sandbox
for live traffic, and a webhook signed with a development secret is never believed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from core import checks as core_checks
from core.dev_credentials import DEMO_API_KEY, DEV_LEDGER_CHECKPOINT_KEY, DEV_SECRET_KEY
from providers import checks as provider_checks
from providers.conf import DEV_CREDENTIALS, providers_from_env
from tests.test_deployment import PRODUCTION_ENV, ROOT, _database_url, hermetic_environ

# What only the deploy checks can see: the values are present, but they are the repository's.
DEV_SIGNED_ENV = {**PRODUCTION_ENV, "CIELO_WEBHOOK_SECRET": "whsec_dev_cielo",
                  "REDE_TOKEN": "dev-rede-token"}
SIMULATOR_LIVE_ENV = {**PRODUCTION_ENV, "CIELO_BASE_URL": "http://127.0.0.1:8100/cielo",
                      "SIMULATOR_URL": "http://127.0.0.1:8100"}


def _python(code: str, extra: dict[str, str], *, drop: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess[str]:
    env = {**hermetic_environ(), **extra}
    for name in drop:
        env.pop(name, None)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)


SETUP = "import django; django.setup(); from django.conf import settings; "


# -- start-up ---------------------------------------------------------------------------------
def test_production_refuses_to_start_without_an_explicit_provider_list():
    result = _python(SETUP + "print(settings.PROVIDERS_ENABLED)", PRODUCTION_ENV,
                     drop=("PROVIDERS_ENABLED",))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "PROVIDERS_ENABLED" in result.stderr


def test_production_names_every_missing_credential_of_an_enabled_provider_and_no_other():
    result = _python(SETUP + "print(settings.PROVIDERS)",
                     {**PRODUCTION_ENV, "PROVIDERS_ENABLED": "cielo,getnet",
                      "PROVIDERS_LIVE": "cielo", "PROVIDERS_TEST": "getnet"},
                     drop=("CIELO_MERCHANT_KEY", "CIELO_WEBHOOK_SECRET", "GETNET_BASE_URL"))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    for name in ("CIELO_MERCHANT_KEY", "CIELO_WEBHOOK_SECRET", "GETNET_BASE_URL"):
        assert name in message
    assert "CIELO_MERCHANT_ID" not in message and "REDE_" not in message


def test_production_refuses_an_unknown_provider_or_a_live_one_that_is_not_enabled():
    unknown = _python(SETUP, {**PRODUCTION_ENV, "PROVIDERS_ENABLED": "cielo,stripe"})
    assert unknown.returncode != 0 and "stripe" in unknown.stderr.splitlines()[-1]
    not_enabled = _python(SETUP, {**PRODUCTION_ENV, "PROVIDERS_ENABLED": "cielo",
                                  "PROVIDERS_LIVE": "cielo,rede"})
    assert not_enabled.returncode != 0
    assert "PROVIDERS_LIVE" in not_enabled.stderr.splitlines()[-1]


@pytest.mark.parametrize(("live", "test", "named"), [
    ("cielo,rede,getnet", "", "sandbox"),  # the sandbox is classified too
    ("rede,getnet", "sandbox", "cielo"),  # forgotten: neither live nor test
    ("cielo,rede,getnet", "sandbox,cielo", "cielo"),  # both
    ("cielo,rede,getnet", "sandbox,stripe", "stripe"),  # not enabled
])
def test_production_refuses_an_enabled_provider_that_is_not_exactly_live_or_test(
        live: str, test: str, named: str) -> None:
    result = _python(SETUP, {**PRODUCTION_ENV, "PROVIDERS_LIVE": live, "PROVIDERS_TEST": test})
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message and named in message, message
    assert "PROVIDERS_TEST" in message


def test_production_with_real_looking_config_enables_exactly_what_it_says():
    result = _python(SETUP + "from providers import registry; import json; print(json.dumps("
                             "[registry.registered_codes(), settings.PROVIDERS_LIVE, "
                             "sorted(settings.PROVIDERS)]))",
                     {**PRODUCTION_ENV, "PROVIDERS_ENABLED": "cielo,rede",
                      "PROVIDERS_LIVE": "cielo,rede", "PROVIDERS_TEST": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [["cielo", "rede"], ["cielo", "rede"], ["cielo", "rede"]]


def test_development_settings_keep_the_simulator_defaults_with_no_environment():
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.local"}
    result = _python(SETUP + "print(settings.PROVIDERS['cielo']['webhook_secret'], "
                             "settings.PROVIDERS_ENABLED, settings.PROVIDERS_LIVE)", env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "whsec_dev_cielo"
    assert "['sandbox', 'cielo', 'rede', 'getnet'] []" in result.stdout
    test = _python(SETUP + "print(settings.PROVIDERS_TEST)", env)
    assert test.stdout.strip() == "['sandbox', 'cielo', 'rede', 'getnet']", test.stderr[-3000:]


# -- check --deploy -----------------------------------------------------------------------------
def _check_deploy(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**hermetic_environ(), **extra, "DJANGO_SECURE_SSL_REDIRECT": "true"}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)


def test_check_deploy_flags_a_development_secret_by_variable_name():
    result = _check_deploy(DEV_SIGNED_ENV)
    assert result.returncode != 0
    assert "providers.E001" in result.stderr
    assert "CIELO_WEBHOOK_SECRET" in result.stderr and "REDE_TOKEN" in result.stderr


def test_check_deploy_flags_the_simulator_enabled_for_live_traffic():
    result = _check_deploy(SIMULATOR_LIVE_ENV)
    assert result.returncode != 0
    assert "providers.E002" in result.stderr and "CIELO_BASE_URL" in result.stderr


def test_check_deploy_flags_a_test_mode_provider_at_its_production_endpoint():
    """Classified test, but with Cielo's production endpoint (PRODUCTION_ENV's): sk_test_
    payments would reach a real acquirer."""
    result = _check_deploy({**PRODUCTION_ENV, "PROVIDERS_LIVE": "rede,getnet",
                            "PROVIDERS_TEST": "sandbox,cielo"})
    assert result.returncode != 0
    assert "providers.E004" in result.stderr and "CIELO_BASE_URL" in result.stderr


def test_check_deploy_refuses_loopback_webhooks():
    result = _check_deploy({**PRODUCTION_ENV, "WEBHOOKS_ALLOW_LOOPBACK": "true"})
    assert result.returncode != 0
    assert "core.E005" in result.stderr and "WEBHOOKS_ALLOW_LOOPBACK" in result.stderr


# The checks in-process, one rule each (cheaper than a subprocess per case).
def _ids(errors: list[Any]) -> set[str]:
    return {error.id for error in errors}


def _production_providers(**overrides: str) -> dict[str, dict[str, Any]]:
    return providers_from_env({**PRODUCTION_ENV, **overrides}, production=True,
                              enabled=["cielo", "rede", "getnet"])


@pytest.mark.parametrize("name", sorted(DEV_CREDENTIALS))
def test_every_development_credential_is_refused(name: str) -> None:
    providers = _production_providers(**{name: DEV_CREDENTIALS[name]})
    with override_settings(PROVIDERS=providers, PROVIDERS_ENABLED=["cielo", "rede", "getnet"],
                           PROVIDERS_LIVE=["cielo", "rede", "getnet"]):
        errors = provider_checks.check_provider_credentials(None)
    assert _ids(errors) == {"providers.E001"}
    assert name in errors[0].msg


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8100/cielo", "http://localhost/cielo",
                                      "https://[::1]/cielo", "http://simulator:8100/cielo",
                                      "http://cielo.example.com"])
def test_a_live_provider_on_loopback_the_simulator_or_plain_http_is_refused(base_url: str
                                                                           ) -> None:
    providers = _production_providers(CIELO_BASE_URL=base_url)
    with override_settings(PROVIDERS=providers, PROVIDERS_ENABLED=["cielo"],
                           PROVIDERS_LIVE=["cielo"], SIMULATOR_URL="http://simulator:8100"):
        assert _ids(provider_checks.check_live_providers(None)) == {"providers.E002"}
        with override_settings(PROVIDERS_LIVE=[]):  # the same provider in test mode is fine
            assert provider_checks.check_live_providers(None) == []


def test_the_sandbox_listed_live_is_refused() -> None:
    with override_settings(PROVIDERS={}, PROVIDERS_ENABLED=["sandbox"],
                           PROVIDERS_LIVE=["sandbox"]):
        assert _ids(provider_checks.check_live_providers(None)) == {"providers.E003"}


SANDBOX_URLS = {"CIELO_BASE_URL": "https://apisandbox.cieloecommerce.cielo.com.br",
                "REDE_BASE_URL": "https://sandbox-erede.useredecloud.com.br",
                "GETNET_BASE_URL": "https://api-sandbox.getnet.com.br"}


@pytest.mark.parametrize(("code", "production_url"), [
    ("cielo", "https://api.cieloecommerce.cielo.com.br"),
    ("cielo", "https://apiquery.cieloecommerce.cielo.com.br/"),
    ("cielo", "HTTPS://API.cieloecommerce.cielo.com.br/1/sales"),
    ("rede", "https://api.userede.com.br/erede"),
    ("getnet", "https://api.getnet.com.br"),
])
def test_a_test_mode_provider_at_its_production_endpoint_is_refused(
        code: str, production_url: str) -> None:
    name = f"{code.upper()}_BASE_URL"
    live = [other for other in ("cielo", "rede", "getnet") if other != code]
    with override_settings(PROVIDERS=_production_providers(**{name: production_url}),
                           PROVIDERS_ENABLED=["sandbox", "cielo", "rede", "getnet"],
                           PROVIDERS_LIVE=live, PROVIDERS_TEST=["sandbox", code]):
        errors = provider_checks.check_live_providers(None)
    assert _ids(errors) == {"providers.E004"}
    assert name in errors[0].msg
    # At its sandbox (Rede's older sandbox shares the production host), test mode is fine.
    older = ["https://api.userede.com.br/desenvolvedores"] if code == "rede" else []
    for sandbox in (SANDBOX_URLS[name], *older):
        with override_settings(PROVIDERS=_production_providers(**{name: sandbox}),
                               PROVIDERS_ENABLED=["sandbox", "cielo", "rede", "getnet"],
                               PROVIDERS_LIVE=live, PROVIDERS_TEST=["sandbox", code]):
            assert provider_checks.check_live_providers(None) == []


def test_a_test_mode_provider_with_a_live_providers_endpoint_or_credentials_is_refused() -> None:
    enabled = {"PROVIDERS_ENABLED": ["cielo", "getnet"], "PROVIDERS_LIVE": ["cielo"],
               "PROVIDERS_TEST": ["getnet"]}
    same_host = _production_providers(
        GETNET_BASE_URL=PRODUCTION_ENV["CIELO_BASE_URL"] + "/getnet")
    with override_settings(PROVIDERS=same_host, **enabled):
        errors = provider_checks.check_live_providers(None)
    assert _ids(errors) == {"providers.E004"} and "live provider cielo" in errors[0].msg
    shared = _production_providers(GETNET_BASE_URL=SANDBOX_URLS["GETNET_BASE_URL"],
                                   GETNET_WEBHOOK_SECRET=PRODUCTION_ENV["CIELO_WEBHOOK_SECRET"])
    with override_settings(PROVIDERS=shared, **enabled):
        assert provider_checks.check_live_providers(None) == []
        errors = provider_checks.check_provider_credentials(None)
    assert _ids(errors) == {"providers.E005"}
    assert "GETNET_WEBHOOK_SECRET" in errors[0].msg and "CIELO_WEBHOOK_SECRET" in errors[0].msg


def test_real_looking_provider_config_passes_the_provider_checks() -> None:
    with override_settings(PROVIDERS=_production_providers(), SIMULATOR_URL="",
                           PROVIDERS_ENABLED=["sandbox", "cielo", "rede", "getnet"],
                           PROVIDERS_LIVE=["cielo", "rede", "getnet"]):
        assert provider_checks.check_provider_credentials(None) == []
        assert provider_checks.check_live_providers(None) == []


@pytest.mark.parametrize(("overrides", "error_id"), [
    ({"DEBUG": True}, "core.E001"),
    ({"SECRET_KEY": DEV_SECRET_KEY}, "core.E002"),
    ({"FIELD_ENCRYPTION_KEYS": []}, "core.E003"),
    ({"FIELD_ENCRYPTION_KEYS": ["replace-with-Fernet.generate_key()-output"]}, "core.E003"),
    ({"WEBHOOKS_ALLOW_LOOPBACK": True}, "core.E005"),
    ({"WEBHOOKS_REQUIRE_HTTPS": False}, "core.E006"),
    ({"METRICS_TOKEN": ""}, "core.E007"),
    ({"METRICS_TOKEN": "short-token"}, "core.E007"),
])
def test_core_deploy_checks_refuse_debug_the_dev_secret_key_and_missing_encryption_keys(
        overrides: dict[str, Any], error_id: str) -> None:
    good = {"DEBUG": False, "SECRET_KEY": PRODUCTION_ENV["DJANGO_SECRET_KEY"],
            "FIELD_ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
            "WEBHOOKS_ALLOW_LOOPBACK": False, "WEBHOOKS_REQUIRE_HTTPS": True,
            "METRICS_TOKEN": PRODUCTION_ENV["METRICS_TOKEN"]}
    with override_settings(**good):
        assert core_checks.check_production_settings(None) == []
    with override_settings(**{**good, **overrides}):
        assert _ids(core_checks.check_production_settings(None)) == {error_id}


@pytest.mark.parametrize(("overrides", "message_id"), [
    ({"LEDGER_CHECKPOINT_SIGNING_KEY": ""}, "ledger.E001"),
    ({"LEDGER_CHECKPOINT_SIGNING_KEY": "not-hex"}, "ledger.E001"),
    ({"LEDGER_CHECKPOINT_SIGNING_KEY": DEV_LEDGER_CHECKPOINT_KEY}, "ledger.E001"),
    ({"LEDGER_CHECKPOINT_DIR": ""}, "ledger.E002"),
])
def test_ledger_deploy_checks_refuse_a_missing_or_development_checkpoint_key(
        overrides: dict[str, Any], message_id: str) -> None:
    from ledger.checks import check_ledger_checkpoints

    good = {"LEDGER_CHECKPOINT_SIGNING_KEY": PRODUCTION_ENV["LEDGER_CHECKPOINT_SIGNING_KEY"],
            "LEDGER_CHECKPOINT_DIR": "/var/lib/clearhouse/ledger-checkpoints"}
    with override_settings(**good):
        assert check_ledger_checkpoints(None) == []
    with override_settings(**{**good, **overrides}):
        assert _ids(check_ledger_checkpoints(None)) == {message_id}


@pytest.mark.django_db
def test_the_demo_api_key_in_the_database_is_refused() -> None:
    from core.models import ApiKey
    from core.services import hash_api_key
    from tests.factories import MerchantFactory

    assert core_checks.check_demo_api_key(None, databases=["default"]) == []
    ApiKey.objects.create(merchant=MerchantFactory(), prefix=DEMO_API_KEY[:12],
                          hashed_key=hash_api_key(DEMO_API_KEY))
    assert _ids(core_checks.check_demo_api_key(None, databases=["default"])) == {"core.E004"}
    assert core_checks.check_demo_api_key(None, databases=None) == []  # no --database: skipped


# -- a forged webhook ---------------------------------------------------------------------------
FORGE = SETUP + """
import hashlib, hmac, json, sys, time, base64
from django.test import Client
from webhooks.models import ProviderEvent
body = json.dumps({"NotificationId": "forged-1", "ChangeType": "DepositConfirmed",
                   "OccurredAt": "2026-01-05T10:00:00Z", "Id": "dep_forged",
                   "Amount": 500000000, "Currency": "BRL", "Status": "Confirmed"}).encode()
ts = str(int(time.time()))
sig = hmac.new(b"whsec_dev_cielo", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
cielo = Client().post("/webhooks/providers/cielo/", body, content_type="application/json",
                      HTTP_CIELO_EVENT_TIMESTAMP=ts, HTTP_CIELO_SIGNATURE="sha256=" + sig)
stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
rbody = json.dumps({"id": "forged-2", "event": "deposit.confirmed", "occurredAt": stamp,
                    "data": {"depositId": "D1", "reference": "dep_forged", "amount": "50000.00",
                             "currency": "BRL", "status": "CONFIRMED"}}).encode()
rsig = base64.b64encode(hmac.new(b"whsec_dev_rede", stamp.encode() + b"\\n" + rbody,
                                 hashlib.sha512).digest()).decode()
rede = Client().post("/webhooks/providers/rede/", rbody, content_type="application/json",
                     HTTP_X_REDE_TIMESTAMP=stamp, HTTP_X_REDE_SIGNATURE=rsig)
print(json.dumps([cielo.status_code, rede.status_code, ProviderEvent.objects.count()]))
"""


@pytest.mark.django_db(transaction=True)
def test_a_webhook_signed_with_a_development_secret_is_never_believed_in_production():
    env = {**PRODUCTION_ENV, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": "memory://",
           "DJANGO_ALLOWED_HOSTS": "testserver", "PROVIDERS_ENABLED": "cielo",
           "PROVIDERS_LIVE": "cielo", "PROVIDERS_TEST": ""}
    rede = tuple(name for name in PRODUCTION_ENV if name.startswith("REDE_"))
    result = _python(FORGE, env, drop=rede)
    assert result.returncode == 0, result.stderr[-3000:]
    # Cielo's real secret does not match the repository's; Rede, neither enabled nor configured
    # (it used to fall back to whsec_dev_rede and store the forged deposit confirmation): 404.
    assert json.loads(result.stdout.splitlines()[-1]) == [400, 404, 0]
    # Without the real secret, production does not start at all (it used to fall back to
    # whsec_dev_cielo and accept the forged notice).
    missing = _python(FORGE, env, drop=("CIELO_WEBHOOK_SECRET",))
    assert missing.returncode != 0 and "CIELO_WEBHOOK_SECRET" in missing.stderr


def test_the_forged_signature_above_is_what_the_development_config_accepts():
    """The forgery is a real one: the development secret verifies it."""
    body, ts = b'{"NotificationId": "x", "ChangeType": "PaymentCaptured"}', str(int(time.time()))
    sig = hmac.new(b"whsec_dev_cielo", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    from providers.cielo import CieloProvider

    adapter = CieloProvider()
    with override_settings(PROVIDERS=providers_from_env({})):
        assert adapter.verify_webhook(headers={"Cielo-Event-Timestamp": ts,
                                               "Cielo-Signature": f"sha256={sig}"}, body=body)


def test_hermetic_environ_leaves_no_provider_setting_behind():
    os.environ["CIELO_WEBHOOK_SECRET_FOR_THIS_TEST"] = "x"
    try:
        assert not {name for name in hermetic_environ()
                    if name.startswith(("CIELO_", "REDE_", "GETNET_", "PROVIDERS_"))}
    finally:
        del os.environ["CIELO_WEBHOOK_SECRET_FOR_THIS_TEST"]
