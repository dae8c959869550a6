"""End to end: the web console in Debian's Chromium against the real stack and agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from console.config import ConsoleConfig
from console.server import ConsoleServer
from sevvo.runtime.grpc_server import TlsFiles
from tests.browser import chromium, new_context, screenshot_path
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant


@pytest.fixture(scope="module")
def console(e2e: EndToEnd, background_loop: BackgroundLoop) -> Iterator[ConsoleServer]:
    """The console on a free loopback port, calling the worker's stack."""
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
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def tenant(e2e: EndToEnd) -> Tenant:
    return e2e.new_tenant()


def sign_in(page: Page, console: ConsoleServer, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{console.url}/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_shows_the_user_and_sign_out_revokes_the_session(
    console: ConsoleServer, browser: Browser, tenant: Tenant
) -> None:
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, console, tenant.admin_email, "wrong password, surely")
    expect(page.get_by_role("alert")).to_be_visible()
    sign_in(page, console, tenant.admin_email)
    expect(page.get_by_test_id("viewer")).to_contain_text(tenant.admin_email)
    expect(page.get_by_test_id("viewer")).to_contain_text("admin")
    page.screenshot(path=screenshot_path("sign-in-done"))
    cookies = context.cookies()
    assert [c["name"] for c in cookies] == ["__Host-sevvo_session"]
    session = cookies[0]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    # The old cookie, replayed, is refused: the session was revoked at auth.
    context.add_cookies([session])  # type: ignore[list-item]
    page.goto(f"{console.url}/connections")
    expect(page).to_have_url(f"{console.url}/sign-in?next=/connections")
    context.close()
