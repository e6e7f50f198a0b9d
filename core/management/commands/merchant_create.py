"""`manage.py merchant_create "Acme Ltd"`: create a merchant and print its first API key as JSON."""

import json

from django.core.management.base import BaseCommand, CommandParser

from core import versions
from core.services import merchant_create


class Command(BaseCommand):
    help = "Create a merchant with one API key; prints {id, name, api_key} as one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--live", action="store_true", help="Create a live-mode merchant.")
        parser.add_argument("--api-version", choices=versions.VERSIONS, default=None,
                            help="Pin the merchant to this API version (default: the newest).")

    def handle(self, *args: object, **options: object) -> None:
        merchant, issued = merchant_create(name=str(options["name"]), is_live=bool(options["live"]),
                                           api_version=options["api_version"] or None)
        self.stdout.write(json.dumps(
            {"id": merchant.id, "name": merchant.name, "api_version": merchant.api_version,
             "api_key": issued.raw_key}
        ))
