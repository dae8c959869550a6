"""Rendering: data to stdout as JSON or a rich table, errors and progress to stderr.

JSON is the default when stdout is not a terminal, so ``sevvo ... | jq`` works without a
flag; the shape uses the protobuf field names, enum values as short lower_snake names
(``active``, ``connected``) and timestamps as RFC 3339 strings.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.errors import CliError

JsonValue = Any


class OutputFormat(enum.StrEnum):
    """How data is written to stdout."""

    TABLE = "table"
    JSON = "json"


def default_format() -> OutputFormat:
    """A table for a person at a terminal, JSON for a pipe or a file."""
    return OutputFormat.TABLE if sys.stdout.isatty() else OutputFormat.JSON


def enum_name(field: Any, number: int) -> str:
    """``DEPLOYMENT_STATE_ACTIVE`` as ``active``: the buf-style prefix dropped, lower-cased."""
    enum_type = field.enum_type
    assert enum_type is not None
    prefix = enum_type.values_by_number[0].name.removesuffix("UNSPECIFIED")
    value = enum_type.values_by_number.get(number)
    if value is None:
        return str(number)
    return str(value.name).removeprefix(prefix).lower()


# Fields are typed Any: the upb and pure-Python descriptor classes share no declared base.
def _value(field: Any, value: Any) -> JsonValue:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field, value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if isinstance(value, Timestamp | Duration):
            # Protobuf's JSON mapping: "2026-12-02T12:00:00Z" and "2592000s".
            return value.ToJsonString()
        return message_dict(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value


def message_dict(message: Message) -> dict[str, JsonValue]:
    """A message as plain JSON data: every field, unset messages and timestamps as null."""
    out: dict[str, JsonValue] = {}
    field: Any
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


# Headers of columns whose values are ids or times: never folded.
_UNBROKEN = frozenset({"id", "created", "started", "time", "expires"})
# A column of free text wider than this folds rather than pushing others off the table.
_MAX_NATURAL_WIDTH = 32
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An id as the services write it (lower case); tables shorten it, commands accept it."""
SHORT_ID_CHARS = 8
"""A list table shows ids by their first 8 characters; commands take any unique prefix."""

Column = tuple[str, Callable[[Mapping[str, JsonValue]], object]]
"""A table column: its header, and how to get the cell from a JSON record."""


def key(name: str) -> Callable[[Mapping[str, JsonValue]], object]:
    """A column getter for one top-level field."""
    return lambda record: record.get(name)


_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(?:Z|[+-]00:00)$")


def cell(value: object) -> Text:
    """Plain text for a table cell: data is never read as rich markup.

    Timestamps (UTC) are shown to the second; JSON keeps them whole.
    """
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    text = str(value)
    if match := _TIMESTAMP.match(text):
        # Z marks UTC, so nobody reads a server time as their local one.
        return Text(f"{match.group(1)} {match.group(2)}Z")
    return Text(text)


def short_ids(text: Text) -> Text:
    """``text`` with every UUID cut to its first 8 characters (a list table's id form)."""
    return Text(UUID_PATTERN.sub(lambda match: match.group(0)[:SHORT_ID_CHARS], text.plain))


def fit_columns(headers: Sequence[str], rows: Sequence[Sequence[Text]], width: int) -> list[int]:
    """The indexes of the columns to show so the table fits ``width``, in their order.

    Columns come most important first; the last ones are left out until the rest fit at
    their natural width (free text capped, so a long value folds instead). Without this rich
    squeezes every column, to one letter per line at 80 columns.
    """
    natural = []
    for index, header in enumerate(headers):
        widest = max([len(header), *(row[index].cell_len for row in rows)])
        natural.append(widest if header in _UNBROKEN else min(widest, _MAX_NATURAL_WIDTH))
    shown = list(range(len(headers)))
    # One space of padding each side, one rule between columns.
    while len(shown) > 1 and sum(natural[i] + 3 for i in shown) - 1 > width:
        shown.pop()
    return shown


class Output:
    """Where a command writes: data on stdout, messages and progress on stderr."""

    def __init__(self, fmt: OutputFormat) -> None:
        self.format = fmt
        # On a terminal its width (COLUMNS overrides); into a pipe or file (--output table) a
        # wide page unless COLUMNS says otherwise, so nothing folds mid-value there.
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) >= 40 else None
        if width is None and not sys.stdout.isatty():
            width = 200
        self.stdout = Console(highlight=False, width=width)
        # Soft wrap: a message is one line however narrow the terminal, so grep finds it.
        self.stderr = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def json(self) -> bool:
        """Whether data goes out as JSON."""
        return self.format is OutputFormat.JSON

    def emit_json(self, data: JsonValue) -> None:
        """Writes data as JSON (plain, not through rich, so nothing is wrapped or styled)."""
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def records(
        self, data: JsonValue, rows: Sequence[Mapping[str, JsonValue]], columns: Sequence[Column]
    ) -> None:
        """A list of records: ``data`` as JSON, or ``rows`` as a table of ``columns``."""
        if self.json:
            self.emit_json(data)
            return
        if not rows:
            self.note("nothing to show")
            return
        cells = [[short_ids(cell(get(row))) for _, get in columns] for row in rows]
        headers = [header for header, _ in columns]
        shown = fit_columns(headers, cells, self.stdout.width)
        table = Table(show_edge=False, header_style="bold")
        for index in shown:
            table.add_column(headers[index], overflow="fold", no_wrap=headers[index] in _UNBROKEN)
        for row_cells in cells:
            table.add_row(*(row_cells[index] for index in shown))
        self.stdout.print(table)
        if len(shown) < len(headers):
            hidden = ", ".join(
                headers[index] for index in range(len(headers)) if index not in shown
            )
            self.note(
                f"not shown at this width: {hidden} (widen the terminal, or use --output json)"
            )

    def listing(
        self,
        name: str,
        rows: list[dict[str, JsonValue]],
        next_page_token: str,
        columns: Sequence[Column],
        command: str,
    ) -> None:
        """One page of a list: JSON ``{name: rows, "next_page_token": ...}``, or a table and,
        when more follow, a line on stderr saying how to get them."""
        data: dict[str, JsonValue] = {name: list(rows), "next_page_token": next_page_token}
        self.records(data, rows, columns)
        if next_page_token and not self.json:
            self.note(
                f"more {name} follow: {command} --page-token {next_page_token}"
                " (or --all, or a larger --limit)"
            )

    def record(
        self, data: JsonValue, record: Mapping[str, JsonValue], fields: Sequence[Column]
    ) -> None:
        """One record: ``data`` as JSON, or ``fields`` of ``record`` as a two-column table."""
        if self.json:
            self.emit_json(data)
            return
        table = Table(show_header=False, show_edge=False, box=None)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for label, get in fields:
            table.add_row(Text(label), cell(get(record)))
        self.stdout.print(table)

    def line(self, text: str) -> None:
        """One line of data on stdout, never wrapped (a token must copy whole)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """An informational line for the person at the terminal (stderr)."""
        self.stderr.print(Text(message))

    def warn(self, message: str) -> None:
        """A warning line (stderr)."""
        self.stderr.print(Text(f"warning: {message}", style="yellow"))

    def error(self, error: CliError) -> None:
        """The error's message, stable reason, category and the troubleshooting hint."""
        self.stderr.print(Text(f"error: {error.message}", style="red"))
        for label, value in (
            ("reason", error.reason),
            ("category", error.category),
            ("hint", error.hint),
        ):
            # The agent's message for a failed credential test is the hint itself: say it once.
            if value and not (label == "hint" and value in error.message):
                self.stderr.print(Text(f"  {label}: {value}"))

    @contextlib.contextmanager
    def progress(self, message: str) -> Iterator[None]:
        """A spinner on stderr while a long call runs; nothing when stderr is not a terminal."""
        if not self.stderr.is_terminal:
            yield
            return
        with self.stderr.status(Text(message)):
            yield
