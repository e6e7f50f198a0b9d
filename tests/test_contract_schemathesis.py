"""The OpenAPI contract, fuzzed by schemathesis against a live server on 127.0.0.1: every check
(no 5xx, documented statuses, content types, headers and bodies, schema-valid data accepted,
invalid data rejected, links that lead somewhere), positive and negative data, and all four
phases (examples, coverage, fuzzing, stateful chains along the schema's links). Zero failures.

schemathesis' pytest plugin does not support pytest 9 yet, so its CLI runs in a subprocess
against the server this test starts. Seeded and bounded (SCHEMATHESIS_MAX_EXAMPLES per operation)
to keep CI's run time in check; the number of generated cases is printed and asserted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.factories import merchant_with_key

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5"))
ROOT = Path(django_settings.BASE_DIR)
# Statuses a schema-valid request may still get (schemathesis' defaults less 5xx): another
# merchant's or a made-up id (404), an object not in that state (409), rate limits (429).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "429"]

[phases.stateful]
max-steps = 12

# JSON bodies are UTF-8 without NUL or lone surrogates (core.parsers: 400 `invalid_json`).
[generation]
codec = "utf-8"
allow-x00 = false
"""
PUBLIC_ADDRESS = "93.184.216.34"  # what every webhook host "resolves" to; nothing is sent there


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook URLs are vetted by resolving their host: every name resolves to one public
    address here, so no test asks a real resolver (deliveries are never sent: tasks queue)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name in ("127.0.0.1", "localhost", "::1") or name is None:
            return real(host, port, *args, **kwargs)
        try:
            socket.inet_pton(socket.AF_INET, name)
            return real(host, port, *args, **kwargs)
        except (OSError, TypeError):
            pass
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port or 443))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_api_matches_its_schema_with_every_check(live_server, settings, tmp_path, public_dns):
    settings.RATE_LIMIT_ENABLED = False  # 429s would only thin out the cases that get through
    settings.WEBHOOKS_ALLOW_LOOPBACK = False
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    report = tmp_path / "report.ndjson"
    raw_key = merchant_with_key()[1]
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{live_server.url}/api/schema/?format=json", "--url", live_server.url,
        "--checks", "all", "--mode", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "19", "--workers", "1",
        "--header", f"Authorization: Bearer {raw_key}",
        "--suppress-health-check", "all", "--generation-database", "none",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=1500, check=False)
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.txt").write_text(output)  # the whole report, for a failing run
    cases = _generated_cases(report)
    print(f"schemathesis generated {cases} test cases (max {MAX_EXAMPLES} per operation)")
    print(output[-6000:])
    assert run.returncode == 0, output[-20000:]
    assert cases > 0


def _generated_cases(report: Path) -> int:
    """Test cases schemathesis sent, counted from its ndjson event stream."""
    if not report.exists():
        return 0
    count = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for name, body in event.items():
            if name.endswith("ScenarioFinished") and isinstance(body, dict):
                count += len((body.get("recorder") or {}).get("cases") or {})
    return count
