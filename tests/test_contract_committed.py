"""The committed contract: openapi.yaml and docs/API.md are what the code serves, so a change to
the API shows up in review as a change to them (regenerate with `make schema`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from core.management.commands.api_reference import reference_files


def test_committed_reference_files_match_the_code():
    stale = [path.name for path, text in reference_files().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert not stale, (f"{', '.join(stale)} differ from what the code serves. Run `make schema` "
                       "(manage.py api_reference) and commit openapi.yaml and docs/API.md.")


@pytest.mark.django_db
def test_the_served_schema_is_the_committed_one(client):
    committed = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())
    served = client.get("/api/schema/?format=json")
    assert served.status_code == 200
    assert json.loads(served.content) == committed
