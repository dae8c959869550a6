"""End to end: connections tested through a real agent, over TLS, on tenant task queues.

Real components throughout: the dev launcher's control plane, a Temporal dev server behind a
TLS proxy that requires the agent's client certificate, agents as separate processes, and
customer databases on PostgreSQL servers with and without TLS.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from temporalio.client import Client

from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_source_database
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.temporal import namespace_for
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd
from tests.plugins.source_db import SourceTargetFactory

TEST_WAIT = 60.0


def _create(e2e: EndToEnd, token: str, name: str, fields: cpb.PostgresFields) -> cpb.Connection:
    created: cpb.Connection = e2e.connections(token).CreateConnection(
        cpb.CreateConnectionRequest(display_name=name, fields=fields)
    )
    return created


def _failed_category(call: object) -> str:
    assert isinstance(call, grpc.RpcError)
    details = error_details(call)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "CREDENTIAL_TEST_FAILED"
    assert details.metadata is not None
    return details.metadata["category"]


def test_good_credentials_over_tls_connect(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """Create tests first through the agent; the saved connection is `connected`."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source))
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED
    assert created.HasField("last_test_time")
    # The test before the save is the stored connection's last test too.
    stored = e2e.connections(tenant.admin_token).GetConnection(
        cpb.GetConnectionRequest(id=created.id)
    )
    assert stored.last_test_time == created.last_test_time
    retested = e2e.connections(tenant.admin_token).TestConnection(
        cpb.TestConnectionRequest(id=created.id)
    )
    assert retested.status == cpb.CONNECTION_STATUS_CONNECTED
    runs = e2e.orchestrator(tenant.admin_token).ListRuns(opb.ListRunsRequest()).runs
    assert [(r.state, r.outcome_category) for r in runs] == [
        (opb.RUN_STATE_SUCCEEDED, "ok"),
        (opb.RUN_STATE_SUCCEEDED, "ok"),
    ]
    assert runs[0].connection_id == created.id
    assert runs[1].draft_id  # The first test ran on the unsaved draft.
    # By connection: the saved connection's own test only, not the draft's.
    by_connection = e2e.orchestrator(tenant.admin_token).ListRuns(
        opb.ListRunsRequest(connection_id=created.id)
    )
    assert [r.id for r in by_connection.runs] == [runs[0].id]


def test_wrong_password_is_refused_with_its_category(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """A wrong password fails the save with the password category and stores nothing."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    stub = e2e.connections(tenant.admin_token)
    with pytest.raises(grpc.RpcError) as caught:
        _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source, password="wrong-pw-1"))
    assert _failed_category(caught.value) == "password_authentication_failed"
    assert "wrong-pw-1" not in (caught.value.details() or "")
    assert list(stub.ListConnections(cpb.ListConnectionsRequest()).connections) == []


def test_ssl_require_against_a_server_without_tls(
    e2e: EndToEnd, plain_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """ssl_mode require against a server that offers no TLS reports the SSL category."""
    tenant = e2e.new_tenant()
    source = source_target(plain_source_pg)
    with pytest.raises(grpc.RpcError) as caught:
        _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source))
    assert _failed_category(caught.value) == "ssl_required_not_offered"
    created = _create(
        e2e, tenant.admin_token, "plain", e2e.fields(source, ssl=cpb.SSL_MODE_DISABLE)
    )
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED


def _verified(
    e2e: EndToEnd,
    source: SourceDatabase,
    mode: cpb.SslMode,
    ca_file: Path,
    host: str = "localhost",
) -> cpb.PostgresFields:
    """The form for ``source`` with a verify mode and ``ca_file`` as its CA bundle."""
    fields = e2e.fields(source, ssl=mode)
    fields.host = host
    fields.ssl_root_cert = ca_file.read_text()
    return fields


def test_verify_full_connects_with_the_signing_ca_and_refuses_another(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    dev_pki: DevPki,
    tmp_path: Path,
) -> None:
    """The agent verifies the server with the connection's bundle: the CA that signed the
    certificate connects; another CA fails the save with its own category, storing nothing."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    stub = e2e.connections(tenant.admin_token)
    other_ca = ensure_dev_pki(tmp_path / "other").ca_cert
    with pytest.raises(grpc.RpcError) as caught:
        _create(
            e2e,
            tenant.admin_token,
            "wrong-ca",
            _verified(e2e, source, cpb.SSL_MODE_VERIFY_FULL, other_ca),
        )
    assert _failed_category(caught.value) == "ssl_certificate_unverified"
    assert source.reader_password not in (caught.value.details() or "")
    assert list(stub.ListConnections(cpb.ListConnectionsRequest()).connections) == []
    created = _create(
        e2e,
        tenant.admin_token,
        "verified",
        _verified(e2e, source, cpb.SSL_MODE_VERIFY_FULL, dev_pki.ca_cert),
    )
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED
    assert [c.subject for c in created.safe_metadata.ssl_root_certs] == ["CN=sevvo development CA"]
    retested = stub.TestConnection(cpb.TestConnectionRequest(id=created.id))
    assert retested.status == cpb.CONNECTION_STATUS_CONNECTED


def test_verify_full_by_an_address_the_certificate_lacks_fails_where_verify_ca_passes(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    dev_pki: DevPki,
) -> None:
    """The server's certificate names localhost only: by 127.0.0.1 verify-full fails on the
    host name while verify-ca, which checks the CA alone, connects."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    by_address = _verified(e2e, source, cpb.SSL_MODE_VERIFY_FULL, dev_pki.ca_cert, "127.0.0.1")
    with pytest.raises(grpc.RpcError) as caught:
        _create(e2e, tenant.admin_token, "by-address", by_address)
    assert _failed_category(caught.value) == "ssl_certificate_unverified"
    by_address.ssl_mode = cpb.SSL_MODE_VERIFY_CA
    created = _create(e2e, tenant.admin_token, "by-address", by_address)
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED


def test_switching_to_verify_full_is_tested_first_and_a_failure_keeps_the_old_mode(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    dev_pki: DevPki,
    tmp_path: Path,
) -> None:
    """An update to verify-full with the wrong bundle is refused and changes nothing; with
    the right one it is tested, saved and shown."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source))
    stub = e2e.connections(tenant.admin_token)
    paths = ["fields.ssl_mode", "fields.ssl_root_cert"]

    def update(ca_file: Path) -> cpb.Connection:
        updated: cpb.Connection = stub.UpdateConnection(
            cpb.UpdateConnectionRequest(
                id=created.id,
                connection=cpb.ConnectionUpdate(
                    fields=cpb.PostgresFields(
                        ssl_mode=cpb.SSL_MODE_VERIFY_FULL, ssl_root_cert=ca_file.read_text()
                    )
                ),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )
        return updated

    with pytest.raises(grpc.RpcError) as caught:
        update(ensure_dev_pki(tmp_path / "other").ca_cert)
    assert _failed_category(caught.value) == "ssl_certificate_unverified"
    unchanged = stub.GetConnection(cpb.GetConnectionRequest(id=created.id))
    assert unchanged.safe_metadata.ssl_mode == cpb.SSL_MODE_REQUIRE
    assert list(unchanged.safe_metadata.ssl_root_certs) == []
    assert unchanged.update_time == created.update_time
    updated = update(dev_pki.ca_cert)
    assert (updated.status, updated.safe_metadata.ssl_mode) == (
        cpb.CONNECTION_STATUS_CONNECTED,
        cpb.SSL_MODE_VERIFY_FULL,
    )
    assert len(updated.safe_metadata.ssl_root_certs) == 1


def test_stopped_source_server_turns_the_status_to_error(e2e: EndToEnd) -> None:
    """After the database server stops, a test reports the refused/timeout category."""
    tenant = e2e.new_tenant()
    directory = Path(tempfile.mkdtemp(prefix="sevvo-stop-"))
    server = EmbeddedPostgres(directory, durable=False).start()
    try:
        source = create_source_database(
            server.url, database="shop", reader="shop_reader", reader_password="shop-pw-123456"
        )
        created = _create(
            e2e, tenant.admin_token, "soon-gone", e2e.fields(source, ssl=cpb.SSL_MODE_DISABLE)
        )
        assert created.status == cpb.CONNECTION_STATUS_CONNECTED
        server.stop()
        tested = e2e.connections(tenant.admin_token).TestConnection(
            cpb.TestConnectionRequest(id=created.id)
        )
        assert tested.status == cpb.CONNECTION_STATUS_ERROR
        assert tested.last_test_category == "connection_refused_or_timeout"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_rotation_to_a_wrong_password_keeps_the_old_credentials(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """A password change that fails its test is refused and the old password keeps working."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source))
    stub = e2e.connections(tenant.admin_token)
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateConnection(
            cpb.UpdateConnectionRequest(
                id=created.id,
                connection=cpb.ConnectionUpdate(fields=cpb.PostgresFields(password="not-it-123")),
                update_mask=field_mask_pb2.FieldMask(paths=["fields.password"]),
            )
        )
    assert _failed_category(caught.value) == "password_authentication_failed"
    retested = stub.TestConnection(cpb.TestConnectionRequest(id=created.id))
    assert retested.status == cpb.CONNECTION_STATUS_CONNECTED


def test_a_tenants_work_reaches_only_its_own_agent(e2e: EndToEnd) -> None:
    """Org B's test waits untouched while only org A's agent runs, then B's own agent runs it.

    The start returns the run at once (a long-running operation); WaitRun returns it still
    running at its timeout, and finished once an agent of org B has done the work.
    """
    a = e2e.new_tenant()
    b = e2e.new_tenant(start_agent=False)
    # A draft id is not checked before the work starts (drafts are the agent's to resolve), so
    # B's work waits on B's queue; B's agent then finds no such draft in org B.
    started = e2e.orchestrator(b.admin_token).TestConnection(
        opb.TestConnectionRequest(draft_id=str(uuid.uuid4()))
    )
    assert (started.state, started.outcome_category) == (opb.RUN_STATE_RUNNING, "")
    assert a.agent is not None
    a_tests_before = a.agent.output().count("credential test started")
    wait = opb.WaitRunRequest(id=started.id)
    wait.timeout.FromTimedelta(timedelta(seconds=3))  # Time for A's agent to (wrongly) take it.
    begun = time.monotonic()
    still = e2e.orchestrator(b.admin_token).WaitRun(wait, timeout=10)
    assert time.monotonic() - begun >= 2.9
    assert (still.id, still.state) == (started.id, opb.RUN_STATE_RUNNING)
    # A caller's deadline shorter than the wait is an answer before it, not an error.
    unbounded = opb.WaitRunRequest(id=started.id)
    assert e2e.orchestrator(b.admin_token).WaitRun(unbounded, timeout=1.5).state == (
        opb.RUN_STATE_RUNNING
    )
    negative = opb.WaitRunRequest(id=started.id)
    negative.timeout.FromTimedelta(timedelta(seconds=-1))
    with pytest.raises(grpc.RpcError) as refused:
        e2e.orchestrator(b.admin_token).WaitRun(negative, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "timeout" in (refused.value.details() or "")
    assert a.agent.output().count("credential test started") == a_tests_before
    b.agent = e2e.start_agent(b)
    run = e2e.finished(b.admin_token, still, TEST_WAIT)
    # B's agent resolved the draft as org B: not found, nothing revealed.
    assert (run.state, run.outcome_category) == (
        opb.RUN_STATE_FAILED,
        "invalid_stored_credentials",
    )
    assert "credential test started" in b.agent.output()
    assert a.agent.output().count("credential test started") == a_tests_before
    # Another org can neither wait on the run nor learn that it exists.
    with pytest.raises(grpc.RpcError) as caught:
        e2e.orchestrator(a.admin_token).WaitRun(opb.WaitRunRequest(id=run.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_other_org_cannot_start_or_read_runs(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """Org B's user cannot test org A's connection through connections, nor read A's runs."""
    a, b = e2e.new_tenant(), e2e.new_tenant(start_agent=False)
    created = _create(e2e, a.admin_token, "a-conn", e2e.fields(source_target(tls_source_pg)))
    a_run = e2e.orchestrator(a.admin_token).ListRuns(opb.ListRunsRequest()).runs[0]
    calls: list[Callable[[], object]] = [
        lambda: e2e.connections(b.admin_token).TestConnection(
            cpb.TestConnectionRequest(id=created.id)
        ),
        lambda: e2e.orchestrator(b.admin_token).GetRun(opb.GetRunRequest(id=a_run.id)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(e2e.orchestrator(b.admin_token).ListRuns(opb.ListRunsRequest()).runs) == []


def test_temporal_history_holds_only_ciphertext(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    background_loop: BackgroundLoop,
) -> None:
    """The server-side history of a test run contains no password, host, database or role."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = _create(e2e, tenant.admin_token, "warehouse", e2e.fields(source))
    run = e2e.finished(
        tenant.admin_token,
        e2e.orchestrator(tenant.admin_token).TestConnection(
            opb.TestConnectionRequest(connection_id=created.id)
        ),
    )

    async def history() -> tuple[bytes, list[bytes]]:
        # No codec here: this is what the Temporal server itself holds.
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=namespace_for(tenant.org_id)
        )
        handle = client.get_workflow_handle(f"credential-test-{run.id}")
        events = (await handle.fetch_history()).events
        started = events[0].workflow_execution_started_event_attributes
        encodings = [p.metadata["encoding"] for p in started.input.payloads]
        return b"".join(e.SerializeToString() for e in events), encodings

    raw, encodings = background_loop.run(history())
    assert encodings == [b"binary/encrypted"]
    for secret in (source.reader_password, source.database, source.reader, "localhost", "select"):
        assert secret.encode() not in raw, secret
    assert created.id.encode() not in raw  # Even the connection id travels encrypted.


def test_agent_killed_mid_test_finishes_after_restart(
    e2e: EndToEnd,
    source_target: SourceTargetFactory,
) -> None:
    """Killing the agent while a test runs: after a restart the run still finishes."""
    tenant = e2e.new_tenant()
    # A server that accepts TCP and never answers holds the probe until its connect timeout,
    # which gives a wide window to kill the agent mid-activity.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        fields = cpb.PostgresFields(
            host="localhost",
            port=port,
            database="db",
            username="u",
            password="p" * 12,
            ssl_mode=cpb.SSL_MODE_DISABLE,
        )
        with pytest.raises(grpc.RpcError) as caught:  # Saving tests first: times out cleanly.
            _create(e2e, tenant.admin_token, "silent", fields)
        assert _failed_category(caught.value) == "connection_refused_or_timeout"
        # Now the same through a run we interrupt: test a draft-free path via the orchestrator.
        assert tenant.agent is not None
        result: dict[str, object] = {}

        def run_test() -> None:
            try:
                _create(e2e, tenant.admin_token, "silent-2", fields)
            except grpc.RpcError as exc:
                result["error"] = exc

        agent = tenant.agent
        tests_before = agent.output().count("credential test started")
        caller = threading.Thread(target=run_test)
        started = time.monotonic()
        caller.start()
        while agent.output().count("credential test started") == tests_before:
            assert time.monotonic() - started < 20, "the agent never started the test"
            time.sleep(0.05)
        agent.kill()
        tenant.agent = e2e.start_agent(tenant)
        caller.join(TEST_WAIT)
        assert not caller.is_alive(), "the run hung after the agent was killed"
        assert _failed_category(result["error"]) == "connection_refused_or_timeout"
        assert time.monotonic() - started < TEST_WAIT
    finally:
        silent.close()
