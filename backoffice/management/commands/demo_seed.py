"""`manage.py demo_seed`: idempotently create the demo merchant, its API key and an admin login.

The demo key is fixed by settings (DEMO_API_KEY) so that every `make run` can print it again;
API keys are otherwise only ever shown once. Never run this against production. It lives in the
top layer because it seeds several apps (core's merchant and key, providers' routing, the
back-office login).
"""

import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.models import ApiKey, Merchant
from core.services import KEY_PREFIX_LENGTH, hash_api_key
from providers.models import RoutingRule, RoutingTarget


def _demo_routing() -> None:
    """BRL payments go to the three simulated acquirers (50/30/20), so the demo shows routing,
    failover and provider webhooks; everything else stays on the in-process sandbox."""
    if RoutingRule.objects.filter(name="Demo: BRL via simulated acquirers").exists():
        return
    rule = RoutingRule.objects.create(name="Demo: BRL via simulated acquirers", priority=100,
                                      currency="brl")
    for position, (code, weight) in enumerate((("cielo", 50), ("rede", 30), ("getnet", 20))):
        RoutingTarget.objects.create(rule=rule, provider=code, position=position, weight=weight)


class Command(BaseCommand):
    help = "Create (once) the demo merchant, API key and admin user; print them as JSON."

    def handle(self, *args: object, **options: object) -> None:
        raw_key = settings.DEMO_API_KEY
        if not raw_key.startswith("sk_test_"):
            raise CommandError("DEMO_API_KEY must be a test key (sk_test_…).")
        with transaction.atomic():
            key = ApiKey.objects.select_related("merchant").filter(
                hashed_key=hash_api_key(raw_key)).first()
            if key is None:
                merchant = Merchant.objects.create(name="Demo Merchant")
                key = ApiKey.objects.create(
                    merchant=merchant, name="demo", prefix=raw_key[:KEY_PREFIX_LENGTH],
                    hashed_key=hash_api_key(raw_key),
                )
            _demo_routing()
            user_model = get_user_model()
            user = user_model.objects.filter(username=settings.DEMO_ADMIN_USERNAME).first()
            if user is None:
                user_model.objects.create_superuser(
                    settings.DEMO_ADMIN_USERNAME, "admin@example.com",
                    settings.DEMO_ADMIN_PASSWORD)
        self.stdout.write(json.dumps({
            "merchant_id": key.merchant_id, "api_key": raw_key,
            "admin_username": settings.DEMO_ADMIN_USERNAME,
            "admin_password": settings.DEMO_ADMIN_PASSWORD,
        }))
