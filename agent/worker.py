"""The agent's life: get a bearer and payload keys, then poll ``tenant-{orgId}`` until stopped.

The queue is polled in the org's own namespace, named by the token exchange, with the Temporal
token that came with the bearer (renewed with it). Until the old layout is drained it is also
polled in the namespace every org shared before (SEVVO_TEMPORAL_DRAIN_LEGACY).

Every connection it makes toward the control plane is outbound: the control plane's gRPC
endpoint and the Temporal frontend, both over TLS. The only thing it listens on is the
credential API for the customer's workloads beside it (agent/credential_server.py): a Unix
socket, and an in-cluster TLS port when configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agent.activities import AgentActivities
from agent.bearer import AuthorisationLost, BearerSession, DeploymentRevoked
from agent.config import AgentConfig
from agent.credential_broker import (
    CredentialBroker,
    PrivilegedSessions,
    RoleSettings,
    WorkloadBearers,
)
from agent.credential_server import serving
from agent.leases import LeaseManager, Reaper
from agent.liveness import Heartbeat
from agent.sidecar import run_sidecar
from agent.warm_pool import WarmPool
from agent.work_gate import WorkGate, key_cache
from agent.workflows import (
    CredentialTestWorkflow,
    PreviewQueryWorkflow,
    RootRotationWorkflow,
    SyncWorkflow,
)
from sevvo.auth.v1 import auth_pb2_grpc
from sevvo.connections.v1 import connections_pb2_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc, work_proof_pb2_grpc
from sevvo.runtime import temporal
from sevvo.runtime.auth_client import remote_verifier
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import KeyRefresher, OrgPayloadKeys, PayloadKey, data_converter

log = get_logger(__name__)
T = TypeVar("T")

# Exit codes a supervisor can act on. Both mean the agent stopped polling and running work
# because it could not prove it is still authorised; restarting helps only for the second.
EXIT_REVOKED = 3
"""The control plane rejected the deployment token: revoked or unknown. Needs a new token."""
EXIT_UNAUTHORISED = 4
"""The control plane refused the agent's authorisation check or renewal for another reason,
or stayed unreachable until the bearer expired. A restart retries from the exchange, which
waits (without running work) until the control plane answers."""
KEY_REFRESH_SECONDS = 300.0
SHUTDOWN_SECONDS = 5.0
POOL_CLOSE_SECONDS = 30.0
TRUST_REFRESH_SECONDS = 2.0
"""How often the warm pool's verifier polls auth's keys and revocations (the services' rate)."""
TRUST_LEEWAY_SECONDS = 10
WORKFLOWS: tuple[type, ...] = (
    CredentialTestWorkflow,
    PreviewQueryWorkflow,
    RootRotationWorkflow,
    SyncWorkflow,
)
"""Every workflow type the agent's workers register. Each needs a recorded history under
tests/workflow_histories/ that its next version replays (tests/test_workflow_replay.py)."""


async def _fetch_keys(
    stub: orchestrator_pb2_grpc.PayloadKeyServiceStub,
) -> tuple[list[PayloadKey], str]:
    response = await stub.GetPayloadKeys(orchestrator_pb2.GetPayloadKeysRequest(), timeout=10)
    return [PayloadKey(k.key_id, k.key) for k in response.keys], response.current_key_id


def _key_refresher(
    stub: orchestrator_pb2_grpc.PayloadKeyServiceStub, keys: OrgPayloadKeys
) -> KeyRefresher:
    """Installs the org's keys afresh when asked: periodically, and at once when a payload
    names a key this agent does not hold yet (work started just after a rotation)."""

    async def fetch() -> None:
        keys.update(*await _fetch_keys(stub))

    return KeyRefresher(fetch)


async def _refresh_keys(refresher: KeyRefresher) -> None:
    # Rotated keys reach a long-running agent without a restart, and retired ones leave it.
    while True:
        await asyncio.sleep(KEY_REFRESH_SECONDS)
        try:
            await refresher.refresh()
        except Exception as exc:  # Keep the keys we have; try again next period.
            log.warning("payload key refresh failed", error=type(exc).__name__)


async def _connect_temporal(
    config: AgentConfig, keys: OrgPayloadKeys, session: BearerSession, refresher: KeyRefresher
) -> Client:
    """Connects to the Temporal frontend, backing off while it is unreachable or refuses TLS."""
    delay = 1.0
    while True:
        try:
            return await Client.connect(
                config.temporal_address,
                # An auth older than namespaces per org names none: the same name, computed.
                namespace=session.temporal_namespace or temporal.namespace_for(session.org_id),
                rpc_metadata=temporal.rpc_metadata(session.temporal_token),
                tls=temporal.tls_config(
                    ca_file=config.ca_file,
                    cert_file=config.temporal_tls_cert,
                    key_file=config.temporal_tls_key,
                    server_name=config.temporal_server_name,
                ),
                data_converter=data_converter(keys, refresher),
            )
        except RuntimeError as exc:  # temporalio reports connect failures as RuntimeError.
            log.warning(
                "temporal unreachable; retrying",
                address=config.temporal_address,
                mtls=config.temporal_tls_cert is not None,
                error=str(exc)[:200],
                retry_in_s=delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def _poll_when_registered(
    worker: Worker,
    queue: str,
    session: BearerSession,
    running: list[Worker],
    ready_file: Path | None = None,
) -> None:
    """Runs the worker once Temporal knows the org's namespace, then until it is shut down.

    The orchestrator registers the namespace when this agent fetches its keys. Until then (the
    orchestrator unreachable, or not yet upgraded to namespaces per org) polling would fail, so
    this waits, while the old shared namespace is still drained beside it.
    """
    client = worker.client
    delay = 1.0
    while True:
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=client.namespace), timeout=timedelta(seconds=10)
            )
            break
        except RPCError as exc:
            log.warning(
                "temporal namespace not ready; retrying",
                namespace=client.namespace,
                status=exc.status.name,
                retry_in_s=delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
    log.info(
        "agent polling",
        task_queue=queue,
        namespace=client.namespace,
        deployment_id=session.deployment_id,
    )
    running.append(worker)
    if ready_file is not None:
        # Renamed into place: a probe (or the dev stack) that sees the file sees all of it.
        write_private_file(ready_file, f"polling {queue}\n")
    await worker.run()


def _worker(client: Client, queue: str, activities: AgentActivities, config: AgentConfig) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[
            activities.test_credentials,
            activities.preview_query,
            activities.rotate_root_credentials,
            activities.sync_model,
        ],
        # Previews and tests run as local activities, rotations as activities: each kind
        # gets the configured number of database sessions at once.
        max_concurrent_activities=config.max_concurrent_work,
        max_concurrent_local_activities=config.max_concurrent_work,
        # Temporal's sandbox re-imports the workflows' module for every workflow run, a
        # fifth of the agent's event loop under load. The three workflows call one activity
        # each and nothing else; tests/test_agent_workflows.py runs them in the sandbox, so
        # a non-deterministic edit still fails there.
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def _drain_legacy(worker: Worker, running: list[Worker]) -> None:
    """Polls the old shared namespace; its failure (a namespace gone, or refused by an
    authorizer) ends this worker only, never the agent."""
    log.info("agent draining the old namespace", namespace=worker.client.namespace)
    running.append(worker)
    try:
        await worker.run()
    except Exception as exc:
        log.warning("old namespace no longer polled", error=type(exc).__name__)
    await asyncio.Event().wait()  # Finishing must not look like the agent stopping.


class _Stopped(Exception):
    """Asked to stop before the agent finished starting."""


async def _unless_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T:
    """Awaits ``awaitable`` unless ``stop`` is set first (then cancels it, raises _Stopped)."""
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    raise _Stopped


async def run_agent(config: AgentConfig, stop: asyncio.Event) -> int:
    """Runs until ``stop`` is set (0), the deployment is revoked (EXIT_REVOKED), or the agent
    can no longer prove it is authorised (EXIT_UNAUTHORISED)."""
    tls = ClientTls(ca_file=config.ca_file)
    session: BearerSession
    channel = secure_aio_channel(config.control_plane_endpoint, tls, lambda: session.bearer())
    session = BearerSession(auth_pb2_grpc.AuthServiceStub(channel), config.credentials)
    closers: list[Callable[[], object]] = []
    # Beats from the start: while the exchange or Temporal waits out an unreachable peer the
    # agent is alive, and a restart would only wait again. The worker joins the conditions
    # once it exists.
    heartbeat = Heartbeat(config.liveness)
    beating = asyncio.create_task(heartbeat.run(), name="liveness")
    try:
        # Each start-up step may wait a long time on an unreachable peer; a stop request
        # (SIGTERM from Kubernetes) must still end the process promptly.
        await _unless_stopped(session.exchange(), stop)
        key_stub = orchestrator_pb2_grpc.PayloadKeyServiceStub(channel)
        keys = OrgPayloadKeys(session.org_id, *await _unless_stopped(_fetch_keys(key_stub), stop))
        refresher = _key_refresher(key_stub, keys)
        client = await _unless_stopped(_connect_temporal(config, keys, session, refresher), stop)

        def hand_over_token() -> None:  # A renewed bearer comes with a renewed Temporal token.
            client.rpc_metadata = temporal.rpc_metadata(session.temporal_token)

        session.on_renewed = hand_over_token
        credentials = connections_pb2_grpc.ConnectionCredentialServiceStub(channel)
        leases = connections_pb2_grpc.LeaseServiceStub(channel)
        proofs = work_proof_pb2_grpc.WorkProofServiceStub(channel)
        gate = WorkGate(session.org_id, key_cache(proofs), proofs, credentials)
        activities = AgentActivities(
            credentials, LeaseManager(leases, credentials), gate, config.file_roots
        )
        queue = temporal.task_queue(session.org_id)
        worker = _worker(client, queue, activities, config)
        pool: WarmPool | None = None
        if config.warm_pool:
            # The services' own verifier (auth's keys and revocations, polled every 2 s), so
            # a pooled borrow is decided here and its claim recorded right after.
            verifier, auth_channel = remote_verifier(
                config.control_plane_endpoint,
                tls,
                refresh_seconds=TRUST_REFRESH_SECONDS,
                leeway_seconds=TRUST_LEEWAY_SECONDS,
            )
            closers.append(auth_channel.close)
            await _unless_stopped(asyncio.to_thread(verifier.start), stop)
            closers.append(verifier.stop)
            pool = WarmPool(
                config.warm_pool,
                leases,
                credentials,
                ca_dir=config.credential_api.ca_dir,
                refill_seconds=config.warm_pool_refill_seconds,
                verifier=verifier,
            )
        broker = CredentialBroker(
            org_id=session.org_id,
            bearers=WorkloadBearers(auth_pb2_grpc.AuthServiceStub(channel)),
            settings=RoleSettings(credentials),
            sessions=PrivilegedSessions(credentials, size=config.credential_api.admin_sessions),
            leases=leases,
            ca_dir=config.credential_api.ca_dir,
            pool=pool,
        )
        # The credential API runs beside the worker and the reaper, and stops after them.
        async with serving(config, broker):
            # Workers that started running; only those can be shut down (and must be).
            running: list[Worker] = []
            polling = asyncio.create_task(
                _poll_when_registered(worker, queue, session, running, config.ready_file),
                name="worker",
            )
            # Alive while the worker task runs and, once it polls, the worker says it runs.
            heartbeat.require("temporal worker", lambda: not polling.done())
            heartbeat.require(
                "temporal worker polling", lambda: worker not in running or worker.is_running
            )
            tasks = {
                polling,
                asyncio.create_task(session.keep_fresh(config.bearer_check_seconds), name="bearer"),
                asyncio.create_task(_refresh_keys(refresher), name="payload-keys"),
                asyncio.create_task(
                    Reaper(credentials, leases).run(config.reaper_seconds),
                    name="reaper",
                ),
                asyncio.create_task(stop.wait(), name="stop"),
            }
            if pool is not None:
                tasks.add(asyncio.create_task(pool.run(), name="warm-pool"))
            workers = [(worker, client.namespace)]
            if (
                config.temporal_drain_legacy
                and config.temporal_legacy_namespace != client.namespace
            ):
                legacy_config = client.config()
                legacy_config["namespace"] = config.temporal_legacy_namespace
                legacy = _worker(Client(**legacy_config), queue, activities, config)
                workers.append((legacy, config.temporal_legacy_namespace))
                tasks.add(asyncio.create_task(_drain_legacy(legacy, running), name="legacy-worker"))

            async def replace_client(tls: TLSConfig) -> None:
                # A renewed CA bundle or client certificate: the workers' next calls go
                # through a client made with it (their calls in flight finish on the old).
                nonlocal client
                new = await Client.connect(
                    config.temporal_address,
                    namespace=client.namespace,
                    rpc_metadata=temporal.rpc_metadata(session.temporal_token),
                    tls=tls,
                    data_converter=client.data_converter,
                )
                for each, namespace in workers:
                    each_config = new.config()
                    each_config["namespace"] = namespace
                    each.client = Client(**each_config)
                client = new

            tasks.add(
                asyncio.create_task(
                    temporal.follow_tls_files(
                        ca_file=config.ca_file,
                        cert_file=config.temporal_tls_cert,
                        key_file=config.temporal_tls_key,
                        server_name=config.temporal_server_name,
                        replace=replace_client,
                    ),
                    name="temporal-tls",
                )
            )
            # Sidecar mode borrows through the API above; it is stopped (its lease revoked,
            # its file removed) first, while the API and the control plane still answer.
            sidecar_stop = asyncio.Event()
            sidecar = (
                asyncio.create_task(run_sidecar(config.sidecar, sidecar_stop), name="sidecar")
                if config.sidecar is not None
                else None
            )
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            log.info("agent stopping", reason=next(iter(done)).get_name())
            if sidecar is not None:
                sidecar_stop.set()
                try:
                    await asyncio.wait_for(sidecar, timeout=SHUTDOWN_SECONDS)
                except Exception as exc:  # Its lease still expires and is reaped.
                    log.warning("sidecar did not stop cleanly", error=type(exc).__name__)
            try:
                # Running activities are cancelled; a stuck poll must not keep the process alive.
                await asyncio.wait_for(
                    asyncio.gather(*(w.shutdown() for w in running), return_exceptions=True),
                    timeout=SHUTDOWN_SECONDS,
                )
            except TimeoutError:
                log.warning("worker did not shut down in time", timeout_s=SHUTDOWN_SECONDS)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, DeploymentRevoked, AuthorisationLost
                ):
                    await task
            if pool is not None:
                # Unclaimed pooled roles go now, not at their expiry (the reaper's fallback).
                try:
                    await asyncio.wait_for(pool.close(), timeout=POOL_CLOSE_SECONDS)
                except TimeoutError:
                    log.warning("warm pool not revoked in time", timeout_s=POOL_CLOSE_SECONDS)
            for task in done:
                failure = None if task.cancelled() else task.exception()
                if task.get_name() != "stop" and failure is not None:
                    raise failure
        log.info("agent stopped")
        return 0
    except _Stopped:
        log.info("agent stopped before it finished starting")
        return 0
    except DeploymentRevoked as exc:
        log.error("agent shut out", reason=str(exc))
        return EXIT_REVOKED
    except AuthorisationLost as exc:
        # Fail safe: work stopped above (the worker was shut down) before this line.
        log.error("agent stopped: authorisation lost", reason=str(exc))
        return EXIT_UNAUTHORISED
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        if config.ready_file is not None:
            config.ready_file.unlink(missing_ok=True)
        for close in reversed(closers):
            close()
        await channel.close()
        log.debug("control plane channel closed")
