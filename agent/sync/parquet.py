"""A sync from a Postgres source into a Parquet file in a directory (a volume in the agent's pod).

The source is read as the Postgres engine reads it (agent/sync/source.py: one READ ONLY,
REPEATABLE READ snapshot, text forms pinned), through a server-side cursor in batches of at
most _BATCH_ROWS rows or about _BATCH_BYTES of Arrow data, each written as one row group:
memory stays flat however many rows the model returns. A model's file is
``<directory>/<schema>/<table>.parquet``; a run writes ``.<table>.parquet.<run uuid>.tmp``
beside it, fsyncs it, renames it over the old file and fsyncs the directory, so a reader sees
the old file or the new one, never half of one. A run that fails, is cancelled or is killed
leaves the old file as it was; a killed run's temporary file is removed by the model's next
run. Full refresh only: each run writes the whole result.

Two runs of one model never write at once: each holds an exclusive ``flock`` on
``.<table>.parquet.lock`` beside the file for its whole life (the Postgres engine's advisory
lock, for files).

The file's key-value metadata holds ``sevvo.model_id``, ``sevvo.schema_fingerprint`` (the
fingerprint the report carries) and ``sevvo.columns`` (the source's column names and types, so
a changed shape can be described by name). A file whose fingerprint differs from the query's is
replaced only when the model allows schema evolution.

Types, decided from the result's type OIDs and modifiers (Postgres → Arrow):

==============================================  ============================================
bool                                            bool
smallint, integer, bigint                       int16, int32, int64
real, double precision                          float32, float64
numeric(p, s), 0 ≤ s ≤ p ≤ 38                   decimal128(p, s)
numeric otherwise (no precision, p > 38)        string: the exact text, NaN as ``NaN``
text, varchar, char(n), name                    string
date                                            date32
timestamp                                       timestamp[us]
timestamptz                                     timestamp[us, tz=UTC]
time                                            time64[us]
bytea                                           binary
json, jsonb                                     string: the JSON text
uuid                                            string
a one-dimensional array of any of the above     list<the element's type>
anything else (interval, timetz, enums, …)      string: the value cast to text at the source
==============================================  ============================================

NULLs stay NULL, in arrays too. What the mapped types cannot hold fails the run as
``invalid_model`` naming the column, so the model can cast it: a multi-dimensional array, a NaN
in a ``numeric(p, s)``, a date or timestamp outside years 1 to 9999 or ``infinity``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from agent.sync.plan import (
    Column,
    LoadMode,
    SyncFailed,
    SyncPlan,
    SyncReport,
    describe_drift,
    fingerprint,
)
from agent.sync.source import Opener, Progress, TypedColumn, source_session, typed_columns

# A row group per batch: rows fetched at once, and a bound on their Arrow size that shrinks
# the next fetch for wide rows. A batch's rows are Python objects first, several times their
# Arrow size: 20,000 rows of 300 bytes add about 80 MB at peak, whatever the row count, where
# 50,000 added 100 MB at 50,000 rows and 160 MB at 200,000 (measured as
# tests/test_sync_parquet.py does).
_FIRST_BATCH_ROWS = 1_000
_BATCH_ROWS = 20_000
_BATCH_BYTES = 16 * 1024 * 1024
_FILE_MODE = 0o640
_DIRECTORY_MODE = 0o750
# While another run of the model holds the lock: how often to look again (and report progress,
# so a cancelled activity stops waiting).
_LOCK_POLL_SECONDS = 0.2

_META_MODEL = b"sevvo.model_id"
_META_FINGERPRINT = b"sevvo.schema_fingerprint"
_META_COLUMNS = b"sevvo.columns"


def _scalar_types() -> dict[int, pa.DataType]:
    types = psycopg.postgres.types
    return {
        types["bool"].oid: pa.bool_(),
        types["int2"].oid: pa.int16(),
        types["int4"].oid: pa.int32(),
        types["int8"].oid: pa.int64(),
        types["float4"].oid: pa.float32(),
        types["float8"].oid: pa.float64(),
        types["text"].oid: pa.string(),
        types["varchar"].oid: pa.string(),
        types["bpchar"].oid: pa.string(),
        types["name"].oid: pa.string(),
        types["date"].oid: pa.date32(),
        types["timestamp"].oid: pa.timestamp("us"),
        types["timestamptz"].oid: pa.timestamp("us", tz="UTC"),
        types["time"].oid: pa.time64("us"),
        types["bytea"].oid: pa.binary(),
    }


# Types read as Python values, and (for their arrays) types read as text, cast at the source.
_SCALARS = _scalar_types()
_AS_TEXT = {psycopg.postgres.types[n].oid for n in ("json", "jsonb", "uuid")}
_NUMERIC = psycopg.postgres.types["numeric"].oid
_ELEMENTS = {
    info.array_oid: info.oid
    for info in (psycopg.postgres.types.get(oid) for oid in (*_SCALARS, *_AS_TEXT, _NUMERIC))
    if info is not None
}


@dataclass(frozen=True)
class _Field:
    """How one result column is read (cast at the source or not) and stored."""

    name: str
    arrow: pa.DataType
    # The source type the value is cast to in the query's wrapper, or None: read as it is.
    cast: str | None


def _arrow_field(column: TypedColumn) -> _Field:
    """The Arrow type of a result column and the cast (if any) it is read through."""
    element = _ELEMENTS.get(column.oid)
    if element is not None:
        # An array's modifier is its element's (numeric(12,2)[]).
        inner = _arrow_field(TypedColumn(column.name, column.type_sql, element, column.mod))
        return _Field(column.name, pa.list_(inner.arrow), None if inner.cast is None else "text[]")
    scalar = _SCALARS.get(column.oid)
    if scalar is not None:
        return _Field(column.name, scalar, None)
    if column.oid == _NUMERIC and column.mod >= 4:
        # typmod = ((precision << 16) | scale) + 4; scale may be negative or above precision
        # since Postgres 15, which decimal128 cannot say.
        precision, scale = (column.mod - 4) >> 16, (column.mod - 4) & 0xFFFF
        if 0 <= scale <= precision <= 38:
            return _Field(column.name, pa.decimal128(precision, scale), None)
    return _Field(column.name, pa.string(), "text")


def _paths(directory: Path, plan: SyncPlan) -> tuple[Path, Path, re.Pattern[str]]:
    """The model's file, its lock file and the pattern of its runs' temporary files."""
    folder = directory / plan.destination.schema
    name = f"{plan.destination.name}.parquet"
    stale = re.compile(re.escape(f".{name}.") + r"[0-9a-f]{32}\.tmp")
    return folder / name, folder / f".{name}.lock", stale


def sync_to_parquet(
    source: str | Opener,
    directory: Path,
    plan: SyncPlan,
    *,
    progress: Progress | None = None,
) -> SyncReport:
    """Runs one full-refresh sync of ``plan`` from ``source`` (a conninfo, or a callable that
    opens a blocking connection) into ``<directory>/<schema>/<table>.parquet``.

    ``progress`` is called once per row group with the bytes written so far (and while waiting
    for another run of the model); an exception it raises stops the run. Raises SyncFailed,
    the file unchanged, with a category: ``invalid_model``, ``schema_changed``,
    ``directory_unusable``, ``source_query_failed``. Failing to connect raises what the opener
    raises.
    """
    started = time.monotonic()
    if plan.mode is not LoadMode.FULL_REFRESH:
        raise SyncFailed(
            "invalid_model",
            "a Parquet destination is loaded in full refresh only; make the model full refresh",
        )
    target, lock_path, stale = _paths(directory, plan)
    with _usable(directory):
        if not directory.is_dir():
            code = errno.ENOTDIR if directory.exists() else errno.ENOENT
            raise OSError(code, os.strerror(code))
        created_folder = not target.parent.is_dir()
        target.parent.mkdir(mode=_DIRECTORY_MODE, exist_ok=True)
        if created_folder:
            _fsync_directory(directory)
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        _lock(lock, progress)
        with _usable(directory):
            # Under the lock: no live run of this model is writing a temporary file.
            for entry in os.scandir(target.parent):
                if stale.fullmatch(entry.name):
                    os.unlink(entry.path)
            before = _existing(target)
        # Connecting raises what the opener raises (the activity maps it as a credential
        # test's failure); an error after that is the query's.
        with source_session(source) as src:
            try:
                columns = typed_columns(src, plan.query)
                shape = tuple(Column(c.name, c.type_sql) for c in columns)
                changed = before is not None and before.fingerprint != fingerprint(shape)
                if before is not None and changed and not plan.allow_schema_evolution:
                    raise SyncFailed("schema_changed", _drift(before, shape))
                rows = _write(src, target, directory, plan, columns, shape, progress)
            except psycopg.Error as exc:
                raise SyncFailed(
                    "source_query_failed",
                    f"the sync stopped on a source database error (SQLSTATE"
                    f" {exc.sqlstate or 'none'}); the destination file is unchanged",
                    exc.sqlstate,
                ) from None
        with _usable(directory):
            size = target.stat().st_size
    finally:
        os.close(lock)  # Releases the flock.
    return SyncReport(
        rows=rows,
        bytes=size,
        duration_ms=int((time.monotonic() - started) * 1000),
        schema_fingerprint=fingerprint(shape),
        created_table=before is None,
        schema_changed=changed,
        full_reload=True,
    )


@contextmanager
def _usable(directory: Path) -> Iterator[None]:
    """Turns a failure of the filesystem into ``directory_unusable``, naming the directory and
    the error's name (ENOSPC, EROFS, …), never a value."""
    try:
        yield
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, "an I/O error")
        raise SyncFailed(
            "directory_unusable",
            f"the agent could not write the directory {directory} ({code});"
            " the destination file is unchanged",
        ) from None


def _lock(fd: int, progress: Progress | None) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if progress is not None:
                progress(0)
            time.sleep(_LOCK_POLL_SECONDS)


@dataclass(frozen=True)
class _Before:
    """The file a run replaces: its fingerprint and, when recorded, its columns."""

    fingerprint: str | None
    columns: tuple[Column, ...] | None


def _existing(target: Path) -> _Before | None:
    if not target.exists():
        return None
    try:
        metadata = pq.read_schema(target).metadata or {}
    except pa.ArrowInvalid:  # Not a Parquet file: not one of ours.
        return _Before(None, None)
    found = metadata.get(_META_FINGERPRINT)
    try:
        columns = tuple(Column(n, t) for n, t in json.loads(metadata[_META_COLUMNS]))
    except (KeyError, ValueError, TypeError):  # Absent or not ours: described as foreign.
        return _Before(found.decode(errors="replace") if found else None, None)
    return _Before(found.decode(errors="replace") if found else None, columns)


def _drift(before: _Before, now: tuple[Column, ...]) -> str:
    if before.columns is None:
        return (
            "the destination file was not written by a sevvo sync (it has no schema"
            " fingerprint); allow schema evolution on the model to replace it, or move it"
        )
    return describe_drift(before.columns, now, "file")


def _write(
    src: psycopg.Connection[Any],
    target: Path,
    directory: Path,
    plan: SyncPlan,
    columns: tuple[TypedColumn, ...],
    shape: tuple[Column, ...],
    progress: Progress | None,
) -> int:
    """Writes the query's rows to a temporary file and renames it onto ``target``; returns
    the rows written. Any failure, a cancelling ``progress`` included, removes the temporary
    file and leaves ``target`` as it was."""
    fields = [_arrow_field(c) for c in columns]
    schema = pa.schema(
        [pa.field(f.name, f.arrow) for f in fields],
        metadata={
            _META_MODEL: plan.model_id.encode(),
            _META_FINGERPRINT: fingerprint(shape).encode(),
            _META_COLUMNS: json.dumps([[c.name, c.type_sql] for c in shape]).encode(),
        },
    )
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    rows = 0
    try:
        with _usable(directory):
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            os.fchmod(fd, _FILE_MODE)  # Whatever the agent's umask.
            sink: IO[bytes] = os.fdopen(fd, "wb")
        with sink:
            with _usable(directory), pq.ParquetWriter(sink, schema) as writer:
                for batch in _batches(src, plan.query, fields, schema):
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    if progress is not None:
                        progress(sink.tell())
            with _usable(directory):
                sink.flush()
                os.fsync(sink.fileno())
        with _usable(directory):
            os.replace(temporary, target)
            _fsync_directory(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return rows


def _batches(
    src: psycopg.Connection[Any], query: str, fields: list[_Field], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The query's rows as record batches, fetched through a server-side cursor."""
    wrapped = sql.SQL("select {} from ({}) as sevvo_model").format(
        sql.SQL(", ").join(
            sql.Identifier("sevvo_model", f.name)
            if f.cast is None
            else sql.SQL("{}::{} as {}").format(
                sql.Identifier("sevvo_model", f.name), sql.SQL(f.cast), sql.Identifier(f.name)
            )
            for f in fields
        ),
        sql.SQL(query),
    )
    # The first fetch is small: its rows' width sizes the rest, so a model of wide rows (a
    # large jsonb each) never fetches _BATCH_ROWS of them at once.
    size = _FIRST_BATCH_ROWS
    with src.cursor(name="sevvo_parquet", binary=True) as cur:
        cur.execute(wrapped)
        while rows := _fetch(cur, size):
            batch = pa.RecordBatch.from_arrays(
                [
                    _array(f, values)
                    for f, values in zip(fields, zip(*rows, strict=True), strict=True)
                ],
                schema=schema,
            )
            del rows  # The Python objects go before the next fetch.
            yield batch
            per_row = max(1, batch.nbytes // max(1, batch.num_rows))
            size = max(1, min(_BATCH_ROWS, _BATCH_BYTES // per_row))


def _fetch(cur: psycopg.ServerCursor[Any], size: int) -> list[Any]:
    try:
        return cur.fetchmany(size)
    except psycopg.DataError as exc:
        if exc.sqlstate is not None:
            raise
        # Raised by psycopg itself, not the server: a value Python's types cannot hold.
        raise SyncFailed(
            "invalid_model",
            "a value of the model's result has no Python form (a date or timestamp outside"
            " years 1 to 9999, or infinity); cast it in the model's query",
        ) from None


def _array(field: _Field, values: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(values, type=field.arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise SyncFailed(
            "invalid_model",
            f"column {field.name} holds a value a Parquet {field.arrow} cannot (a nested array,"
            " a NaN in a numeric of fixed precision, a date out of range); cast it in the"
            " model's query",
        ) from None


def _fsync_directory(path: Path) -> None:
    """Makes a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
