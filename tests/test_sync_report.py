"""Only metadata leaves the agent after a sync: the allow-list of SyncResult's fields.

A sync's rows stay in the customer's network; what crosses to the control plane (through
Temporal, into the run's record) is one SyncResult. These tests fail when a field is added that
could carry row content: a new string or bytes field must be argued for here, by name.
"""

from __future__ import annotations

import dataclasses

from google.protobuf.descriptor import FieldDescriptor

from agent.sync.plan import REPORT_FIELDS, SyncReport
from agent.sync.run import result_of
from services.orchestrator.domain import sync_report
from sevvo.workflows.v1 import workflows_pb2 as wpb

# Scalar types that hold a count, a duration or a flag: no row value fits in one unnoticed.
_METADATA_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_ENUM,
}
# The text fields, and why each carries no value from the rows.
_TEXT_FIELDS = {
    # Written by the agent from the outcome catalogue, naming tables and columns only; never a
    # database's own message, which can quote a value (tests/test_sync_run.py).
    "message",
    # Five characters of SQLSTATE.
    "sqlstate",
    # A hex digest of the result's column names and types.
    "schema_fingerprint",
}


def test_every_result_field_is_a_count_a_flag_or_an_argued_text_field() -> None:
    """Adding a string, bytes or message field to SyncResult fails here until argued for."""
    for field in wpb.SyncResult.DESCRIPTOR.fields:
        if field.name in _TEXT_FIELDS:
            assert field.type == FieldDescriptor.TYPE_STRING, field.name
            continue
        assert field.type in _METADATA_TYPES, (
            f"SyncResult.{field.name} could carry a value from the rows; add it to"
            " _TEXT_FIELDS only with the reason it cannot"
        )
        assert not field.is_repeated, field.name


def test_the_engine_report_crosses_whole_and_alone() -> None:
    """Every field of the engine's SyncReport arrives in the result, each under its name."""
    report = SyncReport(
        rows=11,
        bytes=22,
        duration_ms=33,
        schema_fingerprint="ab" * 16,
        created_table=True,
        schema_changed=True,
        full_reload=True,
    )
    result = result_of(report, attempt=4)
    for name in REPORT_FIELDS:
        assert getattr(result, name) == getattr(report, name), name
    assert set(REPORT_FIELDS) <= {f.name for f in wpb.SyncResult.DESCRIPTOR.fields}
    assert [f.name for f in dataclasses.fields(SyncReport)] == list(REPORT_FIELDS)


def test_a_run_keeps_the_result_fields_and_nothing_else() -> None:
    """The orchestrator's record of a sync holds SyncResult's fields by name, without the
    category and message its own columns hold."""
    result = wpb.SyncResult(
        category=wpb.SYNC_CATEGORY_OK,
        message="synced",
        rows=5,
        bytes=6,
        schema_fingerprint="cd" * 16,
        schema_changed=True,
        attempt=2,
    )
    kept = sync_report(result)
    assert kept == {
        "rows": "5",  # int64 is a string in protobuf's JSON mapping
        "bytes": "6",
        "schema_fingerprint": "cd" * 16,
        "schema_changed": True,
        "attempt": 2,
    }
