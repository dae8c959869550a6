"""Hostile input over every RPC of every service: no INTERNAL or UNKNOWN, nothing echoed to logs.

The methods come from the generated service descriptors, so an RPC added later is attacked
without editing this file. Each case is sent as raw bytes over TLS to the real stack (auth,
connections and orchestrator on real Postgres and Temporal, with an agent), as the caller the
method's access policy names. Every hostile string carries a marker that must never reach a log
line; the services' logs are captured for the whole module.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import io
import json
import pkgutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import descriptor, duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from psycopg import sql

import sevvo
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_source_database, drop_source_database
from devstack.stack import RunningStack
from services.auth.server import ACCESS as AUTH_ACCESS
from services.connections.server import ACCESS as CONNECTIONS_ACCESS
from services.orchestrator.server import ACCESS as ORCHESTRATOR_ACCESS
from sevvo.audit.v1 import audit_pb2
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import models_pb2_grpc as mpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import MAX_ERROR_TEXT, Access
from sevvo.runtime.logs import configure_logging
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.log_setup import configure_test_logging

MARK = f"HOSTILE{uuid.uuid4().hex[:10]}"
HUGE = 100_000
ACCESS: dict[str, Access] = {**AUTH_ACCESS, **CONNECTIONS_ACCESS, **ORCHESTRATOR_ACCESS}
PRIVILEGED_PASSWORD = "hostile-privileged-pw-4242"
CALL_TIMEOUT = 30.0
FD = descriptor.FieldDescriptor
# protobuf's valid ranges (google/protobuf/timestamp.proto and duration.proto).
MAX_TIMESTAMP = 253402300799
MIN_TIMESTAMP = -62135596800
MAX_DURATION = 315576000000


# ---------------------------------------------------------------------------------------------
# Which methods exist: every unary method of every generated sevvo service, and health Check.


def _service_modules() -> list[Any]:
    modules: list[Any] = [health_pb2]
    for info in pkgutil.walk_packages(sevvo.__path__, "sevvo."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


# Served by the agent to the customer's workloads, never by the control plane;
# tests/test_credential_api_units.py sends it hostile input over the agent's socket.
AGENT_SERVICES = frozenset({"sevvo.agent.v1.CredentialService"})


def all_methods() -> list[descriptor.MethodDescriptor]:
    """Every unary method the generated descriptors declare (streaming ones are refused)."""
    methods = []
    for module in _service_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name in AGENT_SERVICES:
                continue
            for method in service.methods:
                if not (method.client_streaming or method.server_streaming):
                    methods.append(method)
    return methods


def path_of(method: descriptor.MethodDescriptor) -> str:
    """The gRPC path of a method."""
    return f"/{method.containing_service.full_name}/{method.name}"


# ---------------------------------------------------------------------------------------------
# The world the cases run in.


@dataclass
class World:
    """A running stack, an org with an admin, a member and an agent, and real resources."""

    stack: RunningStack
    logs: io.StringIO
    source: SourceDatabase
    tokens: dict[str, str | None]
    member_email: str
    ids: dict[str, str] = field(default_factory=dict)
    _channels: dict[str | None, grpc.Channel] = field(default_factory=dict)

    def channel(self, bearer: str | None = None) -> grpc.Channel:
        """A TLS channel attaching ``bearer`` (one per bearer, reused)."""
        if bearer not in self._channels:
            self._channels[bearer] = secure_channel(
                self.stack.grpc_target,
                ClientTls(self.stack.pki.ca_cert),
                (lambda: bearer) if bearer else None,
            )
        return self._channels[bearer]

    def close(self) -> None:
        """Closes every channel."""
        for channel in self._channels.values():
            channel.close()


def _dynamic_roles(server: EmbeddedPostgres, database: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    group, privileged = f"hreaders_{suffix}", f"hminter_{suffix}"
    with psycopg.connect(server.admin_url(database), autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(group)))
        conn.execute(
            sql.SQL("create role {} login createrole password {}").format(
                sql.Identifier(privileged), sql.Literal(PRIVILEGED_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("grant {} to {} with admin option").format(
                sql.Identifier(group), sql.Identifier(privileged)
            )
        )
        conn.execute(
            sql.SQL("grant connect on database {} to {}, {}").format(
                sql.Identifier(database), sql.Identifier(privileged), sql.Identifier(group)
            )
        )
    return group, privileged


def _drop_roles(server: EmbeddedPostgres, database: str, roles: list[str]) -> None:
    with psycopg.connect(server.admin_url(database), autocommit=True) as conn:
        rows = conn.execute("select rolname from pg_roles where rolname like 'sevvo_dyn_%'")
        for role in [*(r[0] for r in rows.fetchall()), *roles]:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def service_logs() -> Iterator[io.StringIO]:
    """Every log line of the module's stack, rendered as in production (INFO, JSON)."""
    logs = io.StringIO()
    configure_logging("hostile", level="INFO", json=True, stream=logs)
    yield logs
    configure_test_logging()


@pytest.fixture(scope="module")
def world(
    service_logs: io.StringIO, e2e: EndToEnd, tls_source_pg: EmbeddedPostgres
) -> Iterator[World]:
    """The whole stack (logs captured from its start), three callers and real resources."""
    suffix = uuid.uuid4().hex[:10]
    source = create_source_database(
        tls_source_pg.url,
        database=f"hostile_{suffix}",
        reader=f"hreader_{suffix}",
        reader_password=f"reader-pw-{suffix}",
    )
    group, privileged = _dynamic_roles(tls_source_pg, source.database)
    world = World(e2e.stack, service_logs, source, {}, member_email=f"member@{suffix}.example")
    try:
        _populate(world, e2e.new_tenant(), group, privileged)
        yield world
    finally:
        world.close()
        _drop_roles(tls_source_pg, source.database, [privileged, group])
        drop_source_database(tls_source_pg.url, database=source.database, reader=source.reader)


def _populate(world: World, tenant: Tenant, group: str, privileged: str) -> None:
    """A member and the agent's bearer, two connections, a lease and a run."""
    admin_token = tenant.admin_token
    member = users_pb2_grpc.UserServiceStub(world.channel(admin_token)).CreateUser(
        users_pb2.CreateUserRequest(
            email=world.member_email, password=PASSWORD, role=users_pb2.USER_ROLE_MEMBER
        )
    )
    member_token = (
        auth_pb2_grpc.AuthServiceStub(world.channel(None))
        .SignIn(auth_pb2.SignInRequest(email=world.member_email, password=PASSWORD))
        .session_token
    )
    agent_token = world.stack.auth.domain.exchange(tenant.deployment_token).token
    world.tokens.update(admin=admin_token, member=member_token, agent=agent_token)
    world.tokens["anonymous"] = None

    connections = cpb_grpc.ConnectionServiceStub(world.channel(admin_token))
    source = world.source
    fields = connections.CreateConnection(
        cpb.CreateConnectionRequest(display_name="hostile-fields", fields=_fields(world))
    )
    dynamic = connections.CreateConnection(
        cpb.CreateConnectionRequest(
            display_name="hostile-dynamic",
            dynamic=EndToEnd.dynamic(
                source,
                privileged=privileged,
                privileged_password=PRIVILEGED_PASSWORD,
                group=group,
            ),
        )
    )
    now = datetime.now(UTC)
    lease = cpb_grpc.LeaseServiceStub(world.channel(agent_token)).CreateLease(
        cpb.CreateLeaseRequest(
            connection_id=dynamic.id,
            role_name=f"sevvo_dyn_hostile_{uuid.uuid4().hex[:8]}",
            purpose="preview",
            expire_time=_ts(now + timedelta(minutes=5)),
            max_expire_time=_ts(now + timedelta(minutes=10)),
        )
    )
    run = opb_grpc.OrchestratorServiceStub(world.channel(member_token)).TestConnection(
        opb.TestConnectionRequest(connection_id=fields.id)
    )
    model = mpb_grpc.ModelServiceStub(world.channel(member_token)).CreateModel(
        mpb.CreateModelRequest(
            model=mpb.Model(
                name="hostile-base",
                source_connection_id=fields.id,
                sql="select 1 as n",
                destination_connection_id=fields.id,
                destination_table="public.hostile_base",
                load_mode=mpb.LOAD_MODE_FULL_REFRESH,
            )
        )
    )
    world.ids.update(
        model=model.id,
        connection=fields.id,
        dynamic=dynamic.id,
        lease=lease.id,
        run=run.id,
        user=member.id,
        deployment=tenant.deployment_id,
        org=tenant.org_id,
    )


def _ts(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def _fields(world: World) -> cpb.PostgresFields:
    source = world.source
    return cpb.PostgresFields(
        host="localhost",
        port=source.port,
        database=source.database,
        username=source.reader,
        password=source.reader_password,
        ssl_mode=cpb.SSL_MODE_REQUIRE,
    )


# ---------------------------------------------------------------------------------------------
# Plausible requests: a hostile value in one field of an otherwise valid request reaches further
# than in an empty one. Methods not named here start from the empty request.

Base = Callable[[World], Message]


def _bases() -> dict[str, list[Base]]:
    now = datetime.now(UTC)

    def dsn(w: World) -> Message:
        s = w.source
        uri = f"postgresql://{s.reader}:{s.reader_password}@localhost:{s.port}/{s.database}"
        return cpb.CreateConnectionRequest(
            display_name="hostile-dsn", dsn=cpb.PostgresDsn(uri=uri + "?sslmode=require")
        )

    def dynamic(w: World) -> Message:
        s = w.source
        return cpb.CreateConnectionRequest(
            display_name="hostile-dyn2",
            dynamic=cpb.PostgresDynamic(
                host="localhost",
                port=s.port,
                database=s.database,
                privileged_username="nobody",
                privileged_password="not-the-password",
                default_ttl_seconds=60,
                max_ttl_seconds=120,
                creation_statements=["create role {{name}} login password {{password}}"],
            ),
        )

    conn = "/sevvo.connections.v1.ConnectionService/"
    cred = "/sevvo.connections.v1.ConnectionCredentialService/"
    lease = "/sevvo.connections.v1.LeaseService/"
    orch = "/sevvo.orchestrator.v1.OrchestratorService/"
    models = "/sevvo.orchestrator.v1.ModelService/"
    return {
        "/sevvo.auth.v1.AuthService/SignIn": [
            lambda w: auth_pb2.SignInRequest(email=w.member_email, password="wrong-password-1")
        ],
        "/sevvo.auth.v1.AuthService/BootstrapOrg": [
            lambda w: auth_pb2.BootstrapOrgRequest(
                org_name="Hostile Org", admin_email="boot@hostile.example", admin_password=PASSWORD
            )
        ],
        "/sevvo.auth.v1.UserService/CreateUser": [
            lambda w: users_pb2.CreateUserRequest(
                email=f"new-{uuid.uuid4().hex[:8]}@hostile.example",
                password=PASSWORD,
                role=users_pb2.USER_ROLE_MEMBER,
            )
        ],
        conn + "CreateConnection": [
            lambda w: cpb.CreateConnectionRequest(display_name="hostile-f2", fields=_fields(w)),
            dsn,
            dynamic,
        ],
        conn + "UpdateConnection": [
            lambda w: cpb.UpdateConnectionRequest(
                id=w.ids["connection"],
                connection=cpb.ConnectionUpdate(display_name="hostile-renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        ],
        conn + "DeleteConnection": [lambda w: cpb.DeleteConnectionRequest(id=str(uuid.uuid4()))],
        cred + "ResolveConnectionCredentials": [
            lambda w: cpb.ResolveConnectionCredentialsRequest(
                connection_id=w.ids["connection"], purpose="preview"
            )
        ],
        cred + "StagePrivilegedPassword": [
            lambda w: cpb.StagePrivilegedPasswordRequest(
                connection_id=str(uuid.uuid4()), pending_password="a-new-password-42"
            )
        ],
        cred + "RecordRootRotation": [
            lambda w: cpb.RecordRootRotationRequest(
                connection_id=w.ids["dynamic"],
                outcome=cpb.ROTATION_OUTCOME_FAILED,
                failure_reason="hostile_test",
            )
        ],
        lease + "CreateLease": [
            lambda w: cpb.CreateLeaseRequest(
                connection_id=w.ids["dynamic"],
                role_name=f"sevvo_dyn_h_{uuid.uuid4().hex[:8]}",
                purpose="preview",
                expire_time=_ts(now + timedelta(minutes=1)),
                max_expire_time=_ts(now + timedelta(minutes=2)),
            )
        ],
        lease + "UpdateLease": [
            lambda w: cpb.UpdateLeaseRequest(
                lease_id=w.ids["lease"],
                state=cpb.LEASE_STATE_ACTIVE,
                expire_time=_ts(now + timedelta(minutes=6)),
            )
        ],
        lease + "ListLeasesToReap": [
            lambda w: cpb.ListLeasesToReapRequest(connection_id=w.ids["dynamic"])
        ],
        lease + "ListLeases": [
            lambda w: cpb.ListLeasesRequest(
                connection_id=w.ids["dynamic"], state=cpb.LEASE_STATE_ACTIVE
            )
        ],
        lease + "RevokeLeases": [
            lambda w: cpb.RevokeLeasesRequest(
                connection_id=w.ids["dynamic"], lease_id=str(uuid.uuid4())
            )
        ],
        "/sevvo.audit.v1.AuditService/ListAuditEvents": [
            lambda w: audit_pb2.ListAuditEventsRequest(target_id=w.ids["connection"])
        ],
        orch + "PreviewQuery": [
            lambda w: opb.PreviewQueryRequest(connection_id=w.ids["connection"], sql="select 1")
        ],
        orch + "SetRootRotationSchedule": [
            lambda w: opb.SetRootRotationScheduleRequest(
                connection_id=w.ids["dynamic"], interval=duration_pb2.Duration(seconds=86400)
            )
        ],
        models + "CreateModel": [lambda w: mpb.CreateModelRequest(model=_model(w))],
        models + "UpdateModel": [
            lambda w: mpb.UpdateModelRequest(
                model=_model(w, id=w.ids["model"]),
                update_mask=field_mask_pb2.FieldMask(paths=["name", "sql"]),
            )
        ],
    }


def _model(w: World, **fields: Any) -> mpb.Model:
    """A valid model on the world's connection (each case makes one field hostile)."""
    return mpb.Model(
        name="hostile-model",
        source_connection_id=w.ids["connection"],
        sql="select 1 as n",
        destination_connection_id=w.ids["connection"],
        destination_table="public.hostile_model",
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# Hostile values, by field type. ``strict`` marks values every server must refuse as
# INVALID_ARGUMENT naming the field, whatever the method (NUL characters, out-of-range times).


@dataclass(frozen=True)
class Hostile:
    """One hostile value for one kind of field."""

    label: str
    value: Any
    strict: bool = False


STRINGS = [
    Hostile("huge", MARK + "A" * HUGE),
    Hostile("nul", f"nul\x00{MARK}", strict=True),
    Hostile("sql", f"' or 1=1 --{MARK}"),
    Hostile("not-a-uuid", f"{MARK}-0000-0000-0000-000000000000"),
    Hostile("bidi", f"\u202e{MARK}\u200b"),
]
REPEATED_STRINGS = [
    Hostile("many", [f"{MARK}{i}" for i in range(5000)]),
    Hostile("nul", [f"nul\x00{MARK}"], strict=True),
    Hostile("huge", [MARK + "B" * HUGE]),
]
_INT_LIMITS = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _timestamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _duration(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


TIMESTAMPS = [
    Hostile("2^62s", _timestamp(2**62), strict=True),
    Hostile("-2^62s", _timestamp(-(2**62)), strict=True),
    Hostile("negative-nanos", _timestamp(0, -1), strict=True),
    Hostile("nanos-overflow", _timestamp(0, 10**9), strict=True),
    Hostile("year-9999", _timestamp(MAX_TIMESTAMP, 999_999_999)),
    Hostile("year-1", _timestamp(MIN_TIMESTAMP)),
    Hostile("epoch", _timestamp(0)),
]
DURATIONS = [
    Hostile("2^62s", _duration(2**62), strict=True),
    Hostile("-2^62s", _duration(-(2**62)), strict=True),
    Hostile("mixed-signs", _duration(1, -1), strict=True),
    Hostile("nanos-overflow", _duration(0, 10**9), strict=True),
    Hostile("10000-years", _duration(MAX_DURATION)),
    Hostile("-10000-years", _duration(-MAX_DURATION)),
    Hostile("1000-years", _duration(MAX_DURATION // 10)),
    Hostile("negative", _duration(-1)),
    Hostile("1ns", _duration(0, 1)),
]
FIELD_MASKS = [
    Hostile("unknown-path", ["no_such_field"]),
    Hostile("empty-path", [""]),
    Hostile("secret-path", ["fields.password", "connection.fields.password"]),
    Hostile("repeated", ["display_name"] * 1000),
    Hostile("huge", [MARK + "C" * HUGE]),
    Hostile("nul", [f"display_name\x00{MARK}"], strict=True),
]


def _token(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


PAGE_TOKENS = [
    Hostile("not-base64", f"!!{MARK}!!"),
    Hostile("sql-id", _token([datetime.now(UTC).isoformat(), f"' or 1=1 --{MARK}"])),
    Hostile("bad-time", _token([f"yesterday {MARK}", str(uuid.uuid4())])),
    Hostile("naive-time", _token(["2026-01-01T00:00:00", str(uuid.uuid4())])),
    Hostile("year-9999", _token(["9999-12-31T23:59:59.999999+00:00", str(uuid.uuid4())])),
    Hostile("year-1", _token(["0001-01-01T00:00:00-14:00", str(uuid.uuid4())])),
    Hostile("object", _token({"a": MARK, "b": 1})),
    Hostile("numbers", _token([1, 2])),
    Hostile("nested", _token([[MARK], {"x": 1}])),
    Hostile("random-bytes", _token(bytes(range(256)))),
    Hostile("nul-id", _token([datetime.now(UTC).isoformat(), f"\x00{MARK}"])),
]


def _scalars(fd: descriptor.FieldDescriptor) -> list[Hostile]:
    if fd.name == "page_token":
        return [*STRINGS, *PAGE_TOKENS]
    if fd.type == FD.TYPE_STRING:
        return REPEATED_STRINGS if _repeated(fd) else STRINGS
    if fd.type == FD.TYPE_BYTES:
        return [Hostile("garbage", [b"\xff" * 1000] if _repeated(fd) else b"\xff" * 1000)]
    if fd.type == FD.TYPE_BOOL:
        return [] if _repeated(fd) else [Hostile("true", True)]
    if fd.type == FD.TYPE_ENUM:
        return [] if _repeated(fd) else [Hostile("unknown", 2**31 - 1), Hostile("minus-1", -1)]
    if fd.type in _INT_LIMITS:
        low, high = _INT_LIMITS[fd.type]
        values = {low, high, -1} if low < 0 else {high}
        return [] if _repeated(fd) else [Hostile(f"{v}", v) for v in sorted(values)]
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return [Hostile("nan", float("nan")), Hostile("inf", float("inf"))]
    return []


def _repeated(fd: descriptor.FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


_WELL_KNOWN: dict[str, list[Hostile]] = {
    "google.protobuf.Timestamp": TIMESTAMPS,
    "google.protobuf.Duration": DURATIONS,
    "google.protobuf.FieldMask": FIELD_MASKS,
}


def _message_name(fd: descriptor.FieldDescriptor) -> str:
    return fd.message_type.full_name if fd.message_type is not None else ""


def leaves(
    message: descriptor.Descriptor, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, list[descriptor.FieldDescriptor], list[Hostile]]]:
    """Every field reachable from ``message`` with the hostile values that fit its type."""
    for fd in message.fields:
        path = f"{prefix}{fd.name}"
        if fd.type == FD.TYPE_MESSAGE:
            name = _message_name(fd)
            if name in _WELL_KNOWN and not _repeated(fd):
                yield path, [fd], _WELL_KNOWN[name]
            elif fd.message_type is not None and not _repeated(fd) and depth < 3:
                for sub_path, chain, values in leaves(fd.message_type, path + ".", depth + 1):
                    yield sub_path, [fd, *chain], values
            continue
        values = _scalars(fd)
        if values:
            yield path, [fd], values


def _set(message: Message, chain: list[descriptor.FieldDescriptor], value: Any) -> None:
    for fd in chain[:-1]:
        message = getattr(message, fd.name)
    last = chain[-1]
    if last.type == FD.TYPE_MESSAGE:
        target = getattr(message, last.name)
        if _message_name(last) == "google.protobuf.FieldMask":
            target.paths[:] = value
        else:
            target.CopyFrom(value)
    elif _repeated(last):
        del getattr(message, last.name)[:]
        getattr(message, last.name).extend(value)
    else:
        setattr(message, last.name, value)


# ---------------------------------------------------------------------------------------------
# Cases.


@dataclass(frozen=True)
class Case:
    """One call: what to send, as whom, and what the answer must be."""

    method: str
    label: str
    payload: bytes
    caller: str
    bearer_override: str | None = None
    request_id: str | None = None
    # INVALID_ARGUMENT is required; with a field, the BadRequest must name it.
    invalid: bool = False
    invalid_field: str | None = None
    hostile: tuple[str, ...] = ()


def _callers(access: Access) -> list[str]:
    return {
        Access.PUBLIC: ["anonymous"],
        Access.USER: ["member"],
        Access.ADMIN: ["admin"],
        Access.AGENT: ["agent"],
        Access.AGENT_FOR_WORKLOAD: ["agent"],
        Access.USER_OR_AGENT: ["member", "agent"],
    }[access]


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _expected_field(path: str, hostile: Hostile, fd: descriptor.FieldDescriptor) -> str:
    if _message_name(fd) == "google.protobuf.FieldMask":
        return f"{path}.paths[0]"
    if _repeated(fd):
        return f"{path}[0]"
    return path


def value_cases(world: World, method: descriptor.MethodDescriptor) -> list[Case]:
    """The empty request, then one hostile value per field on each plausible base."""
    path = path_of(method)
    access = ACCESS.get(path, Access.PUBLIC)
    request_class = GetMessageClass(method.input_type)
    bases: list[Base] = _bases().get(path, [lambda w: request_class()])
    cases = []
    for caller in _callers(access):
        cases.append(Case(path, "empty", b"", caller))
        for base_index, base in enumerate(bases):
            for field_path, chain, values in leaves(method.input_type):
                if _leaves_the_oneof(base(world), chain[0]):
                    continue
                for hostile in values:
                    request = base(world)
                    _set(request, chain, hostile.value)
                    cases.append(
                        Case(
                            path,
                            f"base{base_index}:{field_path}={hostile.label}",
                            request.SerializeToString(),
                            caller,
                            invalid=hostile.strict,
                            invalid_field=(
                                _expected_field(field_path, hostile, chain[-1])
                                if hostile.strict
                                else None
                            ),
                            hostile=tuple(_strings_in(hostile.value)),
                        )
                    )
    return cases


def _leaves_the_oneof(base: Message, fd: descriptor.FieldDescriptor) -> bool:
    """Whether setting ``fd`` would replace the oneof member the plausible base chose."""
    oneof = fd.containing_oneof
    if oneof is None:
        return False
    chosen = base.WhichOneof(oneof.name)
    return chosen is not None and chosen != fd.name


GARBAGE = {
    "ff": b"\xff\xff\xff\xff",
    "length-overflow": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "truncated": b"\x0a\x05ab",
    "bad-utf8": b"\x0a\x02\xc3\x28",
    "deep-groups": b"\x0b" * 200,
    "wrong-wire-type": b"\x0d\x01\x02\x03\x04\x0a\x01a",
}


def bytes_cases(method: descriptor.MethodDescriptor) -> list[Case]:
    """Request bytes that are not the method's message; unparsable ones must be refused."""
    path = path_of(method)
    access = ACCESS.get(path, Access.PUBLIC)
    request_class = GetMessageClass(method.input_type)
    cases = []
    for label, payload in GARBAGE.items():
        try:
            request_class.FromString(payload)
            parses = True
        except DecodeError:
            parses = False
        cases.append(Case(path, f"bytes:{label}", payload, _callers(access)[0], invalid=not parses))
    return cases


def bearer_cases(world: World, method: descriptor.MethodDescriptor) -> list[Case]:
    """Garbage, expired, forged and misplaced credentials, and a hostile request id."""
    path = path_of(method)
    now = int(time.time())
    claims = {
        "iss": "sevvo-auth",
        "aud": "sevvo:users",
        "sub": world.ids["user"],
        "org_id": world.ids["org"],
        "kind": "user",
        "role": "admin",
        "iat": now - 7200,
        "exp": now - 3600,
        "jti": uuid.uuid4().hex,
    }
    expired = world.stack.auth.keys.sign(claims)
    rogue = jwt.encode(
        {**claims, "exp": now + 600},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "rogue"},
    )
    header = _token({"alg": "none", "typ": "JWT"})
    unsigned = f"{header}.{_token({**claims, 'exp': now + 600})}."
    tokens = {
        "garbage": f"Bearer {MARK}",
        "expired": f"Bearer {expired}",
        "rogue-key": f"Bearer {rogue}",
        "alg-none": f"Bearer {unsigned}",
        "huge": f"Bearer {MARK}{'D' * 6000}",
        "basic": f"Basic {MARK}",
        "empty-bearer": "Bearer ",
    }
    cases = [
        Case(path, f"auth:{label}", b"", "anonymous", bearer_override=value, hostile=(MARK,))
        for label, value in tokens.items()
    ]
    cases.append(
        Case(path, "auth:member", b"", "member"),
    )
    cases.append(Case(path, "auth:agent", b"", "agent"))
    cases.append(Case(path, "request-id", b"", "anonymous", request_id=f"' or 1=1 --{MARK}"))
    return cases


# ---------------------------------------------------------------------------------------------
# Running them.


@dataclass(frozen=True)
class Outcome:
    """What one case got back."""

    case: Case
    code: grpc.StatusCode
    details: str
    field: str


def _call(world: World, case: Case) -> Outcome:
    bearer = world.tokens[case.caller]
    metadata: list[tuple[str, str]] = []
    if case.bearer_override is not None:
        metadata.append(("authorization", case.bearer_override))
    if case.request_id is not None:
        metadata.append(("x-request-id", case.request_id))
    channel = world.channel(None if case.bearer_override is not None else bearer)
    call = channel.unary_unary(case.method)
    try:
        call(case.payload, timeout=CALL_TIMEOUT, metadata=metadata or None)
    except grpc.RpcError as error:
        details = error_details(error)
        return Outcome(case, error.code(), error.details() or "", details.field or "")
    return Outcome(case, grpc.StatusCode.OK, "", "")


def _problems(outcome: Outcome) -> list[str]:
    case, problems = outcome.case, []
    if outcome.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        problems.append(f"answered {outcome.code.name}: {outcome.details[:120]!r}")
    if "Exception" in outcome.details or "<class" in outcome.details:
        problems.append(f"names a Python exception: {outcome.details[:120]!r}")
    if len(outcome.details) > MAX_ERROR_TEXT or "exceeds hard limit" in outcome.details:
        problems.append(f"error text too long for clients: {outcome.details[:120]!r}")
    if case.invalid and outcome.code != grpc.StatusCode.INVALID_ARGUMENT:
        problems.append(f"answered {outcome.code.name} instead of INVALID_ARGUMENT")
    elif case.invalid_field and outcome.field != case.invalid_field:
        problems.append(f"BadRequest field {outcome.field!r}, expected {case.invalid_field!r}")
    return problems


# Methods that end the calling session when they succeed.
SESSION_ENDING = frozenset(
    {"/sevvo.auth.v1.AuthService/SignOut", "/sevvo.auth.v1.AuthService/ChangePassword"}
)


def test_every_method_has_an_access_policy() -> None:
    """Every sevvo RPC the descriptors declare is served under a declared access policy."""
    missing = [
        path_of(m)
        for m in all_methods()
        if not path_of(m).startswith("/grpc.") and path_of(m) not in ACCESS
    ]
    assert missing == []


def test_no_hostile_input_gets_internal_unknown_or_reaches_the_logs(world: World) -> None:
    """Empty, huge, NUL, non-UUID, out-of-range, malformed tokens and masks, garbage bytes."""
    cases: list[Case] = []
    for method in all_methods():
        cases += value_cases(world, method)
        cases += bytes_cases(method)
        cases += bearer_cases(world, method)
    # A sign-out that succeeds ends its caller's session: each such case gets a session of
    # its own, signed in before any case runs (failed sign-ins among the cases would
    # otherwise spend the source's sign-in budget first).
    for index, case in enumerate(cases):
        if case.method in SESSION_ENDING and case.caller == "member":
            fresh = f"member-{index}"
            world.tokens[fresh] = (
                auth_pb2_grpc.AuthServiceStub(world.channel(None))
                .SignIn(auth_pb2.SignInRequest(email=world.member_email, password=PASSWORD))
                .session_token
            )
            cases[index] = dataclasses.replace(case, caller=fresh)
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda c: _call(world, c), cases))

    failures = [
        f"{o.case.method} {o.case.label} as {o.case.caller}: {problem}"
        for o in outcomes
        for problem in _problems(o)
    ]
    output = world.logs.getvalue()
    assert '"event": "rpc"' in output, "service logs were not captured"
    echoed = sorted(
        {
            f"{o.case.method} {o.case.label}"
            for o in outcomes
            for value in o.case.hostile
            if MARK in value and value in output
        }
    )
    marker_lines = [line[:300] for line in output.splitlines() if MARK in line]
    print(f"{len(cases)} cases over {len(all_methods())} methods")
    assert failures == [], "\n".join(failures)
    assert echoed == [] and marker_lines == [], "\n".join(echoed + marker_lines[:20])
