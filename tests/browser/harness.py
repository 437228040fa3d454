"""What the browser tests share: Debian's Chromium driven by Playwright (no browser download), the
app served on a real port (the browser is another client), logging in through the real form, and
the checks every page must pass at a phone's and a laptop's size. The fixtures built on these
(`browser`, `served`, `fresh_app`) are in conftest.py."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright
from werkzeug.serving import make_server

from tests import factories

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def chromium_path() -> str:
    for candidate in (
        os.environ.get("CHROMIUM_PATH"),
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("Debian's chromium is not installed: `make test` installs it")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium that never tries outside hosts (this network refuses them)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 (its PUBLIC_BASE_URL set to it); yields that base URL.
    test-artifacts/ exists for the screenshots."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app.config["PUBLIC_BASE_URL"] = base
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield base
    finally:
        server.shutdown()
        thread.join(timeout=5)


def new_page(browser: Any, viewport: dict[str, int], *, javascript: bool = True) -> Page:
    """A page in a fresh context (no cookies) of this size."""
    context = browser.new_context(viewport=viewport, java_script_enabled=javascript)
    return context.new_page()  # type: ignore[no-any-return]


def failed_requests(page: Page) -> list[str]:
    """A list that fills with every response of 400 or more the page gets from now on."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return failed


def open_watched(
    browser: Any, viewport: dict[str, int], *, javascript: bool = True
) -> tuple[Page, list[str]]:
    """A fresh page of this size, and the list of its failed requests (see failed_requests)."""
    page = new_page(browser, viewport, javascript=javascript)
    return page, failed_requests(page)


def log_in(page: Page, base: str, email: str) -> None:
    """Log in through the login form with the factories' password."""
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def no_sideways_scroll(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width
