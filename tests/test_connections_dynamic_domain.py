"""Privileged-password rotation rules through the domain seam: ConnectionsDomain on a real
Postgres store, no servers.

Which rotations are refused (a role another connection logs in as; malformed stage ids,
passwords and reasons) are rules of services/connections/domain.py.
tests/test_connections_dynamic.py keeps the cases that need the real TLS servers: agent-only
RPCs, tenancy, audit, and one case of each refusal to prove the servicer maps it to its gRPC
code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from services.connections.store import ConnectionRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument, SevvoError
from tests.plugins.domains import ConnectionsDomains, OrgCallers, org_callers

SECRET = "privileged-Pa55-canary"
NEW_SECRET = "rotated-Pa55-canary-2"
OTHER_SECRET = "rotated-Pa55-canary-3"
STAGE_A = "5f0c3d1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f"


def _dynamic(name: str, password: str, **changes: Any) -> pb.CreateConnectionRequest:
    values: dict[str, Any] = {
        "host": "db.acme.internal",
        "database": "analytics",
        "privileged_username": "sevvo_admin",
        "privileged_password": password,
        "ssl_mode": pb.SSL_MODE_REQUIRE,
    }
    values.update(changes)
    return pb.CreateConnectionRequest(display_name=name, dynamic=pb.PostgresDynamic(**values))


def _fields(name: str, password: str, **changes: Any) -> pb.CreateConnectionRequest:
    values: dict[str, Any] = {
        "host": "db.acme.internal",
        "database": "analytics",
        "username": "reader",
        "password": password,
        "ssl_mode": pb.SSL_MODE_REQUIRE,
    }
    values.update(changes)
    return pb.CreateConnectionRequest(display_name=name, fields=pb.PostgresFields(**values))


class Org:
    """An org with one dynamic connection, acting through the domain as its agent."""

    def __init__(self, domains: ConnectionsDomains) -> None:
        self.domains = domains
        self.callers: OrgCallers = org_callers()
        self.connection = self.create(_dynamic("dyn", SECRET))

    def create(self, request: pb.CreateConnectionRequest) -> ConnectionRow:
        """Creates a connection as the org's admin."""
        return asyncio.run(self.domains.create(self.callers.admin, request))

    def stage(self, password: str = NEW_SECRET, stage_id: str = STAGE_A) -> None:
        """Stages a new privileged password, as the agent's rotation does."""
        self.domains.connections.stage_password(
            self.callers.agent, str(self.connection.id), password, True, stage_id
        )

    def pending(self) -> str | None:
        """The staged password the agent would resolve, if any."""
        target = self.domains.connections.resolve(
            self.callers.agent, str(self.connection.id), "lease"
        )
        return target.pending_password


@pytest.fixture
def org(connections_domains: ConnectionsDomains) -> Org:
    """A fresh org with a dynamic connection (privileged role sevvo_admin on db.acme.internal)."""
    return Org(connections_domains)


def _refused(call: Callable[[], object]) -> SevvoError:
    with pytest.raises(SevvoError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("other", "shared"),
    [
        ({"mode": "dynamic"}, True),
        ({"mode": "fields"}, True),
        ({"mode": "dynamic", "host": "DB.Acme.Internal."}, True),
        ({"mode": "dynamic", "port": 6432}, False),
        ({"mode": "dynamic", "username": "other_admin"}, False),
        ({"mode": "dynamic", "host": "10.0.0.5"}, False),  # Same server? Not recognised.
    ],
    ids=["dynamic", "fields", "host-case-and-dot", "other-port", "other-user", "other-host"],
)
def test_staging_is_refused_while_another_connection_logs_in_as_the_role(
    org: Org, other: dict[str, Any], shared: bool
) -> None:
    """Same host (any case, trailing dot), port and username: refused, naming the other."""
    login = {"host": other.get("host", "db.acme.internal"), "port": other.get("port", 5432)}
    username = other.get("username", "sevvo_admin")
    if other["mode"] == "dynamic":
        twin = org.create(_dynamic("twin", OTHER_SECRET, privileged_username=username, **login))
    else:
        twin = org.create(_fields("twin", OTHER_SECRET, username=username, **login))
    if not shared:
        org.stage()
        assert org.pending() == NEW_SECRET
        return
    refused = _refused(org.stage)
    assert (type(refused), refused.reason) == (FailedPrecondition, "PRIVILEGED_ROLE_SHARED")
    assert f'"twin" ({twin.id})' in refused.message
    assert refused.metadata.get("connection_ids") == str(twin.id)
    assert NEW_SECRET not in refused.message and OTHER_SECRET not in refused.message
    assert org.pending() is None


def test_a_connection_of_another_org_on_the_same_role_is_not_named(
    org: Org, connections_domains: ConnectionsDomains
) -> None:
    """Detection stays inside the org: another org's connection is neither seen nor named."""
    Org(connections_domains)  # Another org, its connection on the very same role.
    org.stage()
    assert org.pending() == NEW_SECRET


@pytest.mark.parametrize("rpc", ["stage", "commit"])
def test_a_stage_id_must_be_a_uuid(org: Org, rpc: str) -> None:
    """A stage id that is not a UUID is InvalidArgument on stage_id."""
    connections, agent = org.domains.connections, org.callers.agent
    calls: dict[str, Callable[[], object]] = {
        "stage": lambda: org.stage(stage_id="' or 1=1 --"),
        "commit": lambda: connections.commit_password(agent, str(org.connection.id), "' or 1=1 --"),
    }
    refused = _refused(calls[rpc])
    assert isinstance(refused, InvalidArgument)
    assert refused.field == "stage_id"


# (call on the domain as the agent, the field named); the unset outcome enum and a free-text
# failure reason are also sent over the wire by tests/test_connections_dynamic.py.
INVALID_ROTATION: dict[str, tuple[Callable[[Org], object], str]] = {
    "empty-new": (
        lambda o: o.domains.connections.replace_password(o.callers.agent, str(o.connection.id), ""),
        "new_password",
    ),
    "nul-pending": (lambda o: o.stage(password="x\x00"), "pending_password"),
    "bad-id": (
        lambda o: o.domains.connections.commit_password(o.callers.agent, "nope", ""),
        "connection_id",
    ),
    "no-reason": (
        lambda o: o.domains.connections.record_root_rotation(
            o.callers.agent, str(o.connection.id), False, ""
        ),
        "failure_reason",
    ),
    "free-text-reason": (
        lambda o: o.domains.connections.record_root_rotation(
            o.callers.agent, str(o.connection.id), False, f"password {SECRET} rejected"
        ),
        "failure_reason",
    ),
}


@pytest.mark.parametrize(("call", "field"), list(INVALID_ROTATION.values()), ids=INVALID_ROTATION)
def test_invalid_rotation_requests_name_the_field(
    org: Org, call: Callable[[Org], object], field: str
) -> None:
    """Malformed rotation requests are InvalidArgument naming the field, echoing no secret;
    the stored password is untouched."""
    refused = _refused(lambda: call(org))
    assert isinstance(refused, InvalidArgument)
    assert refused.field == field
    assert SECRET not in str(refused)
    target = org.domains.connections.resolve(org.callers.agent, str(org.connection.id), "lease")
    assert (target.password, target.pending_password) == (SECRET, None)
