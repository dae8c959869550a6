"""Input rules shared by every service, raising InvalidArgument that names the field."""

from __future__ import annotations

import posixpath
import re
import unicodedata
import uuid
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from sevvo.runtime.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

MAX_DISPLAY_NAME_LENGTH = 100
# A plain Postgres identifier, which Postgres never case-folds or truncates: lower-case
# letters, digits and '_', at most 63 characters (NAMEDATALEN - 1). Whoever builds SQL with it
# still quotes it (psycopg's sql.Identifier): a keyword such as "order" is a plain identifier.
SQL_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SQL_IDENTIFIER_HELP = (
    "must be a plain identifier: 1 to 63 lower-case letters, digits and '_', not starting with"
    " a digit"
)


def has_control_characters(value: str) -> bool:
    """Whether a string holds control, format (bidi overrides, zero-width) or unassigned chars."""
    return any(unicodedata.category(ch)[0] == "C" for ch in value)


# A directory the agent writes (a Parquet directory connection's path), in bytes of UTF-8:
# PATH_MAX on Linux.
MAX_DIRECTORY_PATH_BYTES = 4096


def directory_path_problem(path: str) -> str | None:
    """What is wrong with a directory path in the agent's filesystem (None if nothing).

    Absolute and already normalised (no '.', '..', '//' or trailing '/'), so the path stored is
    the path checked; no control characters (a NUL would cut it short); at most 4096 bytes.
    """
    if not path:
        return "is required"
    if has_control_characters(path):
        return "must not contain control or invisible format characters"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode text (no unpaired surrogates)"
    if size > MAX_DIRECTORY_PATH_BYTES:
        return f"must be at most {MAX_DIRECTORY_PATH_BYTES} bytes in UTF-8"
    if not path.startswith("/"):
        return "must be an absolute path (starting with /) in the agent's filesystem"
    if ".." in path.split("/"):
        return "must not contain '..'"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return "must be normalised: no '.' parts, repeated '/' or trailing '/'"
    return None


def directory_path(field: str, path: str) -> str:
    """A directory path that meets ``directory_path_problem``'s rules; InvalidArgument else."""
    problem = directory_path_problem(path)
    if problem is not None:
        raise InvalidArgument(field, problem)
    return path


def display_name(field: str, name: str) -> str:
    """A name of 1-100 printable characters, trimmed."""
    name = name.strip()
    if not name:
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if has_control_characters(name):
        raise InvalidArgument(field, "must not contain control or invisible format characters")
    return name


def resource_id(field: str, value: str) -> uuid.UUID:
    """A resource id, which is always a UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None


def sql_identifier(field: str, value: str) -> str:
    """A plain lower-case Postgres identifier (a schema, table or column name), as given."""
    if not SQL_IDENTIFIER.fullmatch(value):
        raise InvalidArgument(field, SQL_IDENTIFIER_HELP)
    return value


class FieldErrors:
    """Collects the invalid fields of one request, so one answer names every one of them.

    Each rule still raises InvalidArgument for its own field; ``check`` runs it and keeps
    the violation instead of stopping at the first.
    """

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []
        self._reason: str | None = None

    def check(self, rule: Callable[[], T]) -> T | None:
        """The rule's result, or None when it found its field invalid (the error is kept)."""
        try:
            return rule()
        except InvalidArgument as error:
            self._keep(error)
            return None

    def add(self, field: str, description: str, *, reason: str | None = None) -> None:
        """Records one invalid field."""
        self._keep(InvalidArgument(field, description, reason=reason))

    def _keep(self, error: InvalidArgument) -> None:
        # A lone violation keeps its own reason; several together are plain INVALID_ARGUMENT.
        alone = not self._found and len(error.violations) == 1
        self._reason = error.reason if alone else None
        self._found.extend(error.violations)

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_any(self) -> None:
        """Raises one InvalidArgument naming every field found invalid, if any was."""
        if self._found:
            first, *rest = self._found
            raise InvalidArgument(first.field, first.description, reason=self._reason, also=rest)


# protobuf's own valid ranges (google/protobuf/timestamp.proto and duration.proto): values
# outside them make ToDatetime()/ToTimedelta() raise, and no sane caller sends them.
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years
_MAX_NANOS = 999_999_999


def check_request(message: Message) -> None:
    """Rejects what no RPC can mean, wherever it sits in a request, naming the field path.

    Strings holding NUL (Postgres text cannot store it, and C libraries cut the string at it)
    and Timestamp or Duration values outside protobuf's valid range. Runs for every request
    before its servicer (sevvo.runtime.grpc_server), so each new RPC is covered too.
    """
    _check_message(message, "")


def _check_message(message: Message, prefix: str) -> None:
    if isinstance(message, Timestamp):
        _check_timestamp(message, prefix.rstrip("."))
        return
    if isinstance(message, Duration):
        _check_duration(message, prefix.rstrip("."))
        return
    for fd, value in message.ListFields():
        path = prefix + fd.name
        if fd.type == FieldDescriptor.TYPE_STRING:
            if fd.is_repeated:
                for index, item in enumerate(value):
                    _check_string(f"{path}[{index}]", item)
            else:
                _check_string(path, value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                # Keys are not named in the path: they are caller text.
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_string(path, key)
                    if isinstance(item, Message):
                        _check_message(item, f"{path}.")
                    elif isinstance(item, str):
                        _check_string(path, item)
            elif fd.is_repeated:
                for index, item in enumerate(value):
                    _check_message(item, f"{path}[{index}].")
            else:
                _check_message(value, f"{path}.")


def _check_string(path: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(path, "must not contain NUL (\\0) characters", reason="NUL_CHARACTER")


def _check_timestamp(message: Timestamp, path: str) -> None:
    seconds, nanos = message.seconds, message.nanos
    if not (MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos <= _MAX_NANOS):
        raise InvalidArgument(
            path,
            "must be a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z",
            reason="TIMESTAMP_OUT_OF_RANGE",
        )


def _check_duration(message: Duration, path: str) -> None:
    seconds, nanos = message.seconds, message.nanos
    if (
        abs(seconds) > MAX_DURATION_SECONDS
        or abs(nanos) > _MAX_NANOS
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        raise InvalidArgument(
            path,
            "must be a duration of at most 10,000 years (315,576,000,000 s) either way,"
            " with seconds and nanos of the same sign",
            reason="DURATION_OUT_OF_RANGE",
        )
