"""`manage.py pan_scan`: look for card numbers stored anywhere; exits 1 naming the tables."""

from django.core.management.base import BaseCommand, CommandError

from core.pan_scan import scan_database


class Command(BaseCommand):
    help = "Scan every table for Luhn-valid 13–19 digit runs (card numbers must never be stored)."

    def handle(self, *args: object, **options: object) -> None:
        hits = scan_database()
        if hits:
            raise CommandError("card-like numbers found:\n" + "\n".join(f"  {h}" for h in hits))
        self.stdout.write("pan_scan: no card numbers found")
