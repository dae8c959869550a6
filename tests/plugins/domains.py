"""pytest plugin: the control plane's domains on a real Postgres store, without any server.

The seam for fast tests of domain rules (DESIGN.md "Tests in layers"): a domain object is
built on its real store and called with a ``Principal`` as a verified token would give it, so
a rule is tested in milliseconds with real SQL, and the real-server tests keep only the
wiring (a servicer maps the domain's error to its gRPC code). One store per test module; each
test acts as an org of its own (``org_caller``), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.connections.domain import ConnectionsDomain
from services.connections.kinds import kind_for_request, kind_named
from services.connections.leases import LeasesDomain
from services.connections.store import ConnectionRow, ConnectionStore
from services.orchestrator.connections_client import ConnectionInfo
from services.orchestrator.store import OrchestratorStore
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.sealing import Keyring
from sevvo.runtime.tokens import Principal, PrincipalKind


@dataclass(frozen=True)
class OrgCallers:
    """An org's admin, member and agent, as their verified tokens would name them."""

    org_id: str
    admin: Principal
    member: Principal
    agent: Principal


def org_callers() -> OrgCallers:
    """The callers of a new org (no auth service involved: the domain trusts its Principal)."""
    org_id = str(uuid.uuid4())
    expires = datetime.now(UTC) + timedelta(hours=1)

    def principal(kind: PrincipalKind, role: str | None) -> Principal:
        return Principal(
            kind=kind,
            org_id=org_id,
            subject_id=str(uuid.uuid4()),
            token_id=str(uuid.uuid4()),
            expires_at=expires,
            role=role,
        )

    return OrgCallers(
        org_id=org_id,
        admin=principal(PrincipalKind.USER, "admin"),
        member=principal(PrincipalKind.USER, "member"),
        agent=principal(PrincipalKind.AGENT, None),
    )


@dataclass
class ConnectionsDomains:
    """The connections service's domains on one store, with no orchestrator (saves untested)."""

    database_url: str
    store: ConnectionStore
    connections: ConnectionsDomain
    leases: LeasesDomain

    async def create(self, caller: Principal, request: pb.CreateConnectionRequest) -> ConnectionRow:
        """Creates a connection as CreateConnection would, from its request message."""
        target, mode = kind_for_request(request).from_request(request)
        return await self.connections.create(caller, request.display_name, target, mode)


class ConnectionsAsLookup:
    """The orchestrator's ConnectionLookup answered by the connections domain in process.

    The real rule on a real store (another org's id is NOT_FOUND exactly like a random one)
    without a server: a bearer here is a caller's token id, registered with ``bearer_for``.
    """

    def __init__(self, connections: ConnectionsDomain) -> None:
        self._connections = connections
        self._callers: dict[str, Principal] = {}

    def bearer_for(self, caller: Principal) -> str:
        """The bearer that stands for ``caller`` in lookups."""
        self._callers[caller.token_id] = caller
        return caller.token_id

    async def get(self, bearer: str, connection_id: str, org_id: str = "") -> ConnectionInfo:
        """The connection as the bearer's caller may see it, or NotFound."""
        row = await asyncio.to_thread(self._connections.get, self._callers[bearer], connection_id)
        return ConnectionInfo(
            str(row.id),
            dynamic=row.credential_mode == "dynamic",
            type=row.type,
            purposes=frozenset(kind_named(row.type).purposes),
        )


@pytest.fixture(scope="module")
def connections_domains(module_database_url: str) -> Iterator[ConnectionsDomains]:
    """connections' domains on a migrated store of the module's own database."""
    store = ConnectionStore(module_database_url)
    store.open()
    try:
        yield ConnectionsDomains(
            database_url=module_database_url,
            store=store,
            connections=ConnectionsDomain(store, Keyring.generate("k1")),
            leases=LeasesDomain(store),
        )
    finally:
        store.close()


@pytest.fixture
def orchestrator_store(database_url: str) -> Iterator[OrchestratorStore]:
    """The orchestrator's store (and the audit log) migrated on a fresh database of the test's
    own, for tests that count every row of a table."""
    store = OrchestratorStore(database_url)
    store.open()
    try:
        yield store
    finally:
        store.close()


__all__ = ["ConnectionsAsLookup", "ConnectionsDomains", "OrgCallers", "org_callers"]
