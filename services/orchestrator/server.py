"""Wires the orchestrator together: store, payload keys, Temporal client and servicers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from services.orchestrator import schedules
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.connections_client import ConnectionLookup, ConnectionsClient
from services.orchestrator.domain import OrchestratorDomain, longest_run
from services.orchestrator.model_schedules import ModelScheduler
from services.orchestrator.model_servicer import ModelServicer
from services.orchestrator.model_store import ModelStore
from services.orchestrator.models import ModelsDomain
from services.orchestrator.org_clients import AuthTemporalTokens, OrgClients
from services.orchestrator.payload_keys import KeyPolicy, PayloadKeys
from services.orchestrator.proofs import ProofKeys
from services.orchestrator.servicer import (
    OrchestratorServicer,
    PayloadKeyServicer,
    WorkProofServicer,
)
from services.orchestrator.store import OrchestratorStore
from sevvo.orchestrator.v1 import (
    models_pb2,
    models_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    work_proof_pb2,
    work_proof_pb2_grpc,
)
from sevvo.runtime import temporal
from sevvo.runtime.auth_client import remote_verifier
from sevvo.runtime.grpc_client import ClientTls
from sevvo.runtime.grpc_server import Access, ServerSpec, run_until_signalled, start_service
from sevvo.runtime.health import (
    ReadinessCheck,
    database_check,
    verification_keys_check,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import TokenVerifier

log = get_logger(__name__)

_ORCHESTRATOR = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
_KEYS = orchestrator_pb2.DESCRIPTOR.services_by_name["PayloadKeyService"].full_name
_PROOFS = work_proof_pb2.DESCRIPTOR.services_by_name["WorkProofService"].full_name
_MODELS = models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name

ACCESS: dict[str, Access] = {
    f"/{_ORCHESTRATOR}/TestConnection": Access.USER,
    # User-triggered only: no agent, schedule or service identity may start a preview.
    f"/{_ORCHESTRATOR}/PreviewQuery": Access.USER,
    f"/{_ORCHESTRATOR}/GetRun": Access.USER,
    f"/{_ORCHESTRATOR}/WaitRun": Access.USER,
    f"/{_ORCHESTRATOR}/ListRuns": Access.USER,
    # Auth, for the new admin of an org it just created; or any admin of the org.
    f"/{_ORCHESTRATOR}/PrepareOrgNamespace": Access.ADMIN,
    f"/{_ORCHESTRATOR}/RotateRootCredentials": Access.ADMIN,
    f"/{_ORCHESTRATOR}/SetRootRotationSchedule": Access.ADMIN,
    f"/{_ORCHESTRATOR}/GetRootRotationSchedule": Access.USER,
    # Members too, but only for a connection that no longer exists (the domain checks).
    f"/{_ORCHESTRATOR}/DeleteRootRotationSchedule": Access.USER,
    # Payload keys decrypt the org's workflow history: its own agents only.
    f"/{_KEYS}/GetPayloadKeys": Access.AGENT,
    # An org admin, or auth forwarding the admin who revoked a deployment.
    f"/{_KEYS}/RotatePayloadKey": Access.ADMIN,
    # Public keys, like auth's: agents and connections verify proofs of origin with them.
    f"/{_PROOFS}/GetWorkProofKeys": Access.PUBLIC,
    # A proof for the caller's org's own proof-less runs from before an upgrade.
    f"/{_PROOFS}/VouchForWork": Access.AGENT,
    # Models are used like connections: members define, change and sync them (as they save
    # and preview connections); removing one, and so its schedule, is an admin's.
    **{
        f"/{_MODELS}/{method}": Access.USER
        for method in ("CreateModel", "GetModel", "ListModels", "UpdateModel", "SyncModel")
    },
    f"/{_MODELS}/DeleteModel": Access.ADMIN,
}


class OrchestratorApp:
    """The orchestrator's long-lived parts."""

    def __init__(self, config: OrchestratorConfig) -> None:
        self.config = config
        self.store = OrchestratorStore(config.database_url, migration=config.migration)
        test_timeout = timedelta(seconds=config.test_timeout_seconds)
        queue_allowance = timedelta(seconds=config.queue_seconds)
        self.payload_keys = PayloadKeys(
            self.store,
            config.keyring,
            KeyPolicy(
                rotation_period=timedelta(days=config.payload_key_rotation_days),
                history_retention=timedelta(days=config.temporal_retention_days),
                longest_run=longest_run(test_timeout, queue_allowance),
            ),
        )
        self.proof_keys = ProofKeys(self.store, config.keyring)
        self.domain: OrchestratorDomain | None = None
        self.models: ModelsDomain | None = None
        self._auth_channel: grpc.Channel | None = None
        self._connections: ConnectionsClient | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._key_maintenance: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._mover: asyncio.Task[None] | None = None
        self._tls_follower: asyncio.Task[None] | None = None
        self._tokens: AuthTemporalTokens | None = None

    async def open(self, *, prove_schedules: bool = True) -> None:
        """Migrates the schema, connects to Temporal and starts reconciling runs.

        ``prove_schedules=False`` leaves the schedules' proofs to a later call of
        prove_schedules(): for a caller that serves auth itself, whose port is not open yet.
        """
        await asyncio.to_thread(self.store.open)
        # The base connection carries no token: each org's client opens its own with the
        # org's token (services/orchestrator/org_clients.py). Its namespace is the old shared
        # one, drained after the upgrade to namespaces per org.
        client = await self._connect_temporal(
            temporal.tls_config(ca_file=self.config.ca_file) if self.config.temporal_tls else False
        )
        if self.config.service_token is not None:
            self._tokens = AuthTemporalTokens(
                self.config.auth_endpoint,
                ClientTls(ca_file=self.config.ca_file),
                self.config.service_token,
            )
        clients = OrgClients(
            client,
            self.payload_keys.fresh,
            tokens=self._tokens,
            retention=timedelta(days=self.config.temporal_retention_days),
            legacy=self.config.temporal_drain_legacy,
        )
        self._connections = ConnectionsClient(
            self.config.connections_endpoint, ClientTls(ca_file=self.config.ca_file)
        )
        self.domain = OrchestratorDomain(
            self.store,
            self.payload_keys,
            clients,
            self._connections,
            test_timeout=timedelta(seconds=self.config.test_timeout_seconds),
            queue_allowance=timedelta(seconds=self.config.queue_seconds),
            proofs=self.proof_keys,
        )
        self.models = models_domain(self.store, self._connections, self.domain)
        loop = asyncio.get_running_loop()
        if self.config.temporal_drain_legacy:
            self._mover = loop.create_task(
                _move_legacy_schedules(clients, self.domain.prove_schedules),
                name="schedule-mover",
            )
        if self._tokens is not None:
            self._renewer = loop.create_task(
                clients.renew_forever(30.0), name="temporal-token-renewer"
            )
        if self.config.temporal_tls:

            async def replace(tls: TLSConfig) -> None:
                clients.replace_base(await self._connect_temporal(tls))

            self._tls_follower = loop.create_task(
                temporal.follow_tls_files(ca_file=self.config.ca_file, replace=replace),
                name="temporal-tls",
            )
        if prove_schedules:
            await self.prove_schedules()
        # Runs whose watcher died with an earlier process are settled from the first pass on.
        self._reconciler = asyncio.get_running_loop().create_task(
            self.domain.runs.reconcile_forever(self.config.reconcile_seconds),
            name="run-reconciler",
        )
        self._key_maintenance = asyncio.get_running_loop().create_task(
            self.domain.maintain_payload_keys_forever(self.config.reconcile_seconds),
            name="payload-key-maintenance",
        )
        # Every replica looks; the store hands each due slot to one of them.
        scheduler = ModelScheduler(ModelStore(self.store), self.domain.start_scheduled_sync)
        self._scheduler = asyncio.get_running_loop().create_task(
            scheduler.run_forever(self.config.reconcile_seconds), name="model-scheduler"
        )

    async def _connect_temporal(self, tls: TLSConfig | bool) -> Client:
        """The base connection to Temporal, in the namespace every org shared before."""
        return await Client.connect(
            self.config.temporal_address,
            namespace=self.config.temporal_legacy_namespace,
            tls=tls,
        )

    def watch_revocations(self, verifier: TokenVerifier) -> None:
        """Rotates the payload key of any org a deployment revoked in ``verifier``'s eyes was
        given, even when auth's call to rotate it at revocation did not arrive."""
        if self.domain is None:
            raise RuntimeError("open() the orchestrator before watching revocations")
        self.domain.revoked_deployments = verifier.revoked_deployments

    async def aclose(self) -> None:
        """Stops reconciling and closes the store and channels."""
        for task in (
            self._reconciler,
            self._key_maintenance,
            self._scheduler,
            self._renewer,
            self._mover,
            self._tls_follower,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tokens is not None:
            await self._tokens.close()
        if self.domain is not None:
            await self.domain.runs.close()
        if self._connections is not None:
            await self._connections.close()
        self.close()

    def close(self) -> None:
        """Closes the store and the channel to auth."""
        for task in (self._reconciler, self._key_maintenance):
            if task is not None:
                task.cancel()
        self.store.close()
        if self._auth_channel is not None:
            self._auth_channel.close()

    def remote_verifier(self) -> TokenVerifier:
        """A verifier that learns keys and revocations from auth over TLS."""
        verifier, self._auth_channel = remote_verifier(
            self.config.auth_endpoint,
            ClientTls(ca_file=self.config.ca_file),
            refresh_seconds=self.config.refresh_seconds,
            leeway_seconds=self.config.leeway_seconds,
        )
        return verifier

    async def prove_schedules(self) -> None:
        """Gives a proof to the schedules set before inputs carried proofs, or the agent
        refuses their runs; a failure is logged, and the next start tries again."""
        if self.domain is None:
            raise RuntimeError("open() the orchestrator first")
        try:
            await self.domain.prove_schedules()
        except Exception as exc:  # Temporal or auth may be down.
            log.warning("schedules not re-proved", error=type(exc).__name__)

    def readiness(self, verifier: TokenVerifier) -> list[ReadinessCheck]:
        """What this service needs to serve: its database, and auth's public keys in
        ``verifier``. Its keyring needs no check: configuration refuses to start without
        a valid one."""
        return [database_check(self.store), verification_keys_check(verifier)]

    def spec(self) -> ServerSpec:
        """The services the orchestrator adds to a gRPC server."""
        domain, models = self.domain, self.models
        if domain is None or models is None:
            raise RuntimeError("open() the orchestrator before serving it")

        def register(server: grpc.aio.Server) -> None:
            orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
                OrchestratorServicer(domain), server
            )
            orchestrator_pb2_grpc.add_PayloadKeyServiceServicer_to_server(
                PayloadKeyServicer(domain), server
            )
            work_proof_pb2_grpc.add_WorkProofServiceServicer_to_server(
                WorkProofServicer(domain), server
            )
            models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(models), server)

        return ServerSpec(
            name="orchestrator",
            register=register,
            service_names=[_ORCHESTRATOR, _KEYS, _PROOFS, _MODELS],
            access=ACCESS,
        )


def models_domain(
    store: OrchestratorStore, connections: ConnectionLookup, domain: OrchestratorDomain
) -> ModelsDomain:
    """ModelService's domain on the orchestrator's store, starting syncs through ``domain``."""
    return ModelsDomain(ModelStore(store), connections, start_sync=domain.start_sync)


async def _move_legacy_schedules(
    clients: OrgClients, prove: Callable[[], Awaitable[int]], retry_seconds: float = 5.0
) -> None:
    """Moves the old layout's rotation schedules into their orgs' namespaces, retrying until
    it succeeds once (auth, which issues the namespaces' tokens, may start after us), then
    gives the moved ones the proof their runs need."""
    while True:
        try:
            moved = await schedules.move_legacy(clients.base, clients.for_org_async)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # No old namespace: nothing to move.
                log.info("no legacy namespace", namespace=clients.base.namespace)
                return
            log.warning("legacy schedules not moved yet", status=exc.status.name)
            await asyncio.sleep(retry_seconds)
        except Exception as exc:  # Meanwhile the old schedules keep running where they are.
            log.warning("legacy schedules not moved yet", error=type(exc).__name__)
            await asyncio.sleep(retry_seconds)
        else:
            log.info("legacy schedules checked", moved=moved)
            if moved:
                try:
                    await prove()
                except Exception as exc:  # The next start-up proves what is left.
                    log.warning("moved schedules not re-proved", error=type(exc).__name__)
            return


async def serve(config: OrchestratorConfig) -> None:
    """Runs the orchestrator until SIGINT or SIGTERM."""
    app = OrchestratorApp(config)
    await app.open()
    verifier = app.remote_verifier()
    verifier.start()
    app.watch_revocations(verifier)
    server, port, health = await start_service(
        app.spec(),
        verifier=verifier,
        checks=app.readiness(verifier),
        tls=config.tls,
        host=config.host,
        port=config.port,
        settings=config.health,
    )
    log.info("orchestrator serving", port=port)
    await run_until_signalled(server, health, drain=config.health.drain_seconds)
    verifier.stop()
    await app.aclose()
