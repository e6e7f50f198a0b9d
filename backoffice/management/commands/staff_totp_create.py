"""`manage.py staff_totp_create <username>`: give a staff member an authenticator (TOTP) device
and print the otpauth:// link to scan or type into it, once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = "Create a TOTP device for a staff user and print its otpauth:// URL (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true",
                            help="Delete the user's existing devices first (a lost phone).")

    def handle(self, *args: object, **options: object) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        if not user.is_staff:
            raise CommandError(f"{user} is not staff; give them a role first.")
        devices = TOTPDevice.objects.filter(user=user)
        if devices.exists() and not options["replace"]:
            raise CommandError(f"{user} already has an authenticator device; pass --replace "
                               "to issue a new one (the old codes stop working).")
        devices.delete()
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
        self.stdout.write("Add this to the authenticator app (shown once, do not store it):")
        self.stdout.write(device.config_url)
