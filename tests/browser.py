"""Debian's Chromium, driven headless by Playwright, for the console's browser tests.

Playwright's own browser downloads are never used: the browser is /usr/bin/chromium from the
OS's packages (``make test`` installs it when missing, see scripts/ensure_chromium.sh). A
test that needs it fails, never skips, when it is absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium dials Google's hosts at every start, and
# this machine's closed network refuses each (slow, and noise in its log).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "console-screenshots"


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium from the OS's packages."""
    executable = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    assert executable, "Chromium is not installed: run `make test` (it installs it) or apt"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser, *, width: int = 1280, height: int = 900) -> BrowserContext:
    """A fresh profile (no cookies, no storage) at the given window size. The console's
    certificate comes from the dev CA, which this profile does not hold: certificate errors
    are accepted, HTTPS (and so the Secure cookie) still applies."""
    return browser.new_context(
        viewport={"width": width, "height": height}, ignore_https_errors=True
    )


def screenshot_path(name: str) -> Path:
    """Where a page's screenshot is kept as a test artifact (build/console-screenshots/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
