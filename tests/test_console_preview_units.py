"""The console's preview, leases and rotation pages: their pure parts and templates."""

from __future__ import annotations

import pytest

from console.pages.leases import REVOCABLE, STATE_NAMES, group_by_role
from console.pages.preview import Marker, failure_of, locate, normalized_sql
from console.pages.rotation import interval_hours
from console.web import Viewer, _templates
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.workflows.v1 import workflows_pb2 as wpb


@pytest.mark.parametrize(
    ("sql", "position", "marker"),
    [
        ("delete from t", 1, Marker("", "d", "elete from t", 1, 1)),
        ("select 1;\n  delete", 13, Marker("select 1;\n  ", "d", "elete", 2, 3)),
        ("select 'é' from", 17, Marker("select 'é' from", " ", "", 1, 16)),
        ("select 1\nfrom", 9, Marker("select 1", " ", "\nfrom", 1, 9)),
    ],
)
def test_locate_marks_the_character_and_its_line_and_column(
    sql: str, position: int, marker: Marker
) -> None:
    assert locate(sql, position) == marker


def test_no_position_marks_nothing() -> None:
    assert locate("select", 0) is None


def test_browsers_line_breaks_are_the_statements() -> None:
    assert normalized_sql("select 1\r\nfrom t\r\n") == "select 1\nfrom t\n"


def test_failure_names_the_category_and_hint() -> None:
    rejected = opb.PreviewQueryResponse(
        result=wpb.PreviewQueryResult(
            category=wpb.PREVIEW_CATEGORY_QUERY_REJECTED, message="no", position=3
        )
    )
    failure = failure_of(rejected)
    assert failure is not None
    assert (failure.category, failure.message) == ("query_rejected", "no")
    assert failure.hint
    no_agent = opb.PreviewQueryResponse(
        run=opb.Run(outcome_category="agent_unavailable"),
        result=wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OTHER),
    )
    failure = failure_of(no_agent)
    assert failure is not None and failure.category == "agent_unavailable" and failure.message
    ok = opb.PreviewQueryResponse(result=wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK))
    assert failure_of(ok) is None


def test_leases_are_grouped_by_role_default_first_revoked_counted() -> None:
    leases = [
        cpb.Lease(id="1", role="readonly", state=cpb.LEASE_STATE_ACTIVE),
        cpb.Lease(id="2", role="", state=cpb.LEASE_STATE_REVOKED),
        cpb.Lease(id="3", role="default", state=cpb.LEASE_STATE_CREATING),
        cpb.Lease(id="4", role="analytics", state=cpb.LEASE_STATE_REVOKED),
    ]
    groups = group_by_role(leases, with_revoked=False)
    assert [(g.role, [x.id for x in g.leases], g.revoked) for g in groups] == [
        ("default", ["3"], 1),
        ("analytics", [], 1),
        ("readonly", ["1"], 0),
    ]
    shown = group_by_role(leases, with_revoked=True)
    assert [[x.id for x in g.leases] for g in shown] == [["2", "3"], ["4"], ["1"]]


@pytest.mark.parametrize(
    ("text", "hours"),
    [("24", 24), (" 1 ", 1), ("8760", 8760), ("0", None), ("8761", None), ("1.5", None)],
)
def test_interval_is_whole_hours_within_bounds(text: str, hours: int | None) -> None:
    assert interval_hours(text) == hours


_VIEWER = Viewer(token="t", org_id="o", user_id="u", email="a@b.example", role="admin")


def _preview_page(**context: object) -> str:
    return _templates.get_template("preview.html").render(
        viewer=_VIEWER,
        path="/connections/c/preview",
        connection=cpb.Connection(id="c", display_name="shop"),
        max_rows=100,
        **context,
    )


def test_cells_are_text_nulls_and_cuts_are_marked_and_truncation_said() -> None:
    result = wpb.PreviewQueryResult(
        category=wpb.PREVIEW_CATEGORY_OK,
        columns=[wpb.PreviewColumn(name="<b>x</b>", type_name="text")],
        rows=[
            wpb.PreviewRow(cells=[wpb.PreviewCell(text="<script>alert(1)</script>")]),
            wpb.PreviewRow(cells=[wpb.PreviewCell(is_null=True)]),
            wpb.PreviewRow(cells=[wpb.PreviewCell(text="y" * 1024, truncated=True)]),
        ],
        truncated=True,
    )
    page = _preview_page(sql="select 1", result=result)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert '<td class="null">NULL</td>' in page
    assert '<td class="cut"' in page
    assert "more rows than the 3 shown" in page


def test_a_rejection_keeps_the_sql_and_marks_the_position() -> None:
    sql = "select 1;\n  delete <x>"
    page = _preview_page(
        sql=sql,
        failure=failure_of(
            opb.PreviewQueryResponse(
                result=wpb.PreviewQueryResult(
                    category=wpb.PREVIEW_CATEGORY_QUERY_REJECTED, message="second", position=13
                )
            )
        ),
        marker=locate(sql, 13),
    )
    assert 'aria-invalid="true"' in page
    assert "select 1;\n  delete &lt;x&gt;</textarea>" in page
    assert "<mark>d</mark>elete &lt;x&gt;</pre>" in page
    assert "line 2, column 3" in page


def _leases_page(role: str) -> str:
    viewer = Viewer(token="t", org_id="o", user_id="u", email="a@b.example", role=role)
    lease = cpb.Lease(id="l1", role_name="sevvo_dyn_x", state=cpb.LEASE_STATE_ACTIVE)
    return _templates.get_template("leases.html").render(
        viewer=viewer,
        path="/connections/c/leases",
        connection=cpb.Connection(id="c", display_name="shop"),
        dynamic=True,
        groups=group_by_role([lease], with_revoked=False),
        live=1,
        with_revoked=False,
        state_names=STATE_NAMES,
        revocable=REVOCABLE,
    )


def test_only_admins_see_revoke_forms_and_each_carries_the_csrf_token() -> None:
    admin = _leases_page("admin")
    assert admin.count('name="csrf_token"') == 3  # sign out, revoke all, revoke one
    assert 'name="lease_id" value="l1"' in admin
    member = _leases_page("member")
    assert "Revoke" not in member
    assert "sevvo_dyn_x" in member
