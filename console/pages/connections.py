"""Connections: the list, the form (create and edit), the detail page, testing and deleting.

The form tests before it saves (the connections service runs the credential test through the
org's agent and saves nothing when it fails): a failed test comes back as the form again,
HTTP 400, with the failure's category, message and the user guide's hint next to the field
that most likely needs fixing. A password is never put back into a page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.backend import Backend
from console.web import (
    Viewer,
    backend_of,
    error_page,
    form_fields,
    http_status,
    notice,
    redirect,
    render,
    signed_in,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import outcomes
from sevvo.runtime.grpc_client import ErrorDetails, error_details
from sevvo.runtime.outcomes import Kind

STATUS_NAMES = {
    cpb.CONNECTION_STATUS_PENDING: "not tested",
    cpb.CONNECTION_STATUS_CONNECTED: "connected",
    cpb.CONNECTION_STATUS_ERROR: "failing",
}

# The form's SSL modes: (form value, API value, label), the safest usable first after require.
SSL_MODES: tuple[tuple[str, cpb.SslMode, str], ...] = (
    ("require", cpb.SSL_MODE_REQUIRE, "require: TLS, the server's certificate is not checked"),
    ("verify-full", cpb.SSL_MODE_VERIFY_FULL, "verify-full: TLS, certificate and host checked"),
    ("verify-ca", cpb.SSL_MODE_VERIFY_CA, "verify-ca: TLS, certificate checked (not the host)"),
    ("disable", cpb.SSL_MODE_DISABLE, "disable: no TLS (trusted networks only)"),
)
_SSL_BY_NAME = {name: value for name, value, _ in SSL_MODES}
_SSL_BY_VALUE = {value: name for name, value, _ in SSL_MODES}
CREDENTIAL_MODE_NAMES = {
    cpb.CREDENTIAL_MODE_FIELDS: "fixed (entered field by field)",
    cpb.CREDENTIAL_MODE_DSN: "fixed (given as a URI)",
    cpb.CREDENTIAL_MODE_DYNAMIC: "dynamic (a login role per workload)",
}
RUN_KIND_NAMES = {
    opb.RUN_KIND_CREDENTIAL_TEST: "credential test",
    opb.RUN_KIND_PREVIEW: "preview",
    opb.RUN_KIND_ROOT_ROTATION: "root rotation",
    opb.RUN_KIND_SYNC: "sync",
}
RUN_STATE_NAMES = {
    opb.RUN_STATE_RUNNING: "running",
    opb.RUN_STATE_SUCCEEDED: "succeeded",
    opb.RUN_STATE_FAILED: "failed",
    opb.RUN_STATE_TIMED_OUT: "timed out",
}

_NOTICES = {
    "created": "Connection saved: the agent logged in with these details.",
    "updated": "Changes saved.",
    "unchanged": "Nothing changed.",
    "tested": "Test finished: connected.",
    "test_failed": "Test finished: the connection failed (see its last test below).",
    "deleted": "Connection deleted.",
}

# The form's fields, in the order of the page; the password is never rendered back.
FORM_FIELDS = (
    "name",
    "host",
    "port",
    "database",
    "username",
    "password",
    "ssl_mode",
    "ssl_root_cert",
    "credential_mode",
    "default_ttl_seconds",
    "max_ttl_seconds",
    "group_role",
)

_LABELS = {
    "name": "Name",
    "host": "Host",
    "port": "Port",
    "database": "Database",
    "username": "Username",
    "password": "Password",
    "ssl_mode": "SSL mode",
    "ssl_root_cert": "CA bundle",
    "group_role": "Group role",
}

# Where a failed test's category points: the field to fix first, then others that may be
# the cause (marked invalid and described by the same message).
CATEGORY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "connection_refused_or_timeout": ("host", "port"),
    "password_authentication_failed": ("password", "username"),
    "permission_denied": ("username", "database"),
    "database_does_not_exist": ("database",),
    "ssl_required_not_offered": ("ssl_mode",),
    "ssl_certificate_unverified": ("ssl_mode", "ssl_root_cert", "host"),
    "dynamic_statements_failed": ("group_role", "username"),
}

# The last part of an API field path (prefixes such as "fields.", "dynamic.",
# "connection.fields." dropped) and the form field it is.
_API_FIELDS = {
    "display_name": "name",
    "host": "host",
    "port": "port",
    "database": "database",
    "username": "username",
    "privileged_username": "username",
    "password": "password",
    "privileged_password": "password",
    "ssl_mode": "ssl_mode",
    "ssl_root_cert": "ssl_root_cert",
    "default_ttl_seconds": "default_ttl_seconds",
    "max_ttl_seconds": "max_ttl_seconds",
    "group_role": "group_role",
}


def form_field_of(api_path: str) -> str | None:
    """The form field an API field path names (``fields.port`` is ``port``), if any."""
    last = re.sub(r"\[\d+\]$", "", api_path).rsplit(".", 1)[-1]
    return _API_FIELDS.get(last)


@dataclass(frozen=True)
class Problem:
    """What went wrong with a field (or the whole form): a title, what happened, what to do."""

    message: str
    category: str = ""
    hint: str = ""


@dataclass
class FormState:
    """The form as the user filled it in (text), minus the password when shown again."""

    values: dict[str, str]
    password: str = field(default="", repr=False)
    problems: dict[str, Problem] = field(default_factory=dict)
    # Field -> the id of the element that describes its problem (aria-describedby).
    invalid: dict[str, str] = field(default_factory=dict)
    summary: Problem | None = None

    @classmethod
    def blank(cls) -> FormState:
        """A new connection's form with its defaults."""
        values = dict.fromkeys(FORM_FIELDS, "")
        values.update(port="5432", ssl_mode="require", credential_mode="fields")
        return cls(values)

    @classmethod
    def of(cls, connection: cpb.Connection) -> FormState:
        """The edit form of a saved connection (no password: the API never returns one)."""
        meta = connection.safe_metadata
        values = dict.fromkeys(FORM_FIELDS, "")
        values.update(
            name=connection.display_name,
            host=meta.host,
            port=str(meta.port or 5432),
            database=meta.database,
            username=meta.username,
            ssl_mode=_SSL_BY_VALUE.get(meta.ssl_mode, "require"),
            credential_mode="dynamic"
            if connection.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC
            else "fields",
        )
        return cls(values)

    @classmethod
    def parse(cls, sent: Mapping[str, str]) -> FormState:
        """The form as sent, trimmed (never the password: it is kept as typed)."""
        values = {name: sent.get(name, "").strip() for name in FORM_FIELDS if name != "password"}
        values["password"] = ""
        values["ssl_root_cert"] = sent.get("ssl_root_cert", "").strip()
        if values["credential_mode"] not in ("fields", "dynamic"):
            values["credential_mode"] = "fields"
        return cls(values, password=sent.get("password", ""))

    @property
    def dynamic(self) -> bool:
        return self.values["credential_mode"] == "dynamic"

    def mark(self, name: str, problem: Problem) -> None:
        """Shows ``problem`` next to ``name`` (the first problem of a field wins)."""
        if name in self.problems:
            return
        self.problems[name] = problem
        self.invalid[name] = f"{name}-error"

    def blame(self, names: tuple[str, ...], problem: Problem) -> None:
        """Shows ``problem`` next to the first of ``names`` and marks the others invalid too,
        described by the same message."""
        self.mark(names[0], problem)
        for name in names[1:]:
            self.invalid.setdefault(name, f"{names[0]}-error")

    def has_problems(self) -> bool:
        return bool(self.problems or self.summary)

    def _int(self, name: str, label: str, low: int, high: int, *, blank: int | None) -> int:
        text = self.values[name]
        if not text and blank is not None:
            return blank
        try:
            number = int(text)
        except ValueError:
            self.mark(name, Problem(f"{label} must be a whole number"))
            return 0
        if not low <= number <= high:
            self.mark(name, Problem(f"{label} must be between {low} and {high}"))
        return number

    def checked(self, *, new: bool) -> None:
        """Marks what can be told wrong without asking the services (required fields, numbers)."""
        labels = (("name", "Name"), ("host", "Host"), ("database", "Database"))
        for name, label in (*labels, ("username", "Username")):
            if not self.values[name]:
                self.mark(name, Problem(f"{label} is required"))
        if new and not self.password:
            self.mark("password", Problem("Password is required"))
        self._int("port", "Port", 1, 65535, blank=5432)
        if self.values["ssl_mode"] not in _SSL_BY_NAME:
            self.mark("ssl_mode", Problem("Choose an SSL mode"))
        if new and self.dynamic:
            self._int("default_ttl_seconds", "Default TTL", 60, 86400, blank=0)
            self._int("max_ttl_seconds", "Maximum TTL", 60, 604800, blank=0)

    @property
    def port(self) -> int:
        try:
            return int(self.values["port"] or 5432)
        except ValueError:
            return 0

    @property
    def ssl_mode(self) -> cpb.SslMode:
        return _SSL_BY_NAME.get(self.values["ssl_mode"], cpb.SSL_MODE_UNSPECIFIED)

    def create_request(self) -> cpb.CreateConnectionRequest:
        """The CreateConnection request for the form (checked first)."""
        v = self.values
        request = cpb.CreateConnectionRequest(display_name=v["name"])
        if self.dynamic:
            request.dynamic.CopyFrom(
                cpb.PostgresDynamic(
                    host=v["host"],
                    port=self.port,
                    database=v["database"],
                    ssl_mode=self.ssl_mode,
                    privileged_username=v["username"],
                    privileged_password=self.password,
                    default_ttl_seconds=int(v["default_ttl_seconds"] or 0),
                    max_ttl_seconds=int(v["max_ttl_seconds"] or 0),
                    group_role=v["group_role"],
                    ssl_root_cert=v["ssl_root_cert"],
                )
            )
        else:
            request.fields.CopyFrom(
                cpb.PostgresFields(
                    host=v["host"],
                    port=self.port,
                    database=v["database"],
                    username=v["username"],
                    password=self.password,
                    ssl_mode=self.ssl_mode,
                    ssl_root_cert=v["ssl_root_cert"],
                )
            )
        return request

    def update_request(self, current: cpb.Connection) -> cpb.UpdateConnectionRequest:
        """The UpdateConnection request naming only what differs from ``current``; a blank
        password keeps the stored one, a blank CA bundle the stored bundle."""
        v = self.values
        meta = current.safe_metadata
        fields = cpb.PostgresFields(
            host=v["host"],
            port=self.port,
            database=v["database"],
            username=v["username"],
            password=self.password,
            ssl_mode=self.ssl_mode,
            ssl_root_cert=v["ssl_root_cert"],
        )
        paths = []
        if v["name"] != current.display_name:
            paths.append("display_name")
        for name, old, new in (
            ("host", meta.host, v["host"]),
            ("port", meta.port, self.port),
            ("database", meta.database, v["database"]),
            ("username", meta.username, v["username"]),
            ("ssl_mode", meta.ssl_mode, self.ssl_mode),
        ):
            if old != new:
                paths.append(f"fields.{name}")
        if self.password:
            paths.append("fields.password")
        if v["ssl_root_cert"]:
            paths.append("fields.ssl_root_cert")
        return cpb.UpdateConnectionRequest(
            id=current.id,
            connection=cpb.ConnectionUpdate(display_name=v["name"], fields=fields),
            update_mask=FieldMask(paths=paths),
        )

    def show_failure(self, details: ErrorDetails, *, kept: bool) -> None:
        """Puts a refused save on the form: a failed test next to the field its category
        points at, each field violation next to its field, anything else at the top."""
        category = (details.metadata or {}).get("category", "")
        if details.reason == "CREDENTIAL_TEST_FAILED" and category:
            outcome = outcomes.get(category)
            message = outcome.message(Kind.CREDENTIAL_TEST) if outcome else details.message
            hint = outcomes.hint_for(category, Kind.CREDENTIAL_TEST) or ""
            problem = Problem(message, category=category, hint=hint)
            names = CATEGORY_FIELDS.get(category)
            kept_text = " The old details stay in use." if kept else " Nothing was saved."
            if names:
                self.blame(names, problem)
                self.summary = Problem(
                    f"The test through your agent failed ({category}): see"
                    f" {_LABELS[names[0]]} below.{kept_text}"
                )
            else:
                self.summary = Problem(
                    f"The test through your agent failed: {message}.{kept_text}",
                    category=category,
                    hint=hint,
                )
            return
        unplaced = []
        for path, description in details.violations:
            name = form_field_of(path)
            if name is None:
                unplaced.append(f"{path}: {description}")
            else:
                self.mark(name, Problem(description))
        if unplaced or not details.violations:
            self.summary = Problem("; ".join(unplaced) or details.message)
        else:
            self.summary = Problem("Some fields need fixing.")


def _form_page(
    request: Request,
    viewer: Viewer,
    form: FormState,
    *,
    connection: cpb.Connection | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "connection_form.html",
        viewer,
        status_code=status_code,
        form=form,
        values=form.values,
        connection=connection,
        ssl_modes=SSL_MODES,
    )


@signed_in
async def list_connections(request: Request, viewer: Viewer) -> Response:
    """The org's connections with their status and last test."""
    backend = backend_of(request)
    page = await backend.connections.ListConnections(
        cpb.ListConnectionsRequest(
            page_size=50, page_token=request.query_params.get("page_token", "")
        ),
        timeout=backend.call_timeout,
    )
    return render(
        request,
        "connections.html",
        viewer,
        connections=page.connections,
        next_page_token=page.next_page_token,
        status_names=STATUS_NAMES,
        notice=notice(request.query_params, _NOTICES),
    )


@signed_in
async def new_connection(request: Request, viewer: Viewer) -> Response:
    """The empty form."""
    return _form_page(request, viewer, FormState.blank())


@signed_in
async def create_connection(request: Request, viewer: Viewer) -> Response:
    """Creates the connection (tested first by the service); the form again when refused."""
    form = FormState.parse(await form_fields(request))
    form.checked(new=True)
    if form.has_problems():
        form.summary = Problem("Some fields need fixing.")
        return _form_page(request, viewer, form, status_code=400)
    backend = backend_of(request)
    try:
        created = await backend.connections.CreateConnection(
            form.create_request(), timeout=backend.agent_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        ):
            raise
        form.show_failure(error_details(exc), kept=False)
        return _form_page(request, viewer, form, status_code=400)
    return redirect(f"/connections/{created.id}?notice=created")


async def _connection(backend: Backend, connection_id: str) -> cpb.Connection:
    connection: cpb.Connection = await backend.connections.GetConnection(
        cpb.GetConnectionRequest(id=connection_id), timeout=backend.call_timeout
    )
    return connection


async def _runs_of(backend: Backend, connection_id: str, limit: int = 20) -> list[opb.Run]:
    """The connection's newest runs (its tests, previews and rotations), newest first."""
    page = await backend.orchestrator.ListRuns(
        opb.ListRunsRequest(page_size=limit, connection_id=connection_id),
        timeout=backend.call_timeout,
    )
    return list(page.runs)


def _last_test(connection: cpb.Connection) -> Problem | None:
    """The last test's failure as the guide words it; None when it passed or never ran."""
    category = connection.last_test_category
    if connection.status != cpb.CONNECTION_STATUS_ERROR and not category:
        return None
    category = category or outcomes.OTHER.name
    outcome = outcomes.get(category)
    message = outcome.message(Kind.CREDENTIAL_TEST) if outcome else "the test failed"
    return Problem(
        message, category=category, hint=outcomes.hint_for(category, Kind.CREDENTIAL_TEST) or ""
    )


@signed_in
async def connection_detail(request: Request, viewer: Viewer) -> Response:
    """One connection: its details (never a password), status, last test and runs."""
    backend = backend_of(request)
    connection = await _connection(backend, request.path_params["id"])
    runs = await _runs_of(backend, connection.id)
    return render(
        request,
        "connection_detail.html",
        viewer,
        c=connection,
        runs=runs,
        last_test=_last_test(connection),
        status_names=STATUS_NAMES,
        ssl_names=_SSL_BY_VALUE,
        credential_mode_names=CREDENTIAL_MODE_NAMES,
        run_kinds=RUN_KIND_NAMES,
        run_states=RUN_STATE_NAMES,
        notice=notice(request.query_params, _NOTICES),
    )


@signed_in
async def test_connection(request: Request, viewer: Viewer) -> Response:
    """Tests the saved connection through the agent (the service waits for the run)."""
    backend = backend_of(request)
    connection_id = request.path_params["id"]
    tested = await backend.connections.TestConnection(
        cpb.TestConnectionRequest(id=connection_id), timeout=backend.agent_timeout
    )
    done = "tested" if tested.status == cpb.CONNECTION_STATUS_CONNECTED else "test_failed"
    return redirect(f"/connections/{tested.id}?notice={done}")


@signed_in
async def edit_connection(request: Request, viewer: Viewer) -> Response:
    """The form filled in with the connection's details (never its password)."""
    connection = await _connection(backend_of(request), request.path_params["id"])
    if connection.HasField("parquet_directory"):
        return error_page(request, viewer, "a Parquet directory has no details to edit", 409)
    return _form_page(request, viewer, FormState.of(connection), connection=connection)


@signed_in
async def update_connection(request: Request, viewer: Viewer) -> Response:
    """Saves what changed; changed details are tested first, and the old ones stay on failure."""
    backend = backend_of(request)
    connection = await _connection(backend, request.path_params["id"])
    form = FormState.parse(await form_fields(request))
    # The dynamic settings are not editable here (UpdateConnection cannot change them).
    form.values["credential_mode"] = FormState.of(connection).values["credential_mode"]
    form.checked(new=False)
    if form.has_problems():
        form.summary = Problem("Some fields need fixing.")
        return _form_page(request, viewer, form, connection=connection, status_code=400)
    update = form.update_request(connection)
    if not update.update_mask.paths:
        return redirect(f"/connections/{connection.id}?notice=unchanged")
    tests = any(path.startswith("fields.") for path in update.update_mask.paths)
    try:
        await backend.connections.UpdateConnection(
            update, timeout=backend.agent_timeout if tests else backend.call_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() not in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        ):
            raise
        form.show_failure(error_details(exc), kept=True)
        return _form_page(request, viewer, form, connection=connection, status_code=400)
    return redirect(f"/connections/{connection.id}?notice=updated")


@signed_in
async def confirm_delete(request: Request, viewer: Viewer) -> Response:
    """Asks before deleting, naming the connection."""
    connection = await _connection(backend_of(request), request.path_params["id"])
    return render(request, "connection_delete.html", viewer, c=connection)


@signed_in
async def delete_connection(request: Request, viewer: Viewer) -> Response:
    """Deletes the connection; with unrevoked leases, asks again offering to force it."""
    backend = backend_of(request)
    connection_id = request.path_params["id"]
    force = (await form_fields(request)).get("force") == "yes"
    try:
        await backend.connections.DeleteConnection(
            cpb.DeleteConnectionRequest(id=connection_id, force=force),
            timeout=backend.call_timeout,
        )
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        if details.reason != "CONNECTION_HAS_LEASES":
            raise
        connection = await _connection(backend, connection_id)
        return render(
            request,
            "connection_delete.html",
            viewer,
            status_code=http_status(exc.code()),
            c=connection,
            error=details.message,
            offer_force=True,
        )
    return redirect("/connections?notice=deleted")


routes: list[BaseRoute] = [
    Route("/connections", list_connections, methods=["GET"]),
    Route("/connections", create_connection, methods=["POST"]),
    Route("/connections/new", new_connection, methods=["GET"]),
    Route("/connections/{id}", connection_detail, methods=["GET"]),
    Route("/connections/{id}/test", test_connection, methods=["POST"]),
    Route("/connections/{id}/edit", edit_connection, methods=["GET"]),
    Route("/connections/{id}/edit", update_connection, methods=["POST"]),
    Route("/connections/{id}/delete", confirm_delete, methods=["GET"]),
    Route("/connections/{id}/delete", delete_connection, methods=["POST"]),
]
