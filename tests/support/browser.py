"""A real browser for the page tests: the system's chromium driven by Playwright's sync API.

One browser per session (`browser`), a fresh context and page per test (`watched_page`) that
records everything a user would never want to see: console errors, uncaught exceptions, failed
requests, 4xx/5xx answers, and dialogs (an `alert()` from injected markup would be one).

The binary: TASKMON_TEST_CHROMIUM when set (it must exist), else /usr/bin/chromium, else
`chromium` on PATH. Playwright drives it as it is: no `playwright install`, no download. Tests
are skipped only when no such binary exists (`apt-get install chromium`).

Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    Response,
    sync_playwright,
)

CHROMIUM_ENV = "TASKMON_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Quiet: no update checks, sync or first-run work that could make requests of its own.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "reports" / "monitor"


def chromium_executable() -> str | None:
    """The chromium binary to drive, or None when there is none. Raises RuntimeError when
    TASKMON_TEST_CHROMIUM names a file that does not exist (a typo is not a skip)."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if not Path(configured).is_file():
            raise RuntimeError(f"{CHROMIUM_ENV}={configured} does not exist")
        return configured
    if Path(DEFAULT_CHROMIUM).is_file():
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            f"no chromium binary: install it (apt-get install chromium) or set {CHROMIUM_ENV}"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class WatchedPage:
    """A page and what went wrong on it. `expected(status, path)` names answers the test
    expects (a 404 of an endpoint this build lacks): they are neither failures nor errors."""

    page: Page
    expected: Callable[[int, str], bool] = lambda status, path: False
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    _expected_urls: set[str] = field(default_factory=set)

    def watch(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)
        self.page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        if url in self._expected_urls and message.text.startswith("Failed to load resource"):
            return  # Chromium's own line for an answer the test expects
        self.console_errors.append(f"{message.text} ({url})")

    def _request_failed(self, request: Request) -> None:
        # A stream or poll cut by the test closing the page is not the page's failure.
        if request.failure != "net::ERR_ABORTED":
            self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status < 400:
            return
        if self.expected(response.status, urlsplit(response.url).path):
            self._expected_urls.add(response.url)
            return
        self.bad_responses.append(f"{response.status} {response.request.method} {response.url}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def problems(self) -> dict[str, list[str]]:
        """Everything recorded that should not have happened, by kind (empty when clean)."""
        found = {
            "console errors": self.console_errors,
            "uncaught exceptions": self.page_errors,
            "failed requests": self.failed_requests,
            "4xx/5xx answers": self.bad_responses,
            "dialogs": self.dialogs,
        }
        return {kind: list(items) for kind, items in found.items() if items}

    def screenshot(self, name: str) -> Path:
        """A full-page screenshot in reports/monitor/<name>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def watched_page(browser: Browser) -> Iterator[WatchedPage]:
    """A page in a fresh context (1280x900, light scheme), watched from its first request."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    try:
        watched = WatchedPage(context.new_page())
        watched.watch()
        yield watched
    finally:
        context.close()
