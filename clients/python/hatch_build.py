"""Build hook: generate `clearhouse_api/` from the repository's committed openapi.yaml whenever it
is missing or was made from another schema. The generated code is not committed (it is rebuilt,
offline, from the schema at install time: `make install`, `uv sync`, `pip install`)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "clearhouse_api"
STAMP = ".openapi-sha256"


def schema_path(root: Path) -> Path:
    """The repository's openapi.yaml; an sdist carries its own copy next to this file."""
    in_repository = root.parent.parent / "openapi.yaml"
    return in_repository if in_repository.exists() else root / "openapi.yaml"


def generate(root: Path) -> bool:
    """(Re)generate the package when the schema changed; True when it did. (Warnings do not
    fail it: the file download, whose body is PDF, PNG or JPEG bytes, has no model.)"""
    schema = schema_path(root)
    digest = hashlib.sha256(schema.read_bytes()).hexdigest()
    target = root / PACKAGE
    stamp = target / STAMP
    if stamp.exists() and stamp.read_text().strip() == digest:
        return False
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path",  # noqa: S603
                    str(schema), "--meta", "none", "--config", str(root / "generator.yaml"),
                    "--output-path", str(target)],
                   cwd=root, check=True)
    stamp.write_text(digest + "\n")
    return True


class GenerateClientHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generate(Path(self.root))


if __name__ == "__main__":  # `python clients/python/hatch_build.py`: regenerate in place
    print("regenerated" if generate(Path(__file__).resolve().parent) else "up to date")
