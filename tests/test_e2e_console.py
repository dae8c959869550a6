"""End to end: the web console in Debian's Chromium against the real stack and agent."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from console.server import ConsoleServer
from tests.browser import new_context, screenshot_path
from tests.plugins.console import sign_in
from tests.plugins.dev_stack import EndToEnd, Tenant


@pytest.fixture(scope="module")
def tenant(e2e: EndToEnd) -> Tenant:
    return e2e.new_tenant()


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
