"""A Temporal client per org: the org's namespace, its payload keys and its Temporal token.

Every org's work and schedules live in its own namespace (``temporal.namespace_for``). The
orchestrator registers a namespace the first time it needs it (the first workflow, schedule
or agent key fetch of the org in this process); registration is idempotent, so replicas and
restarts may race it. In production Temporal's JWT authorizer admits a call to a namespace
only with a token granting it, so each org's client is its own connection carrying a token
from auth for that org's namespace alone, renewed before it expires. Without a token source
(the dev server enforces nothing) the org clients share the base connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
import temporalio.converter
from temporalio.client import Client
from temporalio.service import ServiceClient

from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime import temporal
from sevvo.runtime.errors import Unavailable
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import KeyRefresher, OrgPayloadKeys, data_converter

log = get_logger(__name__)

# How long Temporal keeps a closed workflow's history in a namespace the orchestrator creates.
DEFAULT_RETENTION = timedelta(days=3)
# Each org's client holds a connection of its own (its token rides on it): only the orgs used
# most recently keep theirs, and an org's next use after eviction connects again. A watcher
# holding an evicted client keeps it until its run ends.
MAX_ORG_CLIENTS = 1000


@dataclass(frozen=True)
class TemporalGrant:
    """A Temporal token for one org's namespace and when it expires (epoch seconds)."""

    token: str
    issued_at: float
    expires_at: float

    def renew_due(self, now: float) -> bool:
        """Past two thirds of its life: time to ask for the next one."""
        return now >= self.issued_at + (self.expires_at - self.issued_at) * 2 / 3


TokenSource = Callable[[uuid.UUID], Awaitable[TemporalGrant]]
"""Issues a Temporal token granting one org's namespace."""


class AuthTemporalTokens:
    """Asks auth for Temporal tokens, proving the orchestrator with its service token."""

    def __init__(self, endpoint: str, tls: ClientTls, service_token: str) -> None:
        self._channel = secure_aio_channel(endpoint, tls)
        self._stub = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._metadata = ((temporal.SERVICE_TOKEN_METADATA, service_token),)

    async def __call__(self, org_id: uuid.UUID) -> TemporalGrant:
        """A token for the org's namespace; Unavailable when auth cannot issue one."""
        try:
            response = await self._stub.IssueTemporalToken(
                auth_pb2.IssueTemporalTokenRequest(org_id=str(org_id)),
                metadata=self._metadata,
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"auth did not issue a Temporal token ({exc.code().name})",
                reason="TEMPORAL_TOKEN_UNAVAILABLE",
            ) from None
        return TemporalGrant(
            response.temporal_token,
            time.time(),
            response.expire_time.seconds + response.expire_time.nanos / 1e9,
        )

    async def close(self) -> None:
        """Closes the channel to auth."""
        await self._channel.close()


@dataclass
class _OrgClient:
    client: Client
    grant: TemporalGrant | None


class OrgClients:
    """The base connection, and a client per org in the org's namespace."""

    def __init__(
        self,
        base: Client,
        keys_for: Callable[[uuid.UUID], OrgPayloadKeys],
        *,
        tokens: TokenSource | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        legacy: bool = True,
        clock: Callable[[], float] = time.time,
        max_orgs: int = MAX_ORG_CLIENTS,
    ) -> None:
        self.base = base
        self.legacy = legacy
        self._keys_for = keys_for
        self._tokens = tokens
        self._retention = retention
        self._clock = clock
        self._max_orgs = max_orgs
        self._clients: OrderedDict[uuid.UUID, _OrgClient] = OrderedDict()
        self._legacy_clients: OrderedDict[uuid.UUID, Client] = OrderedDict()
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    def _ready(self, org_id: uuid.UUID) -> Client | None:
        entry = self._clients.get(org_id)
        if entry is None or (entry.grant is not None and entry.grant.renew_due(self._clock())):
            return None
        self._clients.move_to_end(org_id)
        return entry.client

    def _keep(self, org_id: uuid.UUID, entry: _OrgClient) -> None:
        """Keeps the org's client, forgetting the least recently used beyond the bound."""
        self._clients[org_id] = entry
        self._clients.move_to_end(org_id)
        while len(self._clients) > self._max_orgs:
            evicted, _ = self._clients.popitem(last=False)
            lock = self._locks.get(evicted)
            if lock is not None and not lock.locked():
                del self._locks[evicted]

    def __len__(self) -> int:
        """How many orgs' clients are kept now."""
        return len(self._clients)

    async def for_org_async(self, org_id: uuid.UUID) -> Client:
        """The org's client in its namespace, registering the namespace on first use."""
        client = self._ready(org_id)
        if client is not None:
            return client
        async with self._locks.setdefault(org_id, asyncio.Lock()):
            entry = self._clients.get(org_id)
            if entry is None:
                base = self.base
                entry = await self._open(org_id)
                # One opened on a base replaced meanwhile serves this call but is not kept.
                if self.base is base:
                    self._keep(org_id, entry)
            elif entry.grant is not None and entry.grant.renew_due(self._clock()):
                await self._renew(org_id, entry)
            return entry.client

    async def for_new_work(self, org_id: uuid.UUID) -> Client:
        """The org's client, its keys read from the store first: work started with it is
        encrypted with the key current now, even if another replica rotated it a moment ago."""
        await asyncio.to_thread(self._keys_for, org_id)
        return await self.for_org_async(org_id)

    async def _converter(self, org_id: uuid.UUID) -> temporalio.converter.DataConverter:
        """The org's codec; ``keys_for`` updates in place the keys object it returned before.

        A result under a key newer than this replica has seen (an agent fetched it after a
        rotation another replica made) is read after one fetch from the store.
        """
        keys = await asyncio.to_thread(self._keys_for, org_id)
        refresher = KeyRefresher(lambda: asyncio.to_thread(self._keys_for, org_id))
        return data_converter(keys, refresher)

    async def legacy_for_org(self, org_id: uuid.UUID) -> Client | None:
        """The org's client in the namespace every org shared before (``base``'s), or None
        once the old layout is no longer drained: runs started there before the upgrade are
        still settled there."""
        if not self.legacy:
            return None
        client = self._legacy_clients.get(org_id)
        if client is None:
            config = self.base.config()
            config["data_converter"] = await self._converter(org_id)
            client = self._legacy_clients.setdefault(org_id, Client(**config))
        self._legacy_clients.move_to_end(org_id)
        while len(self._legacy_clients) > self._max_orgs:
            self._legacy_clients.popitem(last=False)
        return client

    def replace_base(self, base: Client) -> None:
        """Makes ``base`` (a connection with renewed TLS files) the one every org's client
        is made from; each org's client is made again at its next use. Clients already
        handed out (a watcher's) keep working on the old connection until they are done."""
        self.base = base
        self._clients.clear()
        self._legacy_clients.clear()

    async def _open(self, org_id: uuid.UUID) -> _OrgClient:
        namespace = temporal.namespace_for(str(org_id))
        config = self.base.config()
        config["namespace"] = namespace
        config["data_converter"] = await self._converter(org_id)
        grant = None
        if self._tokens is not None:
            grant = await self._tokens(org_id)
            # Temporal metadata belongs to a connection: one connection per org, so no call
            # ever carries another org's token.
            config["service_client"] = await ServiceClient.connect(
                dataclasses.replace(
                    self.base.service_client.config,
                    rpc_metadata=temporal.rpc_metadata(grant.token),
                )
            )
        client = Client(**config)
        if await temporal.ensure_namespace(client.workflow_service, namespace, self._retention):
            log.info("temporal namespace registered", org_id=str(org_id), namespace=namespace)
        return _OrgClient(client, grant)

    async def _renew(self, org_id: uuid.UUID, entry: _OrgClient) -> None:
        assert self._tokens is not None
        entry.grant = await self._tokens(org_id)
        entry.client.rpc_metadata = temporal.rpc_metadata(entry.grant.token)

    async def renew_forever(self, interval: float) -> None:
        """Renews org tokens past two thirds of their life, every ``interval`` seconds.

        Watchers hold an org's client for minutes; its token must not expire under them.
        """
        while True:
            await asyncio.sleep(interval)
            for org_id, entry in list(self._clients.items()):
                if entry.grant is None or not entry.grant.renew_due(self._clock()):
                    continue
                try:
                    async with self._locks.setdefault(org_id, asyncio.Lock()):
                        if entry.grant.renew_due(self._clock()):
                            await self._renew(org_id, entry)
                except Exception as exc:  # Auth may be restarting; the next pass tries again.
                    log.warning("temporal token not renewed", error=type(exc).__name__)
