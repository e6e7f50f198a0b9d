"""Standing checks that CI runs with the suite: migrations committed, import contracts, ruff."""

import re
import shutil
import subprocess
import sys
import tomllib
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_import_contracts_hold():
    """No app imports an app above it (the layers contract), even inside a function."""
    result = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.skipif(shutil.which("ruff", path=str(BIN)) is None, reason="ruff not installed")
def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:]


def _contract_layers() -> tuple[list[set[str]], set[str]]:
    linter = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in linter["contracts"] if c["type"] == "layers"]
    layers = [{name.strip() for name in re.split(r"[|:]", layer)} for layer in contract["layers"]]
    return layers, set(linter["root_packages"])


def _pictured_layers() -> list[set[str]]:
    """The boxes of the first Mermaid flowchart in ARCHITECTURE.md, top to bottom, each with the
    apps drawn in it."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    chart = re.search(r"```mermaid\n(flowchart.*?)```", text, re.S)
    assert chart, "ARCHITECTURE.md has no Mermaid flowchart of the layers"
    layers: list[set[str]] = []
    inside = False
    for line in chart.group(1).splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            layers.append(set())
            inside = True
        elif line == "end":
            inside = False
        elif inside and (node := re.match(r"(\w+)\[", line)):
            layers[-1].add(node.group(1))
    return layers


def test_every_app_is_in_the_layers_contract():
    from django.apps import apps

    layers, root_packages = _contract_layers()
    ours = {config.name for config in apps.get_app_configs() if (ROOT / config.name).is_dir()}
    assert set().union(*layers) == root_packages == ours


def test_the_architecture_picture_draws_the_contracts_layers():
    layers, _ = _contract_layers()
    assert _pictured_layers() == layers
