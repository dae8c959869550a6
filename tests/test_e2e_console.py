"""End to end: the web console in Debian's Chromium against the real stack and agent."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from console.server import ConsoleServer
from sevvo.auth.v1 import deployments_pb2
from tests.browser import new_context, screenshot_path
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.console import sign_in, signed_in_page
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
    # With the keyboard alone: Tab to the email field, type, Tab, type, Enter.
    page.goto(f"{console.url}/sign-in")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "email":
            break
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.type(tenant.admin_email)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("viewer")).to_contain_text(tenant.admin_email)
    expect(page.get_by_test_id("viewer")).to_contain_text("admin")
    org_name = tenant.admin_email.split("@", 1)[1].removesuffix(".example")
    expect(page.get_by_test_id("org")).to_contain_text(org_name)
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


def test_state_changes_without_the_sessions_csrf_token_or_from_another_site_are_refused(
    console: ConsoleServer, browser: Browser, tenant: Tenant
) -> None:
    context, page = signed_in_page(browser, console, tenant.admin_email)
    other_context, other_page = signed_in_page(browser, console, tenant.admin_email)
    other_csrf = other_page.locator("input[name=csrf_token]").first.input_value()
    own_csrf = page.locator("input[name=csrf_token]").first.input_value()
    assert other_csrf != own_csrf  # bound to each session
    forms: list[dict[str, str | float | bool]] = [
        {},
        {"csrf_token": other_csrf},
        {"csrf_token": "0" * 64},
    ]
    for form in forms:
        refused = page.request.post(f"{console.url}/sign-out", form=form)
        assert refused.status == 403, form
        assert "not sent from this page" in refused.text()
    from_elsewhere = page.request.post(
        f"{console.url}/sign-out",
        form={"csrf_token": own_csrf},
        headers={"origin": "https://attacker.example"},
    )
    assert from_elsewhere.status == 403 and "another site" in from_elsewhere.text()
    # None of those signed the session out: it still shows the console.
    page.goto(f"{console.url}/connections")
    expect(page.get_by_test_id("viewer")).to_contain_text(tenant.admin_email)
    # With its own token, from its own page, it does.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    other_context.close()
    context.close()


def test_every_page_carries_the_security_headers(
    console: ConsoleServer, browser: Browser, tenant: Tenant
) -> None:
    context, page = signed_in_page(browser, console, tenant.admin_email)
    for path in ("/sign-in", "/connections", "/no-such-page", "/static/console.css"):
        response = page.request.get(f"{console.url}{path}")
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'none'"), path
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        assert "server" not in headers
    context.close()


def test_a_member_sees_no_admin_actions_and_the_services_refuse_them(
    console: ConsoleServer, browser: Browser, e2e: EndToEnd, tenant: Tenant
) -> None:
    member_token = e2e.new_member(tenant)
    context = new_context(browser)
    context.add_cookies(
        [
            {
                "name": "__Host-sevvo_session",
                "value": member_token,
                "url": console.url,
                "secure": True,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page = context.new_page()
    page.goto(f"{console.url}/deployments")
    expect(page.get_by_test_id("viewer")).to_contain_text("(member)")
    expect(page.get_by_test_id(f"deployment-{tenant.deployment_id}")).to_be_visible()
    expect(page.get_by_role("link", name="Revoke")).to_have_count(0)
    expect(page.get_by_role("button", name="Create deployment")).to_have_count(0)
    # Hidden is not refused: the service refuses, and the page says so.
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    refused = page.request.post(
        f"{console.url}/deployments/{tenant.deployment_id}/revoke", form={"csrf_token": csrf}
    )
    assert refused.status == 403, refused.text()
    listed = e2e.deployments(tenant.admin_token).GetDeployment(
        deployments_pb2.GetDeploymentRequest(id=tenant.deployment_id)
    )
    assert listed.state == deployments_pb2.DEPLOYMENT_STATE_ACTIVE
    context.close()
