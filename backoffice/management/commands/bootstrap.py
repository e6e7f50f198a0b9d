"""`manage.py bootstrap --merchant "Acme Ltd" --admin ops@acme.example`: a fresh deployment's first
run: the first merchant with its API key, the first superuser, and that user's authenticator
(TOTP) device, printed once as one JSON object. Refuses once any superuser exists."""

from __future__ import annotations

import io
import json
import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction


class Command(BaseCommand):
    help = ("First run of a deployment: create the first merchant (and API key), a superuser "
            "and the superuser's TOTP device; prints them once as JSON.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--merchant", required=True, help="the first merchant's name")
        parser.add_argument("--live", action="store_true", help="a live-mode merchant")
        parser.add_argument("--admin", required=True, metavar="EMAIL",
                            help="the superuser's email; the part before @ is the username")
        parser.add_argument("--admin-username", default="", help="username, if not from email")

    def handle(self, *args: object, **options: object) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            raise CommandError("This deployment is bootstrapped already (a superuser exists). "
                               "Add merchants with merchant_create, staff in the back-office.")
        email = str(options["admin"])
        username = str(options["admin_username"] or email.partition("@")[0])
        # From the environment when the operator wants to choose it, else generated: shown once.
        password = os.environ.get("BOOTSTRAP_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
        with transaction.atomic():
            users.objects.create_superuser(username=username, email=email, password=password)
            merchant = io.StringIO()
            call_command("merchant_create", str(options["merchant"]),
                         *(["--live"] if options["live"] else []), stdout=merchant)
            totp = io.StringIO()
            call_command("staff_totp_create", username, stdout=totp)
        self.stdout.write(json.dumps({
            "merchant": json.loads(merchant.getvalue()),
            "admin": {"username": username, "email": email, "password": password},
            "totp_url": totp.getvalue().strip().splitlines()[-1],
            "note": "Shown once. Scan totp_url into an authenticator app; store the API key "
                    "and password in your secret store, then clear this output.",
        }))
