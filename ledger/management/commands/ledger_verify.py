"""`manage.py ledger_verify`: prove the ledger consistent; exit 1 naming the first bad rows."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ledger.verify import DEFAULT_CHUNK_SIZE, ledger_verify


class Command(BaseCommand):
    help = ("Check that every entry sums to zero, every balance equals the sum of its postings, "
            "every balance_after matches, and the hash chain is intact.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                            help="Rows fetched per round trip while streaming the hash chain.")

    def handle(self, *args: object, **options: object) -> None:
        result = ledger_verify(chunk_size=int(options["chunk_size"]))  # type: ignore[arg-type]
        if not result.ok:
            raise CommandError(result.report(), returncode=1)
        self.stdout.write(result.report())
