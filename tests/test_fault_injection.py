"""Fault injection: under load, SIGKILL and restart each part of the stack, one at a time.

Every component runs as its own process (devstack.process_stack). While four threads keep a
preview and a credential test in flight on a fixed-password connection and on a dynamic one
(a role minted per workload, 60 s TTL, agent reaper every 2 s), the agent, auth, connections,
the orchestrator, Temporal and the control-plane Postgres are each killed with SIGKILL and
restarted on the same port and state. The tests below then check what must hold afterwards:
the stack serves again by itself, every run ends in a true final state within a stated bound,
no minted role or session outlives its TTL plus one reaper pass, and no secret reached a log.

What is true for a run is read from Temporal (the workflow's status, by workflow id), from the
agent's log (the activity finished, with this category) and from the orchestrator's log (a
workflow was started). The table below says which final (state, category) each truth allows.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from devstack.agent_process import AgentProcess
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    SourceDatabase,
    create_dynamic_roles,
    create_source_database,
    drop_roles,
    drop_source_database,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime.temporal import namespace_for
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.process_stack import (
    CREDENTIAL_TEST_TIMEOUT_SECONDS,
    QUEUE_SECONDS,
    RECONCILE_SECONDS,
    ProcessHarness,
)
from tests.test_e2e_dynamic import _minted_roles, _prefixed_sessions

pytestmark = pytest.mark.timeout(240)

Outcome = tuple[str, str]  # (RunState name, outcome_category)

# ---- What a run may end as, given what really happened to its work (adjust here) ----------
# Whether an agent was polling when the work timed out depends on when the agent was killed.
TIMED_OUT: frozenset[Outcome] = frozenset(
    {("RUN_STATE_TIMED_OUT", "agent_unavailable"), ("RUN_STATE_TIMED_OUT", "agent_busy")}
)
FAILED: frozenset[Outcome] = frozenset({("RUN_STATE_FAILED", "workflow_failed")})
ALLOWED: Mapping[str, frozenset[Outcome]] = {
    # Temporal timed the workflow out: no agent finished the work in time.
    "timed_out": TIMED_OUT,
    # The workflow failed (an activity ran out of retries) or was terminated.
    "failed": FAILED,
    # A workflow was started and Temporal no longer holds it, and no agent finished the work.
    "started_then_gone": TIMED_OUT | FAILED,
    # No workflow was ever started for the run (the orchestrator or Temporal died first).
    "never_started": frozenset({("RUN_STATE_FAILED", "not_started")}),
    # The workflow is still running in Temporal: past the bound, nothing is acceptable.
    "still_running": frozenset(),
}
# "completed" (Temporal says COMPLETED, or the agent logged the finished work of a preview
# whose history was deleted) allows exactly the agent's category, succeeded when it is ok and
# failed otherwise.

# ---- The bound ---------------------------------------------------------------------------
# The longest a workflow runs: previews time out after 40 s (orchestrator.domain
# PREVIEW_TIMEOUT), credential tests after 20 s here, each plus the 20 s this stack lets work
# wait for a busy agent; the orchestrator waits 10 s longer.
LONGEST_WORKFLOW_SECONDS = max(40.0, CREDENTIAL_TEST_TIMEOUT_SECONDS) + QUEUE_SECONDS + 10.0
BOUND_MARGIN_SECONDS = 10.0
# A run is final by max(its start + LONGEST_WORKFLOW, the last restart) + RECONCILE + MARGIN.

# ---- The campaign ------------------------------------------------------------------------
FAULTS = ("agent", "auth", "connections", "orchestrator", "temporal", "postgres")
TTL_SECONDS = 60  # The shortest TTL a dynamic connection accepts.
REAPER_SECONDS = 2.0
REAP_MARGIN_SECONDS = 10.0
DOWN_SECONDS = 1.0  # Between the kill and the restart.
SETTLE_SECONDS = 2.0  # Load against the recovered stack before the next kill.
RECOVERY_SECONDS = 20.0  # After the last restart, the stack must serve within this.
CALL_TIMEOUT_SECONDS = 60.0
# A preview that holds its (minted) role's session for a while, so kills land mid-query.
SLOW_PREVIEW = "select pg_sleep(0.3) as slept, count(*) as orders from orders"
OPERATIONS = ("preview:fields", "preview:dynamic", "test:fields", "test:dynamic")


@dataclass(frozen=True)
class Call:
    """One call the load made and what came back."""

    operation: str
    started: float  # wall clock, comparable with the runs' start times
    ended: float
    code: str  # "OK" or the gRPC status code's name
    run_id: str = ""
    outcome: Outcome | None = None


@dataclass(frozen=True)
class Fault:
    """One component killed and restarted."""

    component: str
    killed_at: float
    restarted_at: float
    # The operations with a call in flight at the kill.
    in_flight: tuple[str, ...]
    # Whether the agent had just minted a role for a dynamic workload (so one was in use).
    mid_lease: bool


class Load:
    """One thread per operation, each calling it back to back until stopped."""

    def __init__(self, operations: Mapping[str, Callable[[], tuple[str, Outcome]]]) -> None:
        self._operations = operations
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, float | None] = dict.fromkeys(operations)
        self.calls: list[Call] = []
        self._threads = [
            threading.Thread(target=self._run, args=(name,), name=f"load-{name}", daemon=True)
            for name in operations
        ]

    def start(self) -> None:
        """Starts every thread."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Asks the threads to stop and waits for their current calls to return."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def in_flight(self) -> tuple[str, ...]:
        """The operations with a call in flight now."""
        with self._lock:
            return tuple(name for name, since in self._in_flight.items() if since)

    def wait_all_in_flight(self, deadline: float) -> None:
        """Waits (until ``deadline``, monotonic) for every operation to have a call in flight."""
        while len(self.in_flight()) < len(self._operations) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self, name: str) -> None:
        operation = self._operations[name]
        while not self._stop.is_set():
            started = time.time()
            with self._lock:
                self._in_flight[name] = started
            try:
                run_id, outcome = operation()
                call = Call(name, started, time.time(), "OK", run_id, outcome)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                call = Call(name, started, time.time(), code.name)
            with self._lock:
                self._in_flight[name] = None
                self.calls.append(call)
            if call.code != "OK":
                time.sleep(0.25)  # A component is down: do not spin.


def _wait_for_a_new_mint(agent: AgentProcess, deadline: float) -> bool:
    """Waits (until ``deadline``, monotonic) for the agent to mint a role for a workload."""
    minted = agent.output().count("lease minted")
    while agent.output().count("lease minted") == minted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_point(
    load: Load, agent: AgentProcess, rng: random.Random, timeout: float = 30.0
) -> tuple[tuple[str, ...], bool]:
    """Waits until every operation is in flight and a minted role is in use (the slow
    preview holds it for 0.3 s); returns what was in flight and whether a role was."""
    deadline = time.monotonic() + timeout
    while True:
        load.wait_all_in_flight(deadline)
        minted = _wait_for_a_new_mint(agent, deadline)
        time.sleep(rng.uniform(0.0, 0.2))  # Somewhere inside the query, or just after it.
        in_flight = load.in_flight()
        if (minted and len(in_flight) == len(OPERATIONS)) or time.monotonic() > deadline:
            return in_flight, minted


@dataclass
class Campaign:
    """What the fault injection did and what the tests inspect afterwards."""

    harness: ProcessHarness
    tenant: Tenant
    source_pg: EmbeddedPostgres
    connection_ids: dict[str, str]
    faults: list[Fault]
    calls: list[Call]
    load_stopped_at: float
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def last_restart(self) -> float:
        """When the last killed component was back."""
        return self.faults[-1].restarted_at

    @property
    def logs(self) -> Path:
        """Where every process of the stack writes its output."""
        return self.harness.stack.state_dir / "logs"


def _create_connections(
    harness: ProcessHarness,
    tenant: Tenant,
    source: SourceDatabase,
    group: str,
    privileged: str,
    privileged_password: str,
) -> dict[str, str]:
    connections = harness.stub(cpb_grpc.ConnectionServiceStub, tenant.admin_token)
    fields = connections.CreateConnection(
        cpb.CreateConnectionRequest(display_name="faults-fields", fields=EndToEnd.fields(source)),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    dynamic = connections.CreateConnection(
        cpb.CreateConnectionRequest(
            display_name="faults-dynamic",
            dynamic=EndToEnd.dynamic(
                source,
                privileged=privileged,
                privileged_password=privileged_password,
                group=group,
                ttl=TTL_SECONDS,
                max_ttl=2 * TTL_SECONDS,
            ),
        ),
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return {"fields": fields.id, "dynamic": dynamic.id}


def _operations(
    harness: ProcessHarness, tenant: Tenant, connection_ids: Mapping[str, str]
) -> dict[str, Callable[[], tuple[str, Outcome]]]:
    """Previews through the orchestrator, credential tests through connections (which asks the
    orchestrator in turn), on each connection."""
    orchestrator = harness.stub(opb_grpc.OrchestratorServiceStub, tenant.admin_token)
    connections = harness.stub(cpb_grpc.ConnectionServiceStub, tenant.admin_token)

    def preview(connection_id: str) -> Callable[[], tuple[str, Outcome]]:
        def call() -> tuple[str, Outcome]:
            run = orchestrator.PreviewQuery(
                opb.PreviewQueryRequest(connection_id=connection_id, sql=SLOW_PREVIEW),
                timeout=CALL_TIMEOUT_SECONDS,
            ).run
            return run.id, (opb.RunState.Name(run.state), run.outcome_category)

        return call

    def test(connection_id: str) -> Callable[[], tuple[str, Outcome]]:
        def call() -> tuple[str, Outcome]:
            tested = connections.TestConnection(
                cpb.TestConnectionRequest(id=connection_id), timeout=CALL_TIMEOUT_SECONDS
            )
            return "", (cpb.ConnectionStatus.Name(tested.status), tested.last_test_category)

        return call

    return {
        "preview:fields": preview(connection_ids["fields"]),
        "preview:dynamic": preview(connection_ids["dynamic"]),
        "test:fields": test(connection_ids["fields"]),
        "test:dynamic": test(connection_ids["dynamic"]),
    }


@pytest.fixture(scope="module")
def campaign(process_stack: ProcessHarness, tls_source_pg: EmbeddedPostgres) -> Iterator[Campaign]:
    """Runs the load, kills and restarts each component once, and stops the load."""
    harness = process_stack
    suffix = uuid.uuid4().hex[:12]
    source = create_source_database(
        tls_source_pg.url,
        database=f"source_{suffix}",
        reader=f"reader_{suffix}",
        reader_password=secrets.token_urlsafe(24),
    )
    privileged_password = secrets.token_urlsafe(24)
    group, privileged = create_dynamic_roles(
        tls_source_pg.admin_url(source.database),
        database=source.database,
        password=privileged_password,
    )
    try:
        tenant = harness.new_tenant(reaper_seconds=REAPER_SECONDS)
        connection_ids = _create_connections(
            harness, tenant, source, group, privileged, privileged_password
        )
        load = Load(_operations(harness, tenant, connection_ids))
        agent = tenant.agent
        assert agent is not None
        rng = random.Random()  # Different kill points every run: the properties must hold for any.
        faults: list[Fault] = []
        load.start()
        try:
            for component in FAULTS:
                in_flight, mid_lease = _kill_point(load, agent, rng)
                name = f"agent-{tenant.org_id[:8]}" if component == "agent" else component
                killed_at = time.time()
                harness.stack.kill(name)
                time.sleep(DOWN_SECONDS)
                harness.stack.restart(name)
                faults.append(Fault(component, killed_at, time.time(), in_flight, mid_lease))
                time.sleep(SETTLE_SECONDS)
        finally:
            load.stop(timeout=CALL_TIMEOUT_SECONDS + 5)
        yield Campaign(
            harness=harness,
            tenant=tenant,
            source_pg=tls_source_pg,
            connection_ids=connection_ids,
            faults=faults,
            calls=load.calls,
            load_stopped_at=time.time(),
            secrets={
                "privileged password": privileged_password,
                "reader password": source.reader_password,
                "admin password": PASSWORD,
                "deployment token": tenant.deployment_token,
                "bootstrap token": harness.stack.bootstrap_token_file.read_text().strip(),
            },
        )
    finally:
        drop_source_database(tls_source_pg.url, database=source.database, reader=source.reader)
        # Minted roles too, should a test have failed: later tests expect none on this server.
        drop_roles(tls_source_pg.url, *_minted_roles(tls_source_pg), privileged, group)


def _describe_campaign(campaign: Campaign) -> str:
    """The faults, and what the load saw after each component was ready again."""
    lines = ["fault: kill -> ready; calls started after ready (until the next kill) by outcome"]
    ends = [f.killed_at for f in campaign.faults[1:]] + [campaign.load_stopped_at]
    for fault, end in zip(campaign.faults, ends, strict=True):
        after = Counter(
            (c.operation, c.code) for c in campaign.calls if fault.restarted_at <= c.started < end
        )
        lines.append(
            f"  {fault.component:12s} {fault.restarted_at - fault.killed_at:4.1f} s; "
            + ", ".join(f"{op} {code} x{n}" for (op, code), n in sorted(after.items()))
        )
    calls = Counter((c.operation, c.code) for c in campaign.calls)
    lines.append(f"all load calls: {dict(sorted(calls.items()))}")
    return "\n".join(lines)


def test_every_fault_was_injected_with_all_kinds_of_work_in_flight(campaign: Campaign) -> None:
    """Each kill landed while a preview and a credential test ran on both connections, and
    a role minted for a dynamic workload was in use."""
    print(_describe_campaign(campaign))
    assert [f.component for f in campaign.faults] == list(FAULTS)
    for fault in campaign.faults:
        assert (set(fault.in_flight), fault.mid_lease) == (set(OPERATIONS), True), fault


def _retry_until(
    deadline: float, call: Callable[[], tuple[str, Outcome]]
) -> tuple[Outcome | str, int]:
    """Calls until it returns or the deadline passes; returns the last outcome and attempts."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()[1], attempts
        except grpc.RpcError as exc:
            error: Any = exc
            last = f"{error.code().name}: {error.details()}"
        if time.time() > deadline:
            return last, attempts
        time.sleep(0.5)


def test_the_stack_serves_again_without_manual_steps(campaign: Campaign) -> None:
    """Soon after the last restart, fresh credential tests and previews succeed on both
    connections, with nobody touching the stack."""
    operations = _operations(campaign.harness, campaign.tenant, campaign.connection_ids)
    deadline = campaign.last_restart + RECOVERY_SECONDS
    expected = {
        "preview:fields": ("RUN_STATE_SUCCEEDED", "ok"),
        "preview:dynamic": ("RUN_STATE_SUCCEEDED", "ok"),
        "test:fields": ("CONNECTION_STATUS_CONNECTED", ""),
        "test:dynamic": ("CONNECTION_STATUS_CONNECTED", ""),
    }
    results = {}
    for name in OPERATIONS:
        outcome, attempts = _retry_until(deadline, operations[name])
        results[name] = outcome
        print(f"{name}: {outcome} after {attempts} attempt(s)")
    assert results == expected


def _all_runs(campaign: Campaign) -> list[opb.Run]:
    orchestrator = campaign.harness.stub(
        opb_grpc.OrchestratorServiceStub, campaign.tenant.admin_token
    )
    runs: list[opb.Run] = []
    token = ""
    while True:
        page = orchestrator.ListRuns(
            opb.ListRunsRequest(page_size=500, page_token=token), timeout=30
        )
        runs.extend(page.runs)
        token = page.next_page_token
        if not token:
            return runs


def _workflow_id(run: opb.Run) -> str:
    # As the orchestrator names them (services/orchestrator/domain.py, _insert_run).
    kind = opb.RunKind.Name(run.kind).removeprefix("RUN_KIND_").lower().replace("_", "-")
    return f"{kind}-{run.id}"


def _log_entries(path: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The JSON log lines of the files matching ``path`` (a glob in its last part) to keep."""
    found = []
    for matched in sorted(path.parent.glob(path.name)):
        for line in matched.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # Not one of our JSON lines (a native library's own output).
            if isinstance(entry, dict) and keep(entry):
                found.append(entry)
    return found


async def _temporal_statuses(
    address: str, namespace: str, workflow_ids: list[str]
) -> dict[str, WorkflowExecutionStatus | None]:
    client = await Client.connect(address, namespace=namespace)
    statuses: dict[str, WorkflowExecutionStatus | None] = {}
    for workflow_id in workflow_ids:
        try:
            statuses[workflow_id] = (
                await client.get_workflow_handle(workflow_id).describe()
            ).status
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            statuses[workflow_id] = None
    return statuses


@dataclass(frozen=True)
class Verdict:
    """A run, what really happened to its work, and whether its final state says so."""

    run: opb.Run
    truth: str
    allowed: frozenset[Outcome]
    problem: str | None

    @property
    def outcome(self) -> Outcome:
        """The run's recorded (state, category)."""
        return opb.RunState.Name(self.run.state), self.run.outcome_category


def _judge(
    campaign: Campaign, runs: list[opb.Run], background_loop: BackgroundLoop
) -> list[Verdict]:
    statuses = background_loop.run(
        _temporal_statuses(
            campaign.harness.stack.temporal_address,
            namespace_for(campaign.tenant.org_id),
            [_workflow_id(r) for r in runs],
        ),
        timeout=120,
    )
    # An activity that finished logs its run id with the outcome ("TEST_CATEGORY_OK" ...).
    agent_done = {
        e["run_id"]: str(e["category"]).partition("_CATEGORY_")[2].lower()
        for e in _log_entries(
            campaign.logs / "agent-*.log", lambda e: "run_id" in e and "category" in e
        )
    }
    started = {
        e["run_id"]
        for e in _log_entries(
            campaign.logs / "orchestrator.log", lambda e: e.get("event") == "workflow started"
        )
    }
    told = {c.run_id: c.outcome for c in campaign.calls if c.run_id and c.outcome}
    verdicts = []
    for run in runs:
        status = statuses[_workflow_id(run)]
        if status == WorkflowExecutionStatus.COMPLETED or (status is None and run.id in agent_done):
            truth = "completed"
            category = agent_done.get(run.id, "ok")
            state = "RUN_STATE_SUCCEEDED" if category == "ok" else "RUN_STATE_FAILED"
            allowed = frozenset({(state, category)})
        elif status == WorkflowExecutionStatus.TIMED_OUT:
            truth, allowed = "timed_out", ALLOWED["timed_out"]
        elif status is None:
            truth = "started_then_gone" if run.id in started else "never_started"
            allowed = ALLOWED[truth]
        elif status == WorkflowExecutionStatus.RUNNING:
            truth, allowed = "still_running", ALLOWED["still_running"]
        else:  # FAILED, TERMINATED, CANCELED
            truth, allowed = "failed", ALLOWED["failed"]
        outcome = opb.RunState.Name(run.state), run.outcome_category
        deadline = (
            max(run.start_time.seconds + LONGEST_WORKFLOW_SECONDS, campaign.last_restart)
            + RECONCILE_SECONDS
            + BOUND_MARGIN_SECONDS
        )
        problem = None
        if outcome[0] == "RUN_STATE_RUNNING":
            problem = "never reached a final state"
        elif outcome not in allowed:
            problem = f"ended {outcome}, but its work {truth}: allowed {sorted(allowed)}"
        elif run.id in told and told[run.id] != outcome:
            problem = f"ended {outcome} after its caller was told {told[run.id]}"
        elif run.finish_time.seconds > deadline:
            problem = f"finished {run.finish_time.seconds - deadline:.0f} s after its bound"
        verdicts.append(Verdict(run, truth, allowed, problem))
    return verdicts


def _story(campaign: Campaign, verdict: Verdict) -> str:
    """A wrong run, what its work really did, and the kills while it could have been running."""
    started = verdict.run.start_time.seconds + verdict.run.start_time.nanos / 1e9
    kills = ", ".join(
        f"{f.component} {f.killed_at - started:+.1f} s"
        for f in campaign.faults
        if started - 1 <= f.killed_at <= started + LONGEST_WORKFLOW_SECONDS
    )
    return (
        f"{opb.RunKind.Name(verdict.run.kind)} (work {verdict.truth}; kills after its start:"
        f" {kills or 'none'}): {verdict.problem}"
    )


def test_every_run_reaches_a_true_final_state_within_the_bound(
    campaign: Campaign, background_loop: BackgroundLoop
) -> None:
    """Every run of the org ends in the state and category its work really had, by
    max(start + 70 s, last restart) + 2 s reconciliation + 10 s margin."""
    bound = (
        max(campaign.load_stopped_at, campaign.last_restart)
        + LONGEST_WORKFLOW_SECONDS
        + RECONCILE_SECONDS
        + BOUND_MARGIN_SECONDS
    )
    runs = _all_runs(campaign)
    while any(r.state == opb.RUN_STATE_RUNNING for r in runs) and time.time() < bound:
        time.sleep(1.0)
        runs = _all_runs(campaign)
    verdicts = _judge(campaign, runs, background_loop)
    summary = Counter((opb.RunKind.Name(v.run.kind), v.truth, *v.outcome) for v in verdicts)
    report = "\n".join(f"  {n:4d} {key}" for key, n in sorted(summary.items()))
    print(f"{len(runs)} runs (kind, truth, state, category):\n{report}")
    problems = [_story(campaign, v) for v in verdicts if v.problem]
    assert not problems, f"{len(problems)} of {len(runs)} runs are wrong:\n" + "\n".join(
        sorted(problems)
    )


def test_no_minted_role_or_session_outlives_its_ttl_plus_one_reaper_pass(
    campaign: Campaign,
) -> None:
    """Roles minted before the load stopped expire within the TTL; one reaper pass later
    (plus a margin for the pass itself) no sevvo_dyn_ role or session of one is left."""
    deadline = campaign.load_stopped_at + TTL_SECONDS + REAPER_SECONDS + REAP_MARGIN_SECONDS
    server = campaign.source_pg
    leases = campaign.harness.stub(cpb_grpc.LeaseServiceStub, campaign.tenant.admin_token)

    def lease_states() -> Counter[str]:
        listed = leases.ListLeases(
            cpb.ListLeasesRequest(connection_id=campaign.connection_ids["dynamic"], page_size=500),
            timeout=30,
        ).leases
        return Counter(cpb.LeaseState.Name(x.state) for x in listed)

    # The reaper drops a role and then records its lease as revoked, so on a loaded machine the
    # record can trail the role by a moment: wait for both, within the same deadline.
    while time.time() < deadline and (
        _minted_roles(server)
        or _prefixed_sessions(server)
        or set(lease_states()) != {"LEASE_STATE_REVOKED"}
    ):
        time.sleep(0.5)
    assert _minted_roles(server) == []
    assert _prefixed_sessions(server) == 0
    states = lease_states()
    print(f"{sum(states.values())} leases: {states}")
    assert set(states) == {"LEASE_STATE_REVOKED"}


def test_no_secret_reaches_any_log_of_the_stack(campaign: Campaign) -> None:
    """Passwords and tokens appear in no process's log, crashes and restarts included."""
    leaked = {
        f"{name} in {path.name}"
        for path in campaign.logs.glob("*.log")
        for name, value in campaign.secrets.items()
        if value in path.read_text(errors="replace")
    }
    assert leaked == set()
