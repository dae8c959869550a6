"""End to end: the console's deployments and audit pages in Debian's Chromium, against the real
stack and a real agent.

A new deployment's token is on the page that answers the form once, and nowhere after;
revoking the tenant's deployment goes through a confirmation page and shows it revoked (that
its agent then exits is tests/test_e2e_console_story.py's to show); the audit trail lists
both, narrows to a filter, and exports them as JSON Lines.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid

import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from playwright.sync_api import Error as PlaywrightError

from console.server import ConsoleServer
from sevvo.runtime import deployment_token
from tests.browser import screenshot_path
from tests.plugins.console import signed_in_page
from tests.plugins.dev_stack import EndToEnd, Tenant


@pytest.fixture(scope="module")
def tenant(e2e: EndToEnd) -> Tenant:
    return e2e.new_tenant()


def _row(page: Page, deployment_id: str) -> Locator:
    return page.get_by_test_id(f"deployment-{deployment_id}")


def _actions(page: Page) -> list[str]:
    return [a.strip() for a in page.get_by_test_id("audit-action").all_inner_texts()]


def test_a_deployment_token_is_shown_once_revoking_asks_first_and_audit_shows_both(
    console: ConsoleServer, browser: Browser, tenant: Tenant
) -> None:
    assert tenant.agent is not None
    context, page = signed_in_page(browser, console, tenant.admin_email)
    page.goto(f"{console.url}/deployments")
    expect(_row(page, tenant.deployment_id)).to_contain_text("active")

    # A new deployment: its token is on the answer to the form, once, and works.
    name = f"console-{uuid.uuid4().hex[:8]}"
    page.get_by_label("Name").fill(name)
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url == f"{console.url}/deployments"
    ) as answer:
        page.get_by_role("button", name="Create deployment").click()
    assert answer.value.status == 200
    assert answer.value.headers["cache-control"] == "no-store"
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Deployment {name} created")
    expect(page.get_by_text("it will never be shown again")).to_be_visible()
    token = page.get_by_test_id("deployment-token").inner_text().strip()
    created_id = deployment_token.unwrap(token).deployment_id
    expect(page.get_by_text(created_id, exact=True)).to_be_visible()
    assert page.content().count(token) == 1
    expect(page.get_by_role("button", name="Copy")).to_have_attribute(
        "data-copy", "deployment-token"
    )

    # Nowhere after: not in the list, not in the browser's storage, not by going back.
    page.goto(f"{console.url}/deployments")
    expect(_row(page, created_id)).to_contain_text(name)
    expect(_row(page, created_id)).to_contain_text("active")
    # The new deployment's agent never ran; the tenant's has exchanged its token.
    expect(_row(page, created_id).get_by_test_id("last-seen")).to_have_text("never")
    expect(_row(page, tenant.deployment_id).get_by_test_id("last-seen")).to_contain_text("UTC")
    assert token not in page.content()
    assert page.evaluate("Object.keys(localStorage).length") == 0
    assert page.evaluate("Object.keys(sessionStorage).length") == 0
    # Back to the form's answer: never kept (no-store), so at most the form is asked again.
    with contextlib.suppress(PlaywrightError):
        page.go_back()
    assert token not in page.content()

    # Revoking the tenant's deployment, through its confirmation page.
    page.goto(f"{console.url}/deployments")
    _row(page, tenant.deployment_id).get_by_role("link", name="Revoke").click()
    expect(page).to_have_url(f"{console.url}/deployments/{tenant.deployment_id}/revoke")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Revoke deployment")
    page.get_by_role("button", name="Revoke deployment").click()
    expect(page).to_have_url(f"{console.url}/deployments?notice=revoked")
    expect(page.get_by_role("status")).to_contain_text("The deployment is revoked")
    expect(_row(page, tenant.deployment_id)).to_contain_text("revoked")
    expect(_row(page, tenant.deployment_id).get_by_role("link", name="Revoke")).to_have_count(0)
    expect(_row(page, created_id)).to_contain_text("active")
    page.screenshot(path=screenshot_path("deployments"), full_page=True)

    # The audit trail has both, newest first; a filter narrows it to one deployment's.
    page.goto(f"{console.url}/audit")
    actions = _actions(page)
    assert actions.index("deployment.revoke") < actions.index("deployment.create"), actions
    page.get_by_label("Action").fill("deployment.")
    page.get_by_label("Target ID").fill(tenant.deployment_id)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(
        re.compile(rf"/audit\?action=deployment\.&actor=&target={tenant.deployment_id}&")
    )
    expect(page.get_by_test_id("audit-action")).to_have_text(
        ["deployment.revoke", "deployment.create"]
    )
    expect(page.get_by_test_id("audit-event").first).to_contain_text(tenant.admin_email)
    page.screenshot(path=screenshot_path("audit"), full_page=True)

    # The export: every page of the filtered events, one JSON object a line.
    export = page.request.get(f"{console.url}/audit/export?action=deployment.")
    assert export.status == 200, export.text()
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert export.headers["content-disposition"] == 'attachment; filename="sevvo-audit.jsonl"'
    events = [json.loads(line) for line in export.text().splitlines()]
    assert {(e["action"], e["target_id"]) for e in events} == {
        ("deployment.create", tenant.deployment_id),
        ("deployment.revoke", tenant.deployment_id),
        ("deployment.create", created_id),
    }
    assert all(e["outcome"] == "AUDIT_OUTCOME_SUCCESS" for e in events), events
    assert token not in export.text()

    # (That the revoked deployment's agent exits is the story's to show:
    # tests/test_e2e_console_story.py.)
    context.close()
