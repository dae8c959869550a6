"""The console's audit page and export without servers: the filters as the API takes them, the
Next link keeping them, and the export walking every page as the viewer, up to its cap."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from console import security
from console.app import create_app
from console.backend import _bearer
from console.pages import audit
from sevvo.audit.v1 import audit_pb2 as apb
from sevvo.auth.v1 import auth_pb2, users_pb2

TOKEN = "session-token-of-the-viewer"


def _event(n: int) -> apb.AuditEvent:
    event = apb.AuditEvent(
        id=f"e{n}",
        action="deployment.create",
        actor_kind=apb.ACTOR_KIND_USER,
        actor_id="u1",
        actor_email="ada@acme.example",
        target_type="deployment",
        target_id=f"d{n}",
        outcome=apb.AUDIT_OUTCOME_SUCCESS,
        details={"display_name": f"cluster-{n}"},
    )
    event.occur_time.FromSeconds(1_800_000_000 - n)
    return event


@dataclass
class FakeAudit:
    """ListAuditEvents over ``pages`` pages of ``per_page`` events, recording each call."""

    pages: int
    per_page: int = 3
    calls: list[tuple[apb.ListAuditEventsRequest, str | None]] = field(default_factory=list)

    async def ListAuditEvents(
        self, request: apb.ListAuditEventsRequest, timeout: float
    ) -> apb.ListAuditEventsResponse:
        self.calls.append((request, _bearer.get()))
        index = int(request.page_token or "0")
        first = index * self.per_page
        events = [_event(n) for n in range(first, first + self.per_page)]
        more = index + 1 < self.pages
        return apb.ListAuditEventsResponse(
            events=events, next_page_token=str(index + 1) if more else ""
        )


class FakeAuth:
    async def GetCaller(self, request: Any, timeout: float) -> auth_pb2.GetCallerResponse:
        assert _bearer.get() == TOKEN
        return auth_pb2.GetCallerResponse(
            kind=auth_pb2.PRINCIPAL_KIND_USER, org_id="o1", subject_id="u1"
        )


class FakeUsers:
    async def GetUser(self, request: Any, timeout: float) -> users_pb2.User:
        return users_pb2.User(id="u1", email="ada@acme.example", role=users_pb2.USER_ROLE_ADMIN)


@dataclass
class FakeBackend:
    audit: FakeAudit
    auth: FakeAuth = field(default_factory=FakeAuth)
    users: FakeUsers = field(default_factory=FakeUsers)
    call_timeout: float = 5.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def _get(backend: FakeBackend, path: str, query: str = "") -> Answer:
    """One GET through the whole ASGI app, signed in as TOKEN."""
    app = create_app(lambda: backend)  # type: ignore[arg-type, return-value]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"console.test"),
            (b"cookie", f"{security.SESSION_COOKIE}={TOKEN}".encode()),
        ],
        "server": ("console.test", 443),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        requested = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(run())
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    return Answer(start["status"], headers, body)


def test_filters_are_the_apis_fields() -> None:
    filters = audit.filters_of(
        {"action": " deployment. ", "actor": "Ada@Acme.example", "since": "2026-05-01T09:30"}
    )
    assert filters.request.action == "deployment."
    assert (filters.request.actor_email, filters.request.actor_id) == ("Ada@Acme.example", "")
    assert filters.request.start_time.ToDatetime(UTC) == datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    assert not filters.request.HasField("end_time")
    assert filters.query(page_token="p2") == (
        "action=deployment.&actor=Ada%40Acme.example&since=2026-05-01T09%3A30&page_token=p2"
    )
    by_id = audit.filters_of({"actor": "sevvo", "target": "d1", "until": "2026-05-02T00:00+02:00"})
    assert (by_id.request.actor_id, by_id.request.target_id) == ("sevvo", "d1")
    assert by_id.request.end_time.ToDatetime(UTC) == datetime(2026, 5, 1, 22, 0, tzinfo=UTC)


def test_a_time_that_cannot_be_read_is_refused_on_the_form() -> None:
    with pytest.raises(audit.FilterError, match="Until: 'soon' is not a time"):
        audit.filters_of({"until": "soon"})
    backend = FakeBackend(FakeAudit(pages=1))
    answer = _get(backend, "/audit", "action=user.&until=soon")
    assert answer.status == 400
    assert "Until: &#39;soon&#39; is not a time" in answer.body
    assert 'value="user."' in answer.body
    assert backend.audit.calls == []


def test_the_next_link_carries_the_filters_and_the_page_token() -> None:
    backend = FakeBackend(FakeAudit(pages=2))
    answer = _get(backend, "/audit", "action=deployment.&actor=&target=d1")
    assert answer.status == 200
    assert 'href="/audit?action=deployment.&amp;target=d1&amp;page_token=1"' in answer.body
    assert 'href="/audit/export?action=deployment.&amp;target=d1"' in answer.body
    assert answer.body.count('data-testid="audit-event"') == 3
    request, bearer = backend.audit.calls[0]
    assert (request.action, request.target_id, request.page_size) == ("deployment.", "d1", 50)
    assert bearer == TOKEN
    last = _get(backend, "/audit", "action=deployment.&target=d1&page_token=1")
    assert "Next page" not in last.body
    assert 'href="/audit?action=deployment.&amp;target=d1">Newest events' in last.body


def test_the_export_streams_every_page_as_the_viewer() -> None:
    backend = FakeBackend(FakeAudit(pages=3))
    answer = _get(backend, "/audit/export", "action=deployment.")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["content-disposition"] == 'attachment; filename="sevvo-audit.jsonl"'
    assert answer.headers["cache-control"] == "no-store"
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert [line["id"] for line in lines] == [f"e{n}" for n in range(9)]
    assert lines[0]["details"] == {"display_name": "cluster-0"}
    assert lines[0]["actor_kind"] == "ACTOR_KIND_USER"
    assert [(r.page_token, r.action, r.page_size, b) for r, b in backend.audit.calls] == [
        ("", "deployment.", 500, TOKEN),
        ("1", "deployment.", 500, TOKEN),
        ("2", "deployment.", 500, TOKEN),
    ]


def test_the_export_stops_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "EXPORT_LIMIT", 5)
    backend = FakeBackend(FakeAudit(pages=1000))
    answer = _get(backend, "/audit/export")
    assert [json.loads(line)["id"] for line in answer.body.splitlines()] == [
        f"e{n}" for n in range(5)
    ]
    assert len(backend.audit.calls) == 2
