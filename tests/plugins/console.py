"""The web console on the worker's end-to-end stack, and Debian's Chromium to drive it.

Fixtures: ``console`` (a ConsoleServer on a free loopback port, module-scoped, calling the
``e2e`` stack over TLS) and ``browser`` (a headless Chromium for the module). ``sign_in``
signs a fresh browser profile in through the form, as a person would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from console.config import ConsoleConfig
from console.server import ConsoleServer
from sevvo.runtime.grpc_server import TlsFiles
from tests.browser import chromium, new_context
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.dev_stack import EndToEnd


@pytest.fixture(scope="module")
def console(e2e: EndToEnd, background_loop: BackgroundLoop) -> Iterator[ConsoleServer]:
    """The console on a free loopback port, calling the worker's stack as its users."""
    pki = e2e.stack.pki
    server = ConsoleServer(
        ConsoleConfig(
            services_endpoint=e2e.stack.grpc_target,
            tls=TlsFiles(cert=pki.server_cert, key=pki.server_key),
            ca_file=pki.ca_cert,
            host="127.0.0.1",
            port=0,
        )
    )
    background_loop.run(server.start())
    yield server
    background_loop.run(server.stop())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian's) for the module's tests."""
    with chromium() as launched:
        yield launched


def sign_in(page: Page, console: ConsoleServer, email: str, password: str = PASSWORD) -> None:
    """Fills and sends the sign-in form (the outcome is the caller's to check)."""
    page.goto(f"{console.url}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def signed_in_page(
    browser: Browser, console: ConsoleServer, email: str, *, width: int = 1280
) -> tuple[BrowserContext, Page]:
    """A fresh profile signed in as ``email`` (password auth_stack.PASSWORD), on its home."""
    context = new_context(browser, width=width)
    page = context.new_page()
    sign_in(page, console, email)
    expect(page.get_by_test_id("viewer")).to_contain_text(email)
    return context, page
