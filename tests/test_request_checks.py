"""Checks every request passes before its servicer, page tokens, and Postgres error mapping."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import paging
from sevvo.runtime.errors import InvalidArgument, database_error
from sevvo.runtime.logs import exception_chain
from sevvo.runtime.validation import (
    MAX_DURATION_SECONDS,
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    check_request,
)


def _lease(**times: timestamp_pb2.Timestamp) -> cpb.CreateLeaseRequest:
    request = cpb.CreateLeaseRequest(connection_id=str(uuid.uuid4()))
    for name, value in times.items():
        getattr(request, name).CopyFrom(value)
    return request


def _interval(seconds: int, nanos: int = 0) -> opb.SetRootRotationScheduleRequest:
    return opb.SetRootRotationScheduleRequest(
        interval=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (cpb.GetConnectionRequest(id="a\x00b"), "id"),
        (
            cpb.CreateConnectionRequest(fields=cpb.PostgresFields(host="db\x00.internal")),
            "fields.host",
        ),
        (
            cpb.CreateConnectionRequest(
                dynamic=cpb.PostgresDynamic(creation_statements=["ok", "drop\x00"])
            ),
            "dynamic.creation_statements[1]",
        ),
        (
            cpb.UpdateConnectionRequest(
                update_mask=field_mask_pb2.FieldMask(paths=["display_name\x00"])
            ),
            "update_mask.paths[0]",
        ),
        (_lease(expire_time=_ts(2**62)), "expire_time"),
        (_lease(max_expire_time=_ts(MIN_TIMESTAMP_SECONDS - 1)), "max_expire_time"),
        (_lease(expire_time=_ts(0, -1)), "expire_time"),
        (_lease(expire_time=_ts(0, 10**9)), "expire_time"),
        (_interval(2**62), "interval"),
        (_interval(-(2**62)), "interval"),
        (_interval(1, -1), "interval"),
        (_interval(-1, 1), "interval"),
        (_interval(0, 10**9), "interval"),
    ],
    ids=[
        "nul",
        "nul-nested",
        "nul-repeated",
        "nul-mask",
        "time-2^62",
        "time-before-year-1",
        "time-negative-nanos",
        "time-nanos-overflow",
        "duration-2^62",
        "duration-minus-2^62",
        "duration-mixed-signs",
        "duration-mixed-signs-negative",
        "duration-nanos-overflow",
    ],
)
def test_request_no_method_can_mean_is_refused_naming_the_field(
    request_message: Message, field: str
) -> None:
    """NUL characters and times outside protobuf's range are INVALID_ARGUMENT at their path."""
    with pytest.raises(InvalidArgument) as caught:
        check_request(request_message)
    assert caught.value.field == field
    assert "\x00" not in caught.value.message


@pytest.mark.parametrize(
    "request_message",
    [
        cpb.GetConnectionRequest(id="' or 1=1 --"),
        _lease(expire_time=_ts(MAX_TIMESTAMP_SECONDS, 999_999_999)),
        _lease(expire_time=_ts(MIN_TIMESTAMP_SECONDS)),
        _interval(MAX_DURATION_SECONDS, 999_999_999),
        _interval(-MAX_DURATION_SECONDS, -999_999_999),
        _interval(0, -1),
        cpb.CreateConnectionRequest(display_name="\u202eevil"),
    ],
    ids=["sql", "year-9999", "year-1", "10000-years", "minus-10000-years", "minus-1ns", "bidi"],
)
def test_request_within_range_passes_the_generic_check(request_message: Message) -> None:
    """What protobuf can represent passes; the method's own rules judge it afterwards."""
    check_request(request_message)


def _token(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_token_round_trips() -> None:
    """A token made by encode_cursor decodes to the same position."""
    when, row_id = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), str(uuid.uuid4())
    assert paging.decode_cursor(paging.encode_cursor(when, row_id)) == (when, row_id)


@pytest.mark.parametrize(
    "token",
    [
        "!!not base64!!",
        _token([datetime.now(UTC).isoformat(), "' or 1=1 --"]),
        _token([datetime.now(UTC).isoformat(), "\x00"]),
        _token([datetime.now(UTC).isoformat(), 42]),
        _token(["2026-01-01T00:00:00", str(uuid.uuid4())]),
        _token(["yesterday", str(uuid.uuid4())]),
        _token({"a": 1, "b": 2}),
        _token([1, 2]),
        _token([[1], {}]),
        _token([1, 2, 3]),
        _token(bytes(range(256))),
    ],
    ids=[
        "not-base64",
        "sql-id",
        "nul-id",
        "number-id",
        "naive-time",
        "not-a-time",
        "object",
        "numbers",
        "nested",
        "three-items",
        "binary",
    ],
)
def test_forged_page_token_is_invalid_argument(token: str) -> None:
    """A token whose id is not a UUID or whose time is not an aware time never reaches SQL."""
    with pytest.raises(InvalidArgument) as caught:
        paging.decode_cursor(token)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (pg_errors.InvalidTextRepresentation(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
        (pg_errors.DatetimeFieldOverflow(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
        (psycopg.DataError(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE"),
        (pg_errors.ProgramLimitExceeded(), grpc.StatusCode.INVALID_ARGUMENT, "VALUE_TOO_LARGE"),
        (pg_errors.UniqueViolation(), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
        (
            pg_errors.ForeignKeyViolation(),
            grpc.StatusCode.FAILED_PRECONDITION,
            "CONSTRAINT_VIOLATION",
        ),
        (pg_errors.SerializationFailure(), grpc.StatusCode.ABORTED, "CONCURRENT_CHANGE"),
        (pg_errors.DeadlockDetected(), grpc.StatusCode.ABORTED, "CONCURRENT_CHANGE"),
        (pg_errors.AdminShutdown(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (pg_errors.CannotConnectNow(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (pg_errors.TooManyConnections(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (psycopg.OperationalError(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (PoolTimeout(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_postgres_errors_map_by_sqlstate_class(
    error: psycopg.Error, code: grpc.StatusCode, reason: str
) -> None:
    """Bad values, conflicts and an unreachable database each get their own status code."""
    mapped = database_error(error)
    assert mapped is not None
    assert (mapped.code, mapped.reason) == (code, reason)


@pytest.mark.parametrize(
    "error", [pg_errors.UndefinedTable(), pg_errors.SyntaxError(), psycopg.InternalError()]
)
def test_postgres_errors_of_our_own_making_stay_internal(error: psycopg.Error) -> None:
    """A query that does not parse or names a missing table is our bug: no mapping."""
    assert database_error(error) is None


def _fail(text: str) -> None:
    raise ValueError(text)


def test_exception_chain_has_types_and_frames_but_no_message() -> None:
    """Each exception of a chain is named with its frames; no message text survives."""
    try:
        try:
            _fail("secret ' or 1=1 --")
        except ValueError as inner:
            raise RuntimeError("wrapped: secret ' or 1=1 --") from inner
    except RuntimeError as outer:
        chain = exception_chain(outer)
    assert [entry["type"] for entry in chain] == ["builtins.RuntimeError", "builtins.ValueError"]
    frames = chain[1]["frames"]
    assert isinstance(frames, list)
    assert any(
        f.startswith("tests/test_request_checks.py:") and f.endswith(" _fail") for f in frames
    )
    assert "secret" not in json.dumps(chain)
