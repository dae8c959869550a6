"""The orchestrator's Temporal clients: one namespace, one connection and one token per org.

Against a real Temporal dev server, with a stand-in token source and a clock tests move (the
tokens' format is tests/test_temporal_authorization.py's subject).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from devstack.temporal import TemporalDevServer
from services.orchestrator.org_clients import OrgClients, TemporalGrant
from sevvo.runtime import temporal
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey


@pytest.fixture(scope="module")
def server() -> Iterator[TemporalDevServer]:
    """A throwaway in-memory Temporal dev server for this module."""
    with TemporalDevServer() as dev:
        yield dev


class Tokens:
    """Issues numbered stand-in tokens naming their org, as auth's would be one per org."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.issued: list[uuid.UUID] = []

    async def __call__(self, org_id: uuid.UUID) -> TemporalGrant:
        self.issued.append(org_id)
        return TemporalGrant(f"{org_id}.{len(self.issued)}", self.now[0], self.now[0] + 900)


def _keys(org_id: uuid.UUID) -> OrgPayloadKeys:
    return OrgPayloadKeys(str(org_id), [PayloadKey("pk", secrets.token_bytes(32))], "pk")


def test_each_org_gets_its_namespace_registered_and_its_own_token(
    server: TemporalDevServer,
) -> None:
    """Each org's client is in the org's namespace (registered on first use), on a connection
    of its own that carries that org's token and no other; the base connection carries none."""

    async def scenario() -> None:
        base = await Client.connect(server.address)
        tokens = Tokens([1000.0])
        clients = OrgClients(base, _keys, tokens=tokens, clock=lambda: tokens.now[0])
        org_a, org_b = uuid.uuid4(), uuid.uuid4()
        client_a = await clients.for_org_async(org_a)
        client_b = await clients.for_org_async(org_b)
        assert client_a.namespace == temporal.namespace_for(str(org_a))
        await base.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client_a.namespace)
        )
        assert client_a.rpc_metadata == {"authorization": f"Bearer {org_a}.1"}
        assert client_b.rpc_metadata == {"authorization": f"Bearer {org_b}.2"}
        assert client_a.service_client is not client_b.service_client
        assert dict(base.rpc_metadata) == {}
        assert await clients.for_org_async(org_a) is client_a
        assert tokens.issued == [org_a, org_b]

    asyncio.run(scenario())


def test_an_orgs_token_is_renewed_before_it_expires(server: TemporalDevServer) -> None:
    """Past two thirds of its life the org's token is replaced on the same client."""

    async def scenario() -> None:
        base = await Client.connect(server.address)
        tokens = Tokens([1000.0])
        clients = OrgClients(base, _keys, tokens=tokens, clock=lambda: tokens.now[0])
        org = uuid.uuid4()
        client = await clients.for_org_async(org)
        tokens.now[0] += 599  # Under two thirds of 900 s.
        assert await clients.for_org_async(org) is client
        assert client.rpc_metadata == {"authorization": f"Bearer {org}.1"}
        tokens.now[0] += 2
        assert await clients.for_org_async(org) is client
        assert client.rpc_metadata == {"authorization": f"Bearer {org}.2"}

    asyncio.run(scenario())


def test_namespace_registration_is_idempotent_under_a_race(server: TemporalDevServer) -> None:
    """Eight concurrent registrations of one namespace: one creates it, all succeed."""

    async def scenario() -> None:
        client = await Client.connect(server.address)
        name = temporal.namespace_for(str(uuid.uuid4()))
        created = await asyncio.gather(
            *(
                temporal.ensure_namespace(client.workflow_service, name, timedelta(days=1))
                for _ in range(8)
            )
        )
        assert sorted(created) == [False] * 7 + [True]

    asyncio.run(scenario())


def test_org_clients_are_made_again_from_a_replaced_base(server: TemporalDevServer) -> None:
    """After the base connection is replaced (renewed TLS files), each org's next client is
    made on the new one; the client handed out before still works on the old."""

    async def scenario() -> None:
        old_base = await Client.connect(server.address)
        clients = OrgClients(old_base, _keys)
        org = uuid.uuid4()
        before = await clients.for_org_async(org)
        assert before.service_client is old_base.service_client
        new_base = await Client.connect(server.address)
        clients.replace_base(new_base)
        after = await clients.for_org_async(org)
        assert after.service_client is new_base.service_client
        assert after.namespace == before.namespace
        await before.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=before.namespace)
        )

    asyncio.run(scenario())


def test_only_the_most_recently_used_orgs_keep_a_client(server: TemporalDevServer) -> None:
    """Clients (each with a connection and a token) are bounded: past the bound the least
    recently used org's is forgotten and made again, with a new token, at its next use; a
    client handed out before eviction keeps working."""

    async def scenario() -> None:
        base = await Client.connect(server.address)
        tokens = Tokens([1000.0])
        clients = OrgClients(base, _keys, tokens=tokens, clock=lambda: tokens.now[0], max_orgs=2)
        first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        kept_first = await clients.for_org_async(first)
        await clients.for_org_async(second)
        assert await clients.for_org_async(first) is kept_first  # Used again: now the newest.
        await clients.for_org_async(third)  # Evicts the second, the least recently used.
        assert len(clients) == 2
        assert await clients.for_org_async(first) is kept_first
        assert tokens.issued == [first, second, third]
        await clients.for_org_async(second)
        assert tokens.issued == [first, second, third, second]
        await kept_first.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=kept_first.namespace)
        )

    asyncio.run(scenario())
