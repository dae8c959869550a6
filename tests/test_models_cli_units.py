"""``sevvo models``' pure parts: a model file or flags to the request, the update mask of
exactly the flags given, durations, usage errors before any call, what a sync shows and exits
with, and field violations in the service's errors. No server: the commands run in this
process (tests/cli_runner.py) with stubs that record what they were sent."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2, status_pb2
from typer.testing import CliRunner

from cli.app import app
from cli.client import Cli
from cli.commands.models import (
    FILE_FORMAT,
    ModelSpec,
    read_sql,
    spec_from_flags,
    spec_from_toml,
)
from cli.commands.runs import COLUMNS as RUN_COLUMNS
from cli.errors import CliError, ExitCode, from_rpc_error
from cli.inputs import parse_interval
from cli.output import message_dict
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.errors import ERROR_DOMAIN
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.cli_runner import Result, run_sevvo_in_process

SOURCE_ID = "11111111-1111-4111-8111-111111111111"
DESTINATION_ID = "22222222-2222-4222-8222-222222222222"
MODEL_ID = "33333333-3333-4333-8333-333333333333"
RUN_ID = "44444444-4444-4444-8444-444444444444"
CONNECTIONS = {"shop": SOURCE_ID, "warehouse": DESTINATION_ID}
SQL = "select id, total, updated_at from orders"


def _connection_id(text: str) -> str:
    return CONNECTIONS.get(text, text)


def _usage_error(caught: pytest.ExceptionInfo[CliError]) -> str:
    assert caught.value.exit_code == ExitCode.USAGE
    return caught.value.message


# --- a model file ------------------------------------------------------------------------------


def _file(tmp_path: Path, text: str) -> ModelSpec:
    return spec_from_toml(text, "model.toml", tmp_path)


def test_a_model_file_sets_every_field_of_the_request(tmp_path: Path) -> None:
    """Each key of a model file lands in its field of CreateModelRequest; sql-file is read
    beside the file; connections are resolved by name."""
    (tmp_path / "orders.sql").write_text(SQL)
    spec = _file(
        tmp_path,
        """
        name = "orders-daily"
        source = "shop"
        destination = "warehouse"
        table = "analytics.orders"
        sql-file = "orders.sql"
        incremental = true
        cursor = "updated_at"
        primary-key = ["tenant_id", "id"]
        allow-schema-evolution = true
        every = "6h"
        """,
    )
    spec.check_new()
    expected = mpb.Model(
        name="orders-daily",
        source_connection_id=SOURCE_ID,
        destination_connection_id=DESTINATION_ID,
        destination_table="analytics.orders",
        sql=SQL,
        load_mode=mpb.LOAD_MODE_INCREMENTAL,
        cursor_column="updated_at",
        primary_key=["tenant_id", "id"],
        allow_schema_evolution=True,
    )
    expected.schedule_interval.FromSeconds(6 * 3600)
    assert spec.create_request(_connection_id) == mpb.CreateModelRequest(model=expected)


def test_a_minimal_model_file_is_a_full_refresh_without_a_schedule(tmp_path: Path) -> None:
    """Without incremental or every, the model replaces its table and has no schedule."""
    spec = _file(
        tmp_path,
        f'name = "m"\nsource = "shop"\ndestination = "warehouse"\ntable = "a.b"\nsql = "{SQL}"\n',
    )
    spec.check_new()
    model = spec.create_request(_connection_id).model
    assert model.load_mode == mpb.LOAD_MODE_FULL_REFRESH
    assert not model.HasField("schedule_interval")
    assert (model.sql, model.cursor_column, list(model.primary_key)) == (SQL, "", [])


def test_the_documented_model_file_is_a_valid_model(tmp_path: Path) -> None:
    """The file format the help and the guide show parses into a whole model."""
    (tmp_path / "orders.sql").write_text(SQL)
    spec = _file(tmp_path, FILE_FORMAT)
    spec.check_new()
    assert spec.update_mask == [
        "name",
        "source_connection_id",
        "destination_connection_id",
        "destination_table",
        "sql",
        "load_mode",
        "cursor_column",
        "primary_key",
        "allow_schema_evolution",
        "schedule_interval",
    ]


def test_a_primary_key_string_is_split_like_the_flag(tmp_path: Path) -> None:
    """primary-key = "tenant_id, id" reads as --primary-key tenant_id,id does."""
    spec = _file(tmp_path, 'primary-key = "tenant_id, id"')
    assert spec.primary_key == ("tenant_id", "id")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("name = 1", "name must be a string, not an integer"),
        ('incremental = "yes"', "incremental must be true or false, not a string"),
        ("allow-schema-evolution = 1", "allow-schema-evolution must be true or false, not an"),
        ("primary-key = [1, 2]", "primary-key must be a string or a list of strings, not a list"),
        ("every = 3600", "every must be a string, not an integer"),
        ("table = { schema = 'a' }", "table must be a string, not a table"),
        ("sql = 1.5", "sql must be a string, not a number"),
        ("name = 2026-12-03", "name must be a string, not a date"),
        ('every = "soon"', "model.toml: every: 'soon' is not a duration"),
        ('primary-key = "id,"', "model.toml: primary-key: name each column"),
        ("primary-key = []", "model.toml: primary-key: name each column"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_usage_error_naming_the_key(
    tmp_path: Path, line: str, message: str
) -> None:
    """A key holding the wrong type names the file, the key and what it must be."""
    with pytest.raises(CliError) as caught:
        _file(tmp_path, line)
    assert message in _usage_error(caught)


@pytest.mark.parametrize(
    ("line", "suggestion"),
    [
        ('primary_key = ["id"]', "did you mean primary-key?"),
        ('sql_file = "x.sql"', "did you mean sql-file?"),
        ('schedule = "1h"', ""),
        ('[model]\nname = "m"', ""),
    ],
)
def test_an_unknown_key_is_refused_with_the_keys_a_file_takes(
    tmp_path: Path, line: str, suggestion: str
) -> None:
    """A misspelt key is refused (never silently left out), with the nearest key if any."""
    with pytest.raises(CliError) as caught:
        _file(tmp_path, line)
    message = _usage_error(caught)
    assert message.startswith("model.toml: unknown key")
    assert suggestion in message
    assert "a model file takes name, source, destination, table, sql, sql-file" in message


def test_a_file_that_is_not_toml_says_where(tmp_path: Path) -> None:
    """A TOML syntax error is a usage error with the parser's line and column."""
    with pytest.raises(CliError) as caught:
        _file(tmp_path, 'name = "unterminated\n')
    assert "model.toml is not valid TOML" in _usage_error(caught)
    assert "line 1" in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('sql = "select 1"\nsql-file = "a.sql"', "give sql or sql-file, not both"),
        ('sql-file = "missing.sql"', "model.toml: sql-file: cannot read"),
        ('sql = "  \\n"', "model.toml: the SQL is empty"),
    ],
)
def test_the_sql_of_a_file_is_given_once_and_readable(
    tmp_path: Path, text: str, message: str
) -> None:
    """sql and sql-file together, an unreadable sql-file or empty SQL is a usage error."""
    with pytest.raises(CliError) as caught:
        _file(tmp_path, text)
    assert message in _usage_error(caught)


# --- flags -------------------------------------------------------------------------------------


def test_flags_set_every_field_of_the_model() -> None:
    """Every create flag lands in its Model field."""
    spec = spec_from_flags(
        name="orders-daily",
        source="shop",
        destination="warehouse",
        table="analytics.orders",
        sql=SQL,
        incremental=True,
        cursor="updated_at",
        primary_key=["tenant_id,id", "region"],
        allow_schema_evolution=True,
        every="1h",
    )
    spec.check_new()
    model = spec.create_request(_connection_id).model
    assert (model.name, model.source_connection_id, model.destination_connection_id) == (
        "orders-daily",
        SOURCE_ID,
        DESTINATION_ID,
    )
    assert (model.destination_table, model.sql, model.load_mode) == (
        "analytics.orders",
        SQL,
        mpb.LOAD_MODE_INCREMENTAL,
    )
    assert (model.cursor_column, list(model.primary_key)) == (
        "updated_at",
        ["tenant_id", "id", "region"],
    )
    assert model.allow_schema_evolution
    assert model.schedule_interval.seconds == 3600


_ONE_FLAG: list[tuple[dict[str, Any], str]] = [
    ({"name": "new-name"}, "name"),
    ({"source": "shop"}, "source_connection_id"),
    ({"destination": "warehouse"}, "destination_connection_id"),
    ({"table": "a.b"}, "destination_table"),
    ({"sql": SQL}, "sql"),
    ({"incremental": True}, "load_mode"),
    ({"incremental": False}, "load_mode"),
    ({"cursor": "updated_at"}, "cursor_column"),
    ({"primary_key": ["id"]}, "primary_key"),
    ({"allow_schema_evolution": False}, "allow_schema_evolution"),
    ({"every": "off"}, "schedule_interval"),
]


@pytest.mark.parametrize(("flags", "path"), _ONE_FLAG, ids=[p for _, p in _ONE_FLAG])
def test_update_masks_exactly_the_flag_given(flags: dict[str, Any], path: str) -> None:
    """One flag, one mask path: nothing else is changed, even fields false or empty."""
    request = spec_from_flags(**flags).update_request(MODEL_ID, _connection_id)
    assert request.update_mask == FieldMask(paths=[path])
    assert request.model.id == MODEL_ID


def test_update_sends_false_and_off_as_values_under_their_paths() -> None:
    """--full-refresh, --no-schema-evolution and --every off are changes, not omissions."""
    request = spec_from_flags(
        incremental=False, allow_schema_evolution=False, every="off"
    ).update_request(MODEL_ID, _connection_id)
    assert list(request.update_mask.paths) == [
        "load_mode",
        "allow_schema_evolution",
        "schedule_interval",
    ]
    assert request.model.load_mode == mpb.LOAD_MODE_FULL_REFRESH
    assert not request.model.allow_schema_evolution
    assert request.model.HasField("schedule_interval")
    assert request.model.schedule_interval.seconds == 0


def test_update_resolves_only_the_connections_given() -> None:
    """A connection not given is not looked up (each lookup lists the org's connections)."""
    looked_up: list[str] = []

    def lookup(text: str) -> str:
        looked_up.append(text)
        return _connection_id(text)

    request = spec_from_flags(destination="warehouse", table="a.b").update_request(MODEL_ID, lookup)
    assert looked_up == ["warehouse"]
    assert request.model.source_connection_id == ""


def test_nothing_to_update_is_a_usage_error() -> None:
    """An update with no flag names them all rather than sending an empty mask."""
    with pytest.raises(CliError) as caught:
        ModelSpec().check_update()
    assert _usage_error(caught).startswith("nothing to update: give --name, --source")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec(), "a model needs NAME, --source, --destination, --table, the SQL"),
        (
            ModelSpec(name="m", source="s", destination="d", sql=SQL),
            "a model needs --table",
        ),
        (
            ModelSpec(name="m", source="s", destination="d", table="a.b", sql=SQL,
                      incremental=True, primary_key=("id",)),
            "--incremental needs --cursor COLUMN",
        ),
        (
            ModelSpec(name="m", source="s", destination="d", table="a.b", sql=SQL,
                      incremental=True, cursor="updated_at"),
            "--incremental needs --cursor COLUMN (how far the last sync read) and --primary-key",
        ),
        (
            ModelSpec(name="m", source="s", destination="d", table="a.b", sql=SQL,
                      cursor="updated_at"),
            "--cursor and --primary-key are for incremental models: add --incremental",
        ),
    ],
    ids=["empty", "no-table", "no-cursor", "no-primary-key", "cursor-without-incremental"],
)  # fmt: skip
def test_a_new_model_must_be_whole_and_consistent(spec: ModelSpec, message: str) -> None:
    """What is missing or contradictory is named before anything is sent."""
    with pytest.raises(CliError) as caught:
        spec.check_new()
    assert _usage_error(caught).startswith(message)


def test_sql_comes_from_one_place(tmp_path: Path) -> None:
    """--sql, --sql-file and --sql-stdin are alternatives; a file is read as it is."""
    path = tmp_path / "q.sql"
    path.write_text(SQL + "\n")
    assert read_sql(None, path, sql_stdin=False) == SQL + "\n"
    assert read_sql(SQL, None, sql_stdin=False) == SQL
    assert read_sql(None, None, sql_stdin=False) is None
    with pytest.raises(CliError) as caught:
        read_sql(None, path, sql_stdin=True)
    assert _usage_error(caught) == "give the SQL once: --sql-file or --sql-stdin, not both"


def test_empty_sql_from_a_flag_or_stdin_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """--sql "" or an empty standard input is refused, naming where the SQL was to come from."""
    with pytest.raises(CliError) as caught:
        read_sql(" ", None, sql_stdin=False)
    assert _usage_error(caught) == "--sql: the SQL is empty"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CliError) as caught:
        read_sql(None, None, sql_stdin=True)
    assert _usage_error(caught) == "--sql-stdin: the SQL is empty"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.sql", None, "--sql-file: cannot read"),
        ("blank.sql", " \n\t", "--sql-file: the SQL is empty"),
        ("latin1.sql", b"select '\xe9'", "is not UTF-8 text"),
    ],
)
def test_an_unusable_sql_file_is_a_usage_error(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    """A missing, empty or undecodable file stops the command; nothing partial is sent."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CliError) as caught:
        read_sql(None, path, sql_stdin=False)
    assert message in _usage_error(caught)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("off", 0), ("OFF", 0), ("0", 0), ("15m", 900), ("6h", 21600), ("1d", 86400), ("90", 90)],
)
def test_schedule_intervals_are_durations_or_off(text: str, seconds: int) -> None:
    """--every takes the durations the rest of the command line takes, and off."""
    assert parse_interval("--every", text) == seconds


@pytest.mark.parametrize("text", ["6 hours", "1w", "-1h", "", "never"])
def test_a_bad_schedule_interval_is_a_usage_error(text: str) -> None:
    """Anything else names the option and shows the forms it takes."""
    with pytest.raises(CliError) as caught:
        spec_from_flags(every=text)
    assert _usage_error(caught).startswith("--every:")


# --- the commands, in process, with recording stubs --------------------------------------------


@dataclass
class Recorder:
    """A stub of every service the models commands call: records requests, answers canned."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or not method[0].isupper():
            raise AttributeError(method)

        def call(request: Any, timeout: float | None = None) -> Any:
            self.calls.append((method, request))
            answer = self.answers[method]
            if isinstance(answer, list):
                answer = answer.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return call

    def sent(self, method: str) -> list[Any]:
        """The requests of one method, in order."""
        return [request for name, request in self.calls if name == method]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The ModelService and OrchestratorService every command in this module talks to."""
    recorder = Recorder()
    monkeypatch.setattr(Cli, "models", lambda self: recorder)
    monkeypatch.setattr(Cli, "orchestrator", lambda self: recorder)
    # Full ids are taken as they are: a ListConnections would find no answer queued.
    monkeypatch.setattr(Cli, "connections", lambda self: recorder)
    return recorder


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user with no session, pointing at a port where nothing listens: a command that made
    a call of its own would fail with exit 3 (not signed in), never 2."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEVVO_")}
    return {**clean, "SEVVO_ENDPOINT": "127.0.0.1:9", "SEVVO_CONFIG_DIR": str(tmp_path / "cfg")}


def sevvo(env: dict[str, str], *args: str, stdin: str = "") -> Result:
    """``sevvo ARGS`` in this process (JSON output: stdout is not a terminal)."""
    return run_sevvo_in_process(args, env, stdin)


_FULL = ("--source", SOURCE_ID, "--destination", DESTINATION_ID, "--table", "a.b")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--file", "m.toml", "--table", "a.b"), "--file holds the whole model: give"
         " --table in the file instead"),
        (("create", "m", "--file", "m.toml"), "give NAME in the file instead"),
        (("create", "m", *_FULL, "--sql-file", "q.sql", "--sql-stdin"),
         "give the SQL once: --sql-file or --sql-stdin, not both"),
        (("create", "m", *_FULL, "--sql", SQL, "--incremental"),
         "--incremental needs --cursor COLUMN"),
        (("create", "m", *_FULL, "--sql", SQL, "--primary-key", "id"),
         "--cursor and --primary-key are for incremental models"),
        (("create", "m", "--source", SOURCE_ID, "--sql", SQL), "a model needs --destination,"
         " --table"),
        (("create", "m", *_FULL, "--sql", SQL, "--every", "weekly"), "--every: 'weekly' is not"),
        (("create", "--file", "missing.toml"), "--file: cannot read missing.toml"),
        (("update", "m"), "nothing to update"),
        (("update", "m", "--sql", SQL, "--sql-stdin"), "give the SQL once: --sql or"),
        (("schedule", "m", "--every", "6h", "--off"), "give --every or --off, not both"),
        (("schedule", "m", "--every", "often"), "--every: 'often' is not a duration"),
    ],
    ids=[
        "file-with-flag",
        "file-with-name",
        "sql-twice",
        "incremental-without-cursor",
        "key-without-incremental",
        "missing",
        "bad-every",
        "missing-file",
        "update-nothing",
        "update-sql-twice",
        "schedule-both",
        "schedule-bad",
    ],
)  # fmt: skip
def test_usage_errors_come_before_any_call(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    """Contradictory or missing flags exit 2 with a clear message and call nothing (a call
    would need the session this user lacks, and exit 3)."""
    result = sevvo(env, "models", *args)
    assert result.code == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def _model(**fields: Any) -> mpb.Model:
    model = mpb.Model(
        id=MODEL_ID,
        name="orders-daily",
        source_connection_id=SOURCE_ID,
        destination_connection_id=DESTINATION_ID,
        destination_table="analytics.orders",
        sql=SQL,
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
    )
    for name, value in fields.items():
        setattr(model, name, value)
    return model


def test_create_from_flags_sends_the_model_and_shows_what_came_back(
    env: dict[str, str], stub: Recorder
) -> None:
    """The command sends the flags' model (SQL from stdin) and prints the service's answer."""
    stub.answers["CreateModel"] = _model()
    result = sevvo(env, "models", "create", "orders-daily", *_FULL, "--sql-stdin", stdin=SQL)
    assert result.code == 0, result.stderr
    [request] = stub.sent("CreateModel")
    assert request.model == mpb.Model(
        name="orders-daily",
        source_connection_id=SOURCE_ID,
        destination_connection_id=DESTINATION_ID,
        destination_table="a.b",
        sql=SQL,
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
    )
    shown = result.json()
    assert (shown["id"], shown["load_mode"], shown["schedule_interval"]) == (
        MODEL_ID,
        "full_refresh",
        None,
    )


def test_create_from_a_file_sends_what_the_file_says(
    env: dict[str, str], stub: Recorder, tmp_path: Path
) -> None:
    """--file reads the model and its sql-file beside it, whatever the working directory."""
    (tmp_path / "orders.sql").write_text(SQL)
    (tmp_path / "orders.toml").write_text(
        f'name = "orders-daily"\nsource = "{SOURCE_ID}"\ndestination = "{DESTINATION_ID}"\n'
        'table = "analytics.orders"\nsql-file = "orders.sql"\nevery = "1d"\n'
    )
    stub.answers["CreateModel"] = _model()
    result = sevvo(env, "models", "create", "--file", str(tmp_path / "orders.toml"))
    assert result.code == 0, result.stderr
    [request] = stub.sent("CreateModel")
    assert (request.model.sql, request.model.schedule_interval.seconds) == (SQL, 86400)


def test_schedule_updates_only_the_interval(env: dict[str, str], stub: Recorder) -> None:
    """--every 6h and --off send UpdateModel masked to schedule_interval; the table says 6h."""
    every = _model()
    every.schedule_interval.FromSeconds(21600)
    stub.answers["UpdateModel"] = [every, _model()]
    shown = sevvo(env, "models", "schedule", MODEL_ID, "--every", "6h")
    assert shown.code == 0, shown.stderr
    assert sevvo(env, "models", "schedule", MODEL_ID, "--off").code == 0
    on, off = stub.sent("UpdateModel")
    assert list(on.update_mask.paths) == list(off.update_mask.paths) == ["schedule_interval"]
    assert (on.model.schedule_interval.seconds, off.model.schedule_interval.seconds) == (21600, 0)
    assert off.model.HasField("schedule_interval")
    assert [name for name, _ in stub.calls] == ["UpdateModel", "UpdateModel"]


def test_the_schedule_table_shows_the_interval_as_a_duration(
    env: dict[str, str], stub: Recorder
) -> None:
    """A person reads 6h, not 21600s (JSON keeps protobuf's form)."""
    model = _model()
    model.schedule_interval.FromSeconds(21600)
    stub.answers["GetModel"] = model
    result = sevvo(env, "--output", "table", "models", "schedule", MODEL_ID)
    assert result.code == 0, result.stderr
    assert "6h" in result.stdout


def test_preview_runs_the_models_query_on_its_source(env: dict[str, str], stub: Recorder) -> None:
    """models preview is sevvo preview of the model's statement on its source connection."""
    stub.answers["GetModel"] = _model()
    stub.answers["PreviewQuery"] = opb.PreviewQueryResponse(
        run=opb.Run(id=RUN_ID, kind=opb.RUN_KIND_PREVIEW, outcome_category="ok"),
        result=wpb.PreviewQueryResult(
            category=wpb.PREVIEW_CATEGORY_OK,
            columns=[wpb.PreviewColumn(name="id", type_name="int4")],
            rows=[wpb.PreviewRow(cells=[wpb.PreviewCell(text="7")])],
        ),
    )
    result = sevvo(env, "models", "preview", MODEL_ID)
    assert result.code == 0, result.stderr
    [request] = stub.sent("PreviewQuery")
    assert (request.connection_id, request.sql) == (SOURCE_ID, SQL)
    assert result.json()["rows"] == [{"id": "7"}]


def _sync_run(category: str, **result: Any) -> opb.Run:
    state = opb.RUN_STATE_SUCCEEDED if category == "ok" else opb.RUN_STATE_FAILED
    run = opb.Run(
        id=RUN_ID,
        kind=opb.RUN_KIND_SYNC,
        state=state,
        model_id=MODEL_ID,
        outcome_category=category,
        duration_ms=1500,
    )
    run.sync.CopyFrom(wpb.SyncResult(**result))
    return run


_RUNNING = opb.Run(id=RUN_ID, kind=opb.RUN_KIND_SYNC, state=opb.RUN_STATE_RUNNING)


def test_sync_waits_in_repeated_calls_and_shows_what_was_loaded(
    env: dict[str, str], stub: Recorder
) -> None:
    """SyncModel, then WaitRun until the run ends; the counts, fingerprint and schema flags
    are shown; exit 0 for ok."""
    stub.answers["SyncModel"] = _RUNNING
    stub.answers["WaitRun"] = [
        _RUNNING,
        _RUNNING,
        _sync_run(
            "ok",
            rows=1200,
            bytes=48_000,
            duration_ms=900,
            schema_fingerprint="sha256:ab12",
            created_table=True,
        ),
    ]
    result = sevvo(env, "models", "sync", MODEL_ID)
    assert result.code == 0, result.stderr
    assert len(stub.sent("WaitRun")) == 3
    assert f"started run {RUN_ID}" in result.stderr
    sync = result.json()["sync"]
    assert (sync["rows"], sync["bytes"], sync["duration_ms"]) == (1200, 48_000, 900)
    assert (sync["schema_fingerprint"], sync["created_table"], sync["schema_changed"]) == (
        "sha256:ab12",
        True,
        False,
    )


def test_the_sync_table_names_rows_bytes_and_the_schema_flags(
    env: dict[str, str], stub: Recorder
) -> None:
    """A person sees rows, bytes, the fingerprint, created table and schema changed."""
    stub.answers["SyncModel"] = _sync_run(
        "ok", rows=7, bytes=512, schema_fingerprint="fp-1", schema_changed=True
    )
    result = sevvo(env, "--output", "table", "models", "sync", MODEL_ID)
    assert result.code == 0, result.stderr
    for label in ("rows", "bytes", "fingerprint", "created table", "schema changed", "fp-1"):
        assert label in result.stdout, label
    assert stub.sent("WaitRun") == []  # Already finished: nothing to wait for.
    assert "started run" not in result.stderr


@pytest.mark.parametrize(
    ("category", "shown"),
    [
        ("query_rejected", "the sync failed (query_rejected): column dropped"),
        ("agent_unavailable", "check that the org's agent is running"),
        ("schema_changed", "the sync failed (schema_changed): column dropped"),
    ],
)
def test_a_failed_sync_exits_1_with_its_category(
    env: dict[str, str], stub: Recorder, category: str, shown: str
) -> None:
    """The exit code is the outcome catalogue's for the category (1 for every failure, also
    one this command line does not know yet), with the run's message and the hint."""
    stub.answers["SyncModel"] = _RUNNING
    failed = _sync_run(category)
    failed.message = "column dropped"
    stub.answers["WaitRun"] = failed
    result = sevvo(env, "models", "sync", MODEL_ID)
    assert result.code == 1
    assert shown in result.stderr
    assert result.json()["outcome_category"] == category


def test_no_wait_shows_the_running_run_and_how_to_follow_it(
    env: dict[str, str], stub: Recorder
) -> None:
    """--no-wait returns at once, exit 0, and says which command follows the run."""
    stub.answers["SyncModel"] = _RUNNING
    result = sevvo(env, "models", "sync", MODEL_ID, "--no-wait")
    assert result.code == 0, result.stderr
    assert stub.sent("WaitRun") == []
    assert result.json()["state"] == "running"
    assert f"sevvo runs wait {RUN_ID}" in result.stderr


def test_ctrl_c_stops_waiting_but_not_the_sync(env: dict[str, str], stub: Recorder) -> None:
    """Interrupted while waiting: exit 130, and the run id to check it with."""
    stub.answers["SyncModel"] = _RUNNING
    stub.answers["WaitRun"] = KeyboardInterrupt()
    result = sevvo(env, "models", "sync", MODEL_ID)
    assert result.code == 130
    assert f"the sync goes on in your agent: sevvo runs wait {RUN_ID}" in result.stderr
    assert [request.id for request in stub.sent("SyncModel")] == [MODEL_ID]


def test_runs_lists_the_models_syncs_with_rows_and_bytes(
    env: dict[str, str], stub: Recorder
) -> None:
    """ListRuns is asked for the model's runs; the table has rows and bytes of each sync."""
    stub.answers["ListRuns"] = opb.ListRunsResponse(
        runs=[_sync_run("ok", rows=31, bytes=4096)], next_page_token=""
    )
    result = sevvo(env, "--output", "table", "models", "runs", MODEL_ID)
    assert result.code == 0, result.stderr
    [request] = stub.sent("ListRuns")
    assert request.model_id == MODEL_ID
    assert "31" in result.stdout and "4096" in result.stdout


def test_runs_list_shows_a_sync_as_kind_sync_with_its_rows() -> None:
    """sevvo runs list: kind "sync", rows from the sync's result (not preview rows)."""
    record = message_dict(_sync_run("ok", rows=1200))
    cells = {header: get(record) for header, get in RUN_COLUMNS}
    assert (cells["kind"], cells["rows"]) == ("sync", 1200)
    unanswered = message_dict(opb.Run(kind=opb.RUN_KIND_SYNC, state=opb.RUN_STATE_TIMED_OUT))
    assert dict((h, get(unanswered)) for h, get in RUN_COLUMNS)["rows"] is None


def test_delete_without_a_terminal_needs_yes(env: dict[str, str], stub: Recorder) -> None:
    """Like every delete: no prompt possible, no --yes, nothing deleted (exit 2)."""
    result = sevvo(env, "models", "delete", MODEL_ID)
    assert result.code == 2
    assert "pass --yes" in result.stderr
    stub.answers["DeleteModel"] = mpb.DeleteModelResponse(id=MODEL_ID)
    assert sevvo(env, "models", "delete", MODEL_ID, "--yes").json() == {"deleted": MODEL_ID}


# --- errors from the service -------------------------------------------------------------------


class _RpcError(grpc.RpcError):  # type: ignore[misc]
    """A failed call as grpc raises it: code, details and the status in trailing metadata."""

    def __init__(
        self,
        message: str,
        violations: list[tuple[str, str]],
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
    ) -> None:
        info, bad = any_pb2.Any(), any_pb2.Any()
        metadata = {"field": violations[0][0]} if violations else {}
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason="INVALID_ARGUMENT", domain=ERROR_DOMAIN, metadata=metadata
            )
        )
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        self._message = message
        self._code = code
        self._status = status_pb2.Status(
            code=code.value[0], message=message, details=[info, bad] if violations else []
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Iterator[tuple[str, bytes]]:
        return iter([("grpc-status-details-bin", self._status.SerializeToString())])


def test_every_field_violation_is_shown_with_the_flag_and_its_message() -> None:
    """A CreateModel refusal naming several fields shows each as --flag: message, once."""
    error = from_rpc_error(
        _RpcError(
            "model.destination_table: must be schema.table",
            [
                ("model.destination_table", "must be schema.table"),
                ("model.sql", "must be one read-only statement"),
                ("model.cursor_column", "is needed for an incremental model"),
                ("model.name", "must start with a letter"),
            ],
        )
    )
    assert error.exit_code == ExitCode.USAGE
    assert error.message == (
        "--table: must be schema.table; the SQL: must be one read-only statement;"
        " --cursor: is needed for an incremental model; model.name: must start with a letter"
    )


def test_a_single_violation_is_not_repeated() -> None:
    """The status message already says the one violation: it is shown once, with its flag."""
    error = from_rpc_error(
        _RpcError(
            "model.schedule_interval: must be from 5 minutes to 365 days",
            [("model.schedule_interval", "must be from 5 minutes to 365 days")],
        )
    )
    assert error.message == "--every: must be from 5 minutes to 365 days"


def test_a_control_plane_without_models_says_it_is_older() -> None:
    """UNIMPLEMENTED (a server that predates ModelService) reads as what to do, not as gRPC's
    "Method not found!"."""
    error = from_rpc_error(_RpcError("Method not found!", [], grpc.StatusCode.UNIMPLEMENTED))
    assert error.message.startswith("the control plane does not offer this yet")
    assert "upgrade it" in error.message
    assert error.exit_code == ExitCode.FAILED


# --- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["create", "list", "get", "update", "delete", "preview", "sync", "schedule", "runs"]
)
def test_every_models_command_has_help_with_an_example(command: str) -> None:
    """``sevvo models COMMAND --help`` works without a session or server, with an example."""
    result = CliRunner().invoke(app, ["models", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: sevvo models" in result.stdout


def test_the_guide_shows_the_file_format_the_help_shows() -> None:
    """docs/user-guide.md's model file is FILE_FORMAT, word for word."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "user-guide.md").read_text()
    assert f"```toml\n{FILE_FORMAT}\n```" in guide


def test_create_help_documents_the_file_format() -> None:
    """The model file's keys are in create's help, as FILE_FORMAT has them."""
    result = CliRunner().invoke(app, ["models", "create", "--help"], env={"COLUMNS": "120"})
    assert all(line.split()[0] in result.stdout for line in FILE_FORMAT.splitlines())
