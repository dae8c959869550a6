"""End to end: models in the web console, in Debian's Chromium, on the real stack and agent.

The editor shows the services' field violations next to their fields and creates nothing;
a valid model is synced by the tenant's agent from a small source table into a destination
database, and its page shows the run's row count and the charts; deletion asks first.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect
from psycopg import sql

from console.server import ConsoleServer
from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import models_pb2 as mpb
from tests.browser import screenshot_path
from tests.plugins.console import signed_in_page
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.postgres import with_dbname

ROWS = 37
# Synced within this many seconds, or the test fails (the agent polls; a sync of 37 rows is
# far quicker).
SYNC_DEADLINE_SECONDS = 60


@dataclass
class Shop:
    """A tenant with its agent, a source table of ROWS rows and an empty destination."""

    tenant: Tenant
    destination_url: str
    source_name: str
    destination_name: str


def _database(admin: str, database: str, owner: str, password: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("create database {} owner {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
    return with_dbname(admin, database)


@pytest.fixture(scope="module")
def shop(e2e: EndToEnd, tls_source_pg: EmbeddedPostgres) -> Iterator[Shop]:
    tenant = e2e.new_tenant()
    suffix = uuid.uuid4().hex[:10]
    names = {
        "source": f"shop_{suffix}",
        "destination": f"warehouse_{suffix}",
        "reader": f"reader_{suffix}",
        "writer": f"writer_{suffix}",
        "owner": f"owner_{suffix}",
    }
    passwords = {role: secrets.token_urlsafe(18) for role in ("reader", "writer", "owner")}
    admin = tls_source_pg.url
    try:
        source_url = _database(admin, names["source"], names["owner"], passwords["owner"])
        with psycopg.connect(source_url, autocommit=True) as conn:
            conn.execute("create table orders (id bigint primary key, note text)")
            conn.execute(
                "insert into orders select g, 'order <' || g || '>' from generate_series(1, %s) g",
                (ROWS,),
            )
            conn.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(names["reader"]), sql.Literal(passwords["reader"])
                )
            )
            conn.execute(
                sql.SQL("grant select on orders to {}").format(sql.Identifier(names["reader"]))
            )
        destination_url = _database(
            admin, names["destination"], names["writer"], passwords["writer"]
        )
        stub = e2e.connections(tenant.admin_token)
        for label, database, role in (
            ("shop", names["source"], "reader"),
            ("warehouse", names["destination"], "writer"),
        ):
            stub.CreateConnection(
                cpb.CreateConnectionRequest(
                    display_name=label,
                    fields=cpb.PostgresFields(
                        host="localhost",
                        port=tls_source_pg.port,
                        database=database,
                        username=names[role],
                        password=passwords[role],
                        ssl_mode=cpb.SSL_MODE_REQUIRE,
                    ),
                )
            )
        yield Shop(tenant, destination_url, "shop", "warehouse")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for database in (names["source"], names["destination"]):
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(
                        sql.Identifier(database)
                    )
                )
            for role in ("reader", "writer", "owner"):
                conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(names[role])))


def _models(e2e: EndToEnd, shop: Shop) -> list[mpb.Model]:
    listed = e2e.models(shop.tenant.admin_token).ListModels(mpb.ListModelsRequest())
    return list(listed.models)


def _fill(page: Page, name: str, sql_text: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Source connection", exact=True).select_option(label="shop")
    page.get_by_label("SQL", exact=True).fill(sql_text)
    page.get_by_label("Destination connection", exact=True).select_option(label="warehouse")
    page.get_by_label("Destination table", exact=True).fill("analytics.orders")


def test_a_model_is_refused_field_by_field_then_created_synced_and_deleted(
    console: ConsoleServer, browser: Browser, e2e: EndToEnd, shop: Shop
) -> None:
    context, page = signed_in_page(browser, console, shop.tenant.admin_email)
    page.goto(f"{console.url}/models/new")

    # Invalid: the name and the statement are refused, each next to its field, values kept.
    _fill(page, "Orders Daily!", "delete from orders")
    page.get_by_role("button", name="Create model").click()
    name = page.get_by_label("Name", exact=True)
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_accessible_description(
        "Lower-case letters, digits, - and _, starting with a letter, as in orders-daily."
        " must be 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter"
    )
    sql_field = page.get_by_label("SQL", exact=True)
    expect(sql_field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#sql-error")).to_be_visible()
    expect(sql_field).to_have_value("delete from orders")
    expect(page.get_by_label("Destination table", exact=True)).not_to_have_attribute(
        "aria-invalid", "true"
    )
    expect(page.get_by_label("Destination table", exact=True)).to_have_value("analytics.orders")
    assert _models(e2e, shop) == []
    page.screenshot(path=screenshot_path("model-editor-errors"), full_page=True)

    # Preview the corrected query through the agent: the rows show under the editor, escaped.
    name.fill("orders-daily")
    sql_field.fill("select id, note from orders order by id")
    page.get_by_role("button", name="Preview this query").click()
    preview = page.locator("#preview")
    expect(preview.get_by_role("status")).to_have_text(
        f"{ROWS} rows. Nothing was written anywhere."
    )
    expect(preview.locator("tbody tr").first).to_contain_text("order <1>")
    expect(name).to_have_value("orders-daily")
    page.screenshot(path=screenshot_path("model-editor"), full_page=True)

    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("status")).to_have_text("Model created.")
    (created,) = _models(e2e, shop)
    assert created.name == "orders-daily" and created.load_mode == mpb.LOAD_MODE_FULL_REFRESH
    expect(page).to_have_url(f"{console.url}/models/{created.id}?notice=created")

    # Sync now: the run is listed at once, then (reloading) completes with its row count.
    page.get_by_role("button", name="Sync now").click()
    expect(page).to_have_url(f"{console.url}/models/{created.id}?notice=sync_started")
    runs = page.get_by_test_id("runs")
    expect(runs.locator("tbody tr")).to_have_count(1)
    give_up = time.monotonic() + SYNC_DEADLINE_SECONDS
    while "succeeded" not in runs.locator("tbody tr").first.inner_text():
        assert time.monotonic() < give_up, runs.inner_text()
        assert "failed" not in runs.inner_text() and "timed out" not in runs.inner_text()
        page.reload()
    row = runs.locator("tbody tr").first
    expect(row.locator("td").nth(3)).to_have_text(str(ROWS))
    expect(row.locator("td").nth(2)).to_have_text("ok")
    rows_chart = page.get_by_role("img", name="Rows loaded per sync")
    expect(rows_chart).to_be_visible()
    expect(rows_chart.locator("circle")).to_have_count(1)
    expect(page.get_by_role("img", name="Duration of each sync")).to_be_visible()
    page.screenshot(path=screenshot_path("model-runs"), full_page=True)
    with psycopg.connect(shop.destination_url) as conn:
        loaded = conn.execute("select count(*) from analytics.orders").fetchone()
    assert loaded == (ROWS,)

    # Edit: only the schedule changes (the update's mask), the rest stays as it was.
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.get_by_label("SQL", exact=True)).to_have_value(
        "select id, note from orders order by id"
    )
    page.get_by_label("Schedule (optional)").fill("6h")
    page.get_by_role("button", name="Save model").click()
    expect(page.get_by_role("status")).to_have_text("Model saved.")
    expect(page.get_by_role("definition").filter(has_text="every 6h")).to_be_visible()
    (edited,) = _models(e2e, shop)
    assert edited.schedule_interval.seconds == 6 * 3600
    assert (edited.name, edited.sql) == (created.name, created.sql)

    # The list shows it; deletion asks first, then it is gone.
    page.goto(f"{console.url}/models")
    listed = page.get_by_role("row").filter(has_text="orders-daily")
    expect(listed).to_contain_text("shop → warehouse analytics.orders")
    expect(listed).to_contain_text("succeeded")
    listed.get_by_role("link", name="orders-daily").click()
    page.get_by_role("link", name="Delete", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete model orders-daily?")
    assert len(_models(e2e, shop)) == 1
    page.get_by_role("button", name="Delete model").click()
    expect(page.get_by_role("status")).to_have_text(
        "Model deleted. Its destination table and its past runs stay."
    )
    expect(page.get_by_text("No models yet.")).to_be_visible()
    assert _models(e2e, shop) == []
    context.close()
