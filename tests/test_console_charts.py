"""The console's SVG charts (console/charts.py) and the models page's pure helpers: fast."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from console import charts
from console.pages.models import (
    NOTICES,
    FormErrors,
    changed_fields,
    form_values,
    format_interval,
    model_of,
    model_page,
    parse_interval,
)
from console.web import Viewer, render
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.workflows.v1 import workflows_pb2 as wpb

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _circles(root: ET.Element) -> list[tuple[float, float]]:
    return [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in root.iter(f"{SVG}circle")]


def test_scale_maps_domain_ends_onto_range_ends_and_a_flat_domain_to_the_middle() -> None:
    scale = charts.Scale(0, 10, 100, 200)
    assert (scale(0), scale(5), scale(10)) == (100, 150, 200)
    inverted = charts.Scale(0, 10, 200, 100)
    assert (inverted(0), inverted(10)) == (200, 100)
    assert charts.Scale(3, 3, 100, 200)(3) == 150


def test_value_scale_starts_at_zero_and_all_zeros_still_make_an_axis() -> None:
    assert (charts.value_scale([5, 10], 0, 1).low, charts.value_scale([5, 10], 0, 1).high) == (
        0,
        10,
    )
    assert charts.value_scale([-4, 2], 0, 1).low == -4
    zeros = charts.value_scale([0, 0], 100, 0)
    assert (zeros.low, zeros.high) == (0, 1)


def test_points_are_placed_by_time_and_value_inside_the_plot() -> None:
    svg = charts.line_chart(
        [(T0 + timedelta(hours=2), 50), (T0, 0), (T0 + timedelta(hours=1), 100)],
        chart_id="c",
        title="Rows",
        description="Rows per sync.",
    )
    root = _parse(svg)
    points = _circles(root)
    # Sorted by time: x grows left to right; the greatest value is highest (smallest y).
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    ys = [y for _, y in points]
    assert ys[1] < ys[2] < ys[0]
    assert min(xs) >= 0 and max(xs) <= charts.WIDTH and min(ys) >= 0 and max(ys) <= charts.HEIGHT
    assert root.find(f"{SVG}polyline") is not None
    assert root.attrib["role"] == "img"
    assert root.attrib["aria-labelledby"] == "c-title c-desc"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text == "Rows" and title.attrib["id"] == "c-title"
    assert desc is not None and desc.attrib["id"] == "c-desc"
    assert "3 points" in (desc.text or "") and "greatest 100" in (desc.text or "")
    assert "style=" not in svg and "<script" not in svg


def test_empty_input_says_there_is_no_data() -> None:
    root = _parse(charts.line_chart([], chart_id="e", title="Rows", description="Rows."))
    assert _circles(root) == []
    assert root.find(f"{SVG}polyline") is None
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "No data yet" in (desc.text or "")


def test_one_point_sits_in_the_middle_without_a_line() -> None:
    root = _parse(charts.line_chart([(T0, 7)], chart_id="o", title="Rows", description="Rows."))
    assert root.find(f"{SVG}polyline") is None
    ((x, _),) = _circles(root)
    left, right = 64, charts.WIDTH - 16
    assert x == pytest.approx((left + right) / 2)
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "1 point " in (desc.text or "")


def test_labels_ids_and_units_are_escaped() -> None:
    svg = charts.line_chart(
        [(T0, 1), (T0 + timedelta(minutes=5), 2)],
        chart_id='x" onload="alert(1)',
        title="<script>alert(1)</script>",
        description="a & b",
        unit="<b>",
    )
    assert "<script>" not in svg and "<b>" not in svg and 'onload="' not in svg
    root = _parse(svg)  # still well-formed
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "<script>alert(1)</script>"
    assert re.search(r"a &amp; b", svg)


def test_intervals_read_and_written_as_the_cli_does() -> None:
    assert [parse_interval(t) for t in ("", "off", "90", "15m", "6H", "1d")] == [
        0,
        0,
        90,
        900,
        21600,
        86400,
    ]
    assert parse_interval("every day") is None
    assert [format_interval(s) for s in (0, 90, 900, 21600, 86400)] == [
        "",
        "90s",
        "15m",
        "6h",
        "1d",
    ]


def test_the_editor_maps_violations_to_its_fields_and_sends_only_what_changed() -> None:
    errors = FormErrors()
    errors.add("model.name", "bad")
    errors.add("model.primary_key[1]", "not an identifier")
    errors.add("model.schedule_interval", "too short")
    errors.add("update_mask", "odd")
    assert errors.fields == {
        "name": ["bad"],
        "primary_key": ["not an identifier"],
        "schedule": ["too short"],
    }
    assert errors.general == ["update_mask: odd"]

    before = mpb.Model(
        id="m",
        name="orders",
        source_connection_id="s",
        sql="select 1",
        destination_connection_id="d",
        destination_table="a.orders",
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
    )
    values = form_values(before) | {"sql": "select 2", "schedule": "6h", "cursor_column": "x"}
    found = FormErrors()
    after = model_of(values, found, "m")
    assert not found
    # A full refresh sends no cursor even when one was typed.
    assert after.cursor_column == ""
    assert changed_fields(before, after) == ["sql", "schedule_interval"]
    bad = FormErrors()
    model_of(values | {"schedule": "soon"}, bad)
    assert list(bad.fields) == ["schedule"]


def _run(state: opb.RunState, minute: int, rows: int = 0, *, changed: bool = False) -> opb.Run:
    run = opb.Run(id=f"r{minute}", kind=opb.RUN_KIND_SYNC, state=state, model_id="m")
    run.start_time.FromDatetime(T0 + timedelta(minutes=minute))
    if state != opb.RUN_STATE_RUNNING:
        run.duration_ms = 1500
        run.outcome_category = "ok" if state == opb.RUN_STATE_SUCCEEDED else "query_error"
        run.sync.CopyFrom(wpb.SyncResult(rows=rows, bytes=2048, schema_fingerprint="f" * 40))
        run.sync.schema_changed = changed
    return run


def test_the_model_page_shows_a_running_run_as_running_and_charts_only_finished_ones() -> None:
    model = mpb.Model(
        id="m",
        name="orders",
        source_connection_id="s",
        sql="select 1",
        destination_connection_id="d",
        destination_table="a.orders",
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
    )
    runs = [
        _run(opb.RUN_STATE_RUNNING, 20),
        _run(opb.RUN_STATE_SUCCEEDED, 10, 1234, changed=True),
        _run(opb.RUN_STATE_SUCCEEDED, 0, 1000),
    ]
    context = model_page(model, runs, {"s": "shop", "d": "warehouse"}, NOTICES["sync_started"])
    # The notice stays while a sync runs; once none does, the runs table says how it ended.
    assert context["notice"] == NOTICES["sync_started"]
    assert model_page(model, runs[1:], {}, NOTICES["sync_started"])["notice"] is None
    request = Request({"type": "http", "method": "GET", "path": "/models/m", "headers": []})
    viewer = Viewer(token="t", org_id="o", user_id="u", email="a@b.example", role="admin")
    html = bytes(render(request, "model.html", viewer, **context).body).decode()
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:]
    assert len(rows) == 3
    assert ">running<" in rows[0] and "1,234" not in rows[0]
    assert ">succeeded<" in rows[1] and "1,234" in rows[1] and "schema changed" in rows[1]
    assert "ffffffffffff<" in rows[1] and "2.0 KB" in rows[1] and "1.5 s" in rows[1]
    assert "schema changed" not in rows[2]
    assert "Reload this page" in html
    # Two finished syncs: two points per chart, no point for the running one.
    assert html.count("<circle") == 4
    assert "shop" in html and "warehouse" in html
