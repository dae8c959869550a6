"""The parts around payload key rotation: settings, auth's call, schedules rewritten on a server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.workflowservice.v1 import DescribeScheduleRequest
from temporalio.client import Client

from devstack.processes import free_port
from devstack.temporal import TemporalDevServer
from services.auth.orchestrator_client import OrchestratorNotices
from services.orchestrator import schedules
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.domain import SYNC_TIMEOUT, longest_run
from sevvo.runtime import work_proof
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_client import ClientTls
from sevvo.runtime.payload_codec import (
    KEY_ID_METADATA,
    OrgPayloadKeys,
    PayloadKey,
    data_converter,
)
from sevvo.runtime.sealing import Keyring
from sevvo.runtime.temporal import ROOT_ROTATION_WORKFLOW
from sevvo.runtime.work_proof import ProofSigner
from sevvo.workflows.v1.workflows_pb2 import RootRotationInput

ORG = uuid.uuid4()


@pytest.fixture
def orchestrator_env(tmp_path: Path) -> dict[str, str]:
    """A complete orchestrator environment."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    return {
        "SEVVO_DATABASE_URL": "postgresql://o:pw@db:5432/sevvo",
        "SEVVO_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "SEVVO_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "SEVVO_ORCHESTRATOR_KEYRING": Keyring.generate().to_json(),
        "SEVVO_TEMPORAL_ADDRESS": "temporal:7233",
        "SEVVO_AUTH_ENDPOINT": "auth:8443",
        "SEVVO_CONNECTIONS_ENDPOINT": "connections:8443",
    }


def test_keys_rotate_every_thirty_days_and_histories_are_kept_three(
    orchestrator_env: dict[str, str],
) -> None:
    """Unset, keys rotate every 30 days; the org namespaces the orchestrator registers keep
    closed histories 3 days, which is also how long a superseded key must outlive them."""
    config = OrchestratorConfig.load(orchestrator_env)
    assert (config.payload_key_rotation_days, config.temporal_retention_days) == (30, 3)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SEVVO_PAYLOAD_KEY_ROTATION_DAYS", "0"),
        ("SEVVO_PAYLOAD_KEY_ROTATION_DAYS", "366"),
        ("SEVVO_PAYLOAD_KEY_ROTATION_DAYS", "monthly"),
        ("SEVVO_TEMPORAL_RETENTION_DAYS", "0"),
        ("SEVVO_TEMPORAL_RETENTION_DAYS", "1.5"),
    ],
)
def test_bad_key_settings_fail_at_start_naming_the_variable(
    orchestrator_env: dict[str, str], variable: str, value: str
) -> None:
    """An out-of-range or malformed key setting stops the orchestrator, naming the variable."""
    with pytest.raises(ConfigError, match=variable):
        OrchestratorConfig.load({**orchestrator_env, variable: value})


def test_the_longest_run_covers_the_slowest_kind_and_its_wait_in_the_queue() -> None:
    """A key outlives every run started under it: the slowest kind, the queue wait, a margin."""
    run = longest_run(timedelta(seconds=60), timedelta(minutes=5))
    # The slowest kind is a sync (six hours); a test's or a preview's minute is well inside.
    assert SYNC_TIMEOUT + timedelta(minutes=5) < run <= SYNC_TIMEOUT + timedelta(minutes=6)


def test_an_unreachable_orchestrator_does_not_fail_the_revocation() -> None:
    """Auth's call reports False (and logs) instead of raising when nobody answers."""
    rotator = OrchestratorNotices(f"localhost:{free_port()}", ClientTls(ca_file=None), timeout=2)

    async def call() -> bool:
        try:
            return await rotator.deployment_revoked("bearer", str(uuid.uuid4()))
        finally:
            await rotator.close()

    assert asyncio.run(call()) is False


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[TemporalDevServer]:
    """A Temporal dev server for this module."""
    with TemporalDevServer() as server:
        yield server


def test_rekeying_rewrites_a_schedule_under_the_current_key(
    temporal_server: TemporalDevServer,
) -> None:
    """A schedule written under the old key stores its input under the new key once rekeyed."""
    keys = OrgPayloadKeys(str(ORG), [PayloadKey.generate("k1")], "k1")
    connection = uuid.uuid4()
    other_org = uuid.uuid4()

    async def run() -> tuple[bytes, bytes, int]:
        client = await Client.connect(temporal_server.address, data_converter=data_converter(keys))
        await _put(client, ORG, connection)
        await _put(client, other_org, uuid.uuid4())
        before = await _stored_key_id(client, ORG, connection)
        keys.update([keys.get("k1"), PayloadKey.generate("k2")], "k2")
        count = await schedules.rekey(client, ORG)
        after = await _stored_key_id(client, ORG, connection)
        return before, after, count

    before, after, count = asyncio.run(run())
    assert (before, after, count) == (b"k1", b"k2", 1)


def test_rekeying_leaves_a_schedule_set_meanwhile_as_it_was_set(
    temporal_server: TemporalDevServer,
) -> None:
    """An admin's new interval, set between rekeying's read and its write, is what stays."""
    org, connection = uuid.uuid4(), uuid.uuid4()
    keys = OrgPayloadKeys(str(org), [PayloadKey.generate("k1")], "k1")
    sid = schedules.schedule_id(org, connection)

    async def run() -> tuple[bool, timedelta | None, bytes]:
        client = await Client.connect(temporal_server.address, data_converter=data_converter(keys))
        await _put(client, org, connection)
        read = await schedules.describe(client, sid)
        assert read is not None
        keys.update([keys.get("k1"), PayloadKey.generate("k2")], "k2")
        await _put(client, org, connection, hours=2)
        written = await schedules.reencrypt(client, sid, read)
        now = await schedules.get(client, org, connection)
        return written, now.interval, await _stored_key_id(client, org, connection)

    assert asyncio.run(run()) == (True, timedelta(hours=2), b"k2")


@pytest.mark.parametrize("writer", ["rekey", "prove"])
def test_a_rewrite_does_not_bring_back_a_schedule_deleted_meanwhile(
    temporal_server: TemporalDevServer, writer: str
) -> None:
    """A schedule deleted between the read and the write of a rekeying (or of the upgrade that
    proves old schedules) stays deleted."""
    org, connection = uuid.uuid4(), uuid.uuid4()
    keys = OrgPayloadKeys(str(org), [PayloadKey.generate("k1")], "k1")
    signer = ProofSigner("wp-1", Ed25519PrivateKey.generate())
    sid = schedules.schedule_id(org, connection)

    async def run() -> tuple[bool, schedules.RotationSchedule]:
        client = await Client.connect(temporal_server.address, data_converter=data_converter(keys))
        await _put(client, org, connection)
        read = await schedules.describe(client, sid)
        assert read is not None
        assert await schedules.delete(client, org, connection)
        if writer == "rekey":
            written = await schedules.reencrypt(client, sid, read)
        else:
            written = await schedules.prove(client, sid, read, signer, timedelta(minutes=1))
        return written, await schedules.get(client, org, connection)

    assert asyncio.run(run()) == (False, schedules.NO_SCHEDULE)


def test_an_unproved_schedule_is_proved_once_keeping_its_interval(
    temporal_server: TemporalDevServer,
) -> None:
    """A schedule set before schedules carried proofs gets one at start-up, set by the upgrade,
    that the agent's check accepts for the schedule's next run; its interval stays, and a
    second start-up finds nothing left to prove."""
    org, connection = uuid.uuid4(), uuid.uuid4()
    keys = OrgPayloadKeys(str(org), [PayloadKey.generate("k1")], "k1")
    private = Ed25519PrivateKey.generate()
    signer = ProofSigner("wp-1", private)
    sid = schedules.schedule_id(org, connection)

    async def run() -> tuple[int, int, RootRotationInput, schedules.RotationSchedule]:
        client = await Client.connect(temporal_server.address, data_converter=data_converter(keys))

        async def client_for(_: uuid.UUID) -> Client:
            return client

        await _put(client, org, connection, hours=2)
        first = await schedules.prove_unproved([org], client_for, signer, timedelta(minutes=1))
        again = await schedules.prove_unproved([org], client_for, signer, timedelta(minutes=1))
        read = await schedules.describe(client, sid)
        assert read is not None
        (request,) = await client.data_converter.decode(
            list(read.schedule.action.start_workflow.input.payloads), [RootRotationInput]
        )
        assert isinstance(request, RootRotationInput)
        return first, again, request, await schedules.get(client, org, connection)

    first, again, request, now = asyncio.run(run())
    assert (first, again, now.interval) == (1, 0, timedelta(hours=2))
    claims = jwt.decode(request.proof, options={"verify_signature": False})
    assert claims["set_by"] == schedules.UPGRADE_SETTER
    assert now.next_rotation is not None
    verified = work_proof.verify(
        request.proof,
        {"wp-1": private.public_key()},
        org_id=str(org),
        workflow_id=f"{sid}-{now.next_rotation:%Y-%m-%dT%H:%M:%SZ}",
        workflow_type=ROOT_ROTATION_WORKFLOW,
        digest=work_proof.input_digest(request),
        now=now.next_rotation,
    )
    assert verified.kind == work_proof.KIND_SCHEDULE


async def _put(client: Client, org: uuid.UUID, connection: uuid.UUID, hours: int = 1) -> None:
    """Sets the connection's schedule, unproved, every ``hours`` hours."""
    await schedules.put(
        client,
        org,
        connection,
        timedelta(hours=hours),
        timedelta(minutes=1),
        signer=None,
        set_by="u",
    )


async def _stored_key_id(client: Client, org_id: uuid.UUID, connection: uuid.UUID) -> bytes:
    described = await client.workflow_service.describe_schedule(
        DescribeScheduleRequest(
            namespace=client.namespace, schedule_id=schedules.schedule_id(org_id, connection)
        )
    )
    (payload,) = described.schedule.action.start_workflow.input.payloads
    return bytes(payload.metadata[KEY_ID_METADATA])


def test_rekeying_keeps_a_schedules_proof_and_phase(temporal_server: TemporalDevServer) -> None:
    """The rewritten input carries the same proof of origin, and its runs fall at the same times."""
    org = uuid.uuid4()
    keys = OrgPayloadKeys(str(org), [PayloadKey.generate("k1")], "k1")
    signer = ProofSigner("wp-1", Ed25519PrivateKey.generate())
    connection = uuid.uuid4()
    set_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)

    async def run() -> tuple[tuple[str, timedelta | None], tuple[str, timedelta | None]]:
        client = await Client.connect(temporal_server.address, data_converter=data_converter(keys))
        await schedules.put(
            client,
            org,
            connection,
            timedelta(hours=1),
            timedelta(minutes=1),
            signer=signer,
            set_by="user:admin",
            now=set_at,
        )
        before = await _proof_and_offset(client, org, connection)
        keys.update([keys.get("k1"), PayloadKey.generate("k2")], "k2")
        await schedules.rekey(client, org)
        return before, await _proof_and_offset(client, org, connection)

    before, after = asyncio.run(run())
    assert before[0] and after == before


async def _proof_and_offset(
    client: Client, org: uuid.UUID, connection: uuid.UUID
) -> tuple[str, timedelta | None]:
    handle = client.get_schedule_handle(schedules.schedule_id(org, connection))
    described = await handle.describe()
    (request,) = await client.data_converter.decode(
        list(described.raw_description.schedule.action.start_workflow.input.payloads),
        [RootRotationInput],
    )
    assert isinstance(request, RootRotationInput)
    return request.proof, described.schedule.spec.intervals[0].offset
