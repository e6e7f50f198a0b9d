"""The image builds as shipped, proved outside Docker (which cannot pull images here): the
Dockerfile's own instructions are read and run in order on a clean checkout with no .env, the
build context filtered by .dockerignore as Docker filters it, with the Dockerfile's ENV; and
docker-compose.yml is a valid Compose file whose services all run that image correctly."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_deployment import hermetic_environ

ROOT = Path(__file__).resolve().parent.parent
# Where the image puts things, and where this test puts them instead.
_IMAGE_PATHS = ("/opt/venv", "/var/lib/clearhouse", "/app")


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") \
            else line.strip()
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def _ignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.removeprefix("!").strip("/")))
    return patterns


def docker_ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or any of its
    parent folders; `**` matches any number of folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in patterns:
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*").replace(
            "[^/]*[^/]*/", "(?:.*/)?")
        if pattern.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def clean_checkout_context(destination: Path) -> list[str]:
    """What `git clone` of this work gives (tracked and new files, nothing ignored: no .env,
    .venv or .data), less what .dockerignore keeps out of the build context."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
                            ).stdout.decode().split("\0")
    patterns = _ignore_patterns()
    copied = []
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file() or docker_ignored(name, patterns):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(name)
    return copied


def test_dockerignore_keeps_secrets_environments_and_vcs_data_out_of_the_context():
    patterns = _ignore_patterns()
    for path in (".env", ".env.production", ".venv/bin/python", ".data/database_url",
                 ".git/config", "payments/__pycache__/models.cpython-311.pyc",
                 ".pytest_cache/v/x", ".ruff_cache/x", "staticfiles/admin/css/base.css"):
        assert docker_ignored(path, patterns), path
    for path in (".env.example", "manage.py", "payments/models.py", "deploy/build.sh",
                 "config/settings/build.py", "uv.lock", "templates/backoffice/lockout.html"):
        assert not docker_ignored(path, patterns), path


def _image_environment(text: str, tmp_path: Path) -> dict[str, str]:
    """The Dockerfile's ENV over a hermetic environment, the image's absolute paths moved
    under tmp_path, `uv` on PATH as the image's first RUN line installs it."""
    uv = shutil.which("uv") or str(ROOT / ".data" / "uv-venv" / "bin" / "uv")
    env = {**hermetic_environ(), "PATH": f"{Path(uv).parent}:/usr/local/bin:/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    for instruction, arguments in dockerfile_instructions(text):
        if instruction != "ENV":
            continue
        for assignment in shlex.split(arguments):
            name, _, value = assignment.partition("=")
            value = value.replace("$PATH", env["PATH"])
            for image_path in _IMAGE_PATHS:
                value = value.replace(image_path, str(tmp_path / image_path.strip("/")))
            env[name] = value
    return env


@pytest.mark.slow
def test_the_dockerfiles_build_steps_succeed_on_a_clean_checkout_with_no_env(tmp_path):
    """Each COPY and RUN of the Dockerfile, in order, as Docker would run them: the dependency
    step sees only what was copied before it; the application step sees the whole context. The
    one RUN line not run is the system layer (pip install uv, useradd: root in a fresh image);
    the uv already installed here stands in for it."""
    text = (ROOT / "Dockerfile").read_text()
    context, app = tmp_path / "context", tmp_path / "app"
    context.mkdir()
    app.mkdir()
    copied = clean_checkout_context(context)
    assert not {".env", ".venv", ".data"} & {name.split("/")[0] for name in copied}
    env = _image_environment(text, tmp_path)
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    steps = []
    for instruction, arguments in dockerfile_instructions(text):
        if instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            into_folder = destination.endswith("/") or len(sources) > 1
            for source in sources:
                if source == ".":
                    shutil.copytree(context, app / destination, dirs_exist_ok=True)
                    continue
                target = app / destination / Path(source).name if into_folder \
                    else app / destination
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / source, target)
        elif instruction == "RUN":
            if arguments.startswith("pip install --no-cache-dir uv && useradd"):
                continue  # the system layer, above
            result = subprocess.run(["sh", "-c", arguments], cwd=app, env=env,
                                    capture_output=True, text=True, check=False, timeout=600)
            assert result.returncode == 0, (arguments, result.stdout[-2000:],
                                            result.stderr[-4000:])
            steps.append(arguments)
    assert steps == ["sh deploy/build.sh dependencies", "sh deploy/build.sh application"]
    assert not (app / ".env").exists()
    manifest = json.loads((app / "staticfiles" / "staticfiles.json").read_text())["paths"]
    hashed = manifest["admin/css/base.css"]
    assert hashed != "admin/css/base.css" and (app / "staticfiles" / hashed).exists()
    assert (app / "staticfiles" / f"{hashed}.gz").exists()  # compressed for WhiteNoise
    # The image's virtualenv has what the default command needs, and no test tooling.
    venv = tmp_path / "opt" / "venv" / "bin"
    assert (venv / "gunicorn").exists() and (venv / "celery").exists()
    assert not (venv / "pytest").exists()


def test_the_build_settings_read_no_secret_and_the_dependency_step_needs_no_source(tmp_path):
    """Without this, collectstatic under production settings stops with ImproperlyConfigured
    (FIELD_ENCRYPTION_KEYS, METRICS_TOKEN…), which is how the image failed to build."""
    env = {**hermetic_environ(), "DJANGO_SETTINGS_MODULE": "config.settings.production"}
    refused = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
                             env=env, capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "ImproperlyConfigured" in refused.stderr
    built = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                         "print(settings.STORAGES['staticfiles']['BACKEND'])"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.build"},
        capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.stdout.strip() == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    # The dependency layer is cached on pyproject.toml and uv.lock alone.
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text())
    before = instructions[: instructions.index(("RUN", "sh deploy/build.sh dependencies"))]
    assert [args for inst, args in before if inst == "COPY"] == [
        "pyproject.toml uv.lock ./", "deploy/build.sh deploy/build.sh"]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _compose_tool() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose_tool() is None,
                    reason="neither `docker compose` nor docker-compose is installed "
                           "(make compose-tool installs Debian's)")
@pytest.mark.parametrize("env_file", [".env.example", "deploy/demo.env"])
def test_docker_compose_config_validates_the_file(tmp_path, env_file):
    """`config` resolves and validates the file against the Compose schema; no engine needed.
    With the production template and with the demo profile's environment."""
    result = subprocess.run(
        [*_compose_tool(), "-f", str(ROOT / "docker-compose.yml"), "--profile", "demo",
         "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "CLEARHOUSE_ENV_FILE": str(ROOT / env_file)})
    assert result.returncode == 0, result.stderr


def test_the_compose_stack_shares_metrics_probes_readyz_relays_events_wires_the_simulator():
    services = _compose()["services"]
    app = {name: spec for name, spec in services.items() if spec.get("build") == "."}
    assert {"migrate", "web", "worker", "worker-webhooks", "worker-reconciliation", "beat",
            "events_relay", "simulator"} == set(app)
    assert services["events_relay"]["command"][1:4] == ["manage.py", "events_relay", "--sink"]
    assert services["events_relay"]["command"][4] in ("redis", "nats", "kafka")
    for name, spec in app.items():
        assert spec["env_file"] == "${CLEARHOUSE_ENV_FILE:-.env}", name
        if name != "simulator":  # every process writing counters shares the directory
            assert "metrics:/var/lib/clearhouse/metrics" in spec["volumes"], name
        if name not in ("migrate", "simulator"):  # migrations first, for every process
            assert spec["depends_on"] == {"migrate": {
                "condition": "service_completed_successfully"}}, name
    assert "tools.metrics_dir --reset" in " ".join(services["migrate"]["command"])
    probe = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in probe
    assert services["simulator"]["profiles"] == ["demo"]
    demo = dict(line.split("=", 1) for line in (ROOT / "deploy" / "demo.env").read_text()
                .splitlines() if line and not line.startswith("#"))
    assert demo["SIMULATOR_WEBHOOK_BASE_URL"] == "http://web:8000/webhooks/providers"
    assert "web" in demo["DJANGO_ALLOWED_HOSTS"].split(",")
    assert all(demo[name].startswith("http://simulator:8100/") for name in demo
               if name.endswith("_BASE_URL") and name != "SIMULATOR_WEBHOOK_BASE_URL")
    # The image sets the directory every process writes to, and creates it for the app user.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PROMETHEUS_MULTIPROC_DIR=/var/lib/clearhouse/metrics" in dockerfile
