"""Browser tests: Playwright (sync API) driving Debian's headless Chromium (`chromium`, found on
PATH) against pytest-django's live server on 127.0.0.1. Skipped, with the reason, when chromium
is missing, except in CI (the `CI` environment variable set), where a missing browser fails the
run instead (`make test` installs it; see the Makefile).

Screenshots go to a temporary folder; `UPDATE_SCREENSHOTS=1` writes them to docs/screenshots/
(the ones the README shows), so an ordinary run leaves the checkout clean."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
COMMITTED_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (Playwright)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM or not any("browser" in item.keywords for item in items):
        return
    missing = ("chromium is not on PATH: install Debian's chromium package "
               "(`apt-get install -y chromium`, as `make test` does)")
    if os.environ.get("CI"):
        raise pytest.UsageError(f"{missing}; CI must run the browser tests.")
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save screenshots: docs/screenshots/ with UPDATE_SCREENSHOTS=1, else a
    temporary folder (so a test run does not rewrite committed files)."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        COMMITTED_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return COMMITTED_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session")
def live_server(request: pytest.FixtureRequest):
    """pytest-django's live server, bound to 127.0.0.1 only (its default is `localhost`, which
    may also listen on other interfaces)."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def browser_page(live_server, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A page in a fresh Chromium profile (a new user-data-dir per test: no cookies shared)."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on the test's thread, so Django would take the
    # test's (synchronous) ORM calls for async code; this test process only, never the server.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900})
        context.set_default_timeout(15_000)
        # The admin's app sidebar starts folded: the lists and the timeline get the width.
        context.add_init_script(
            "window.localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
            # The test's ORM calls ran while Playwright's loop was current, so Django kept
            # their connection apart; close it here or it outlives the test database.
            connections.close_all()
