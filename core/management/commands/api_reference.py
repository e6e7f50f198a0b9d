"""`manage.py api_reference` (what `make schema` runs): write openapi.yaml and docs/API.md from
the code; with --check, change nothing and fail when either differs from what the code serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.reference import api_markdown, openapi_yaml


def reference_files() -> dict[Path, str]:
    """Each committed reference file and the text the code makes of it now."""
    root = Path(settings.BASE_DIR)
    return {root / "openapi.yaml": openapi_yaml(), root / "docs" / "API.md": api_markdown()}


class Command(BaseCommand):
    help = "Write openapi.yaml and docs/API.md from the code (--check: only compare)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true",
                            help="Fail, writing nothing, when a committed file is stale.")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        stale = []
        for path, text in reference_files().items():
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current == text:
                continue
            stale.append(path.name)
            if not check:
                path.write_text(text, encoding="utf-8")
                self.stdout.write(f"wrote {path.relative_to(settings.BASE_DIR)}")
        if check and stale:
            raise CommandError(f"{', '.join(stale)} differ from what the code serves: run "
                               "`make schema` and commit the result.")
        if not stale:
            self.stdout.write("openapi.yaml and docs/API.md are up to date")
