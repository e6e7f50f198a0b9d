"""`manage.py recon_bank_import <file> [--format camt053|csv]`: import one bank statement, match
its lines to settlement deposits and payouts, and open breaks. The same file again changes
nothing; a malformed one is refused whole with the reason. `recon_bank_import --rematch` runs
the matching again without a file (after settlement files arrived late)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import InvalidRequest
from reconciliation.bank import MAX_STATEMENT_BYTES, bank_rematch, bank_statement_import
from reconciliation.models import BankStatementFormat


class Command(BaseCommand):
    help = ("Import a bank statement (ISO 20022 camt.053 or the CSV format of "
            "docs/OPERATIONS.md) and reconcile it against settlement deposits and payouts.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, nargs="?")
        parser.add_argument("--format", choices=BankStatementFormat.values, default=None,
                            help="Default: camt053 when the file is XML, else csv.")
        parser.add_argument("--rematch", action="store_true",
                            help="No file: try unmatched bank lines again and judge what is "
                                 "missing (run after late settlement files).")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options["file"]
        if options["rematch"]:
            if path is not None:
                raise CommandError("--rematch takes no file (an import rematches anyway).")
            self.stdout.write(json.dumps({"breaks": bank_rematch()}))
            return
        if path is None:
            raise CommandError("Name the statement file to import, or pass --rematch.")
        try:
            with path.open("rb") as handle:
                content = handle.read(MAX_STATEMENT_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            result = bank_statement_import(content=content, format=options["format"])
        except InvalidRequest as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps({
            "statement": result.statement.id, "new": result.created, "lines": result.lines,
            "matched": result.matched, "breaks": result.breaks, "by_status": result.by_status,
        }))
