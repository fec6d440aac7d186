"""Playwright driving Debian's Chromium (/usr/bin/chromium) against the live test server, and a real worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.observability.procs import Process, service_env, start_worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server's request threads outlive the test; they must not keep database sessions open.
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE", 0)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(
    browser: Browser, live_server: Any, username: str, password: str, viewport: ViewportSize | None = None
) -> Page:
    """A page signed in to the admin as ``username``."""
    page = browser.new_page(viewport=viewport) if viewport else browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    return page


@pytest.fixture
def real_worker() -> Iterator[Callable[[], Process]]:
    """Starts ``manage.py worker`` against the test database when called; stopped (SIGTERM) after the test."""
    started: list[Process] = []

    def start() -> Process:
        started.append(start_worker(service_env(OTEL_SDK_DISABLED="true")))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def overflow(page: Page) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))
