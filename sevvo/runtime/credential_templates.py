"""Statement templates of dynamic credentials: the one set of rules both sides apply.

The connections service validates templates when a dynamic connection is saved; the agent
renders them with values it has quoted itself. A template is one SQL statement that may hold
three placeholders, each replaced by an already-quoted SQL fragment:

- ``{{name}}`` — the new role's name, as a quoted identifier;
- ``{{password}}`` — its password, as a string literal;
- ``{{expiration}}`` — when it stops working, as a timestamp string literal.

Placeholders are substituted quoted, so a template must not put quotes around them. See
docs/design.md, "Dynamic credentials".
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence

from pglast import parser

from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.validation import has_control_characters

PLACEHOLDERS = ("name", "password", "expiration")
MAX_STATEMENTS = 20
MAX_STATEMENT_BYTES = 4096
DEFAULT_GROUP_ROLE = "sevvo_readers"
MAX_ROLE_NAME_BYTES = 63

DEFAULT_REVOCATION: list[str] = []
"""No revocation statements: the agent uses its built-in staged revoke instead.

That revoke ends the role's sessions, reassigns and drops what it owns, then drops the role
(``DROP ROLE IF EXISTS``), so it works whatever the creation statements granted.
"""

# Anything between double braces is a placeholder attempt; only the three names are allowed.
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
# A quote right against a placeholder: the value would be quoted twice.
_QUOTED_PLACEHOLDER = re.compile(r"""['"$]\{\{[a-z]+\}\}|\{\{[a-z]+\}\}['"$]""")
# Control characters other than tab, newline and carriage return; NUL would cut the text
# short in libpq and in the parser alike.
_BAD_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_SHOWN = 40
_MAX_PARSER_MESSAGE = 160

# Stand-ins with the same SQL shape as the real values, for checking that a template parses,
# and the token each must become: a placeholder stands for one whole SQL value.
_VALIDATION_VALUES = {"name": '"x"', "password": "'x'", "expiration": "'x'"}
_TOKEN_NAMES = {"name": "IDENT", "password": "SCONST", "expiration": "SCONST"}


class TemplateError(InvalidArgument, ValueError):
    """A creation or revocation template is unusable; ``field`` names the statement.

    Also a ValueError: to the agent's mint and revoke it is a bad argument like any other.
    """

    default_reason = "INVALID_CREDENTIAL_TEMPLATE"


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def group_role_problem(group_role: str) -> str | None:
    """What is wrong with a group role name (None if nothing); never quotes the name."""
    if not group_role.strip():
        return "is required"
    # Checked before the byte length: lone surrogates (category Cs) cannot be encoded.
    if has_control_characters(group_role):
        return "must not contain control or invisible format characters"
    if len(group_role.encode("utf-8")) > MAX_ROLE_NAME_BYTES:
        return f"must be at most {MAX_ROLE_NAME_BYTES} bytes in UTF-8 (the Postgres name limit)"
    if "{{" in group_role or "}}" in group_role:
        return "must not contain {{ or }}"
    return None


def default_creation(group_role: str) -> list[str]:
    """The creation statements used when a connection gives none: a login role in the group.

    ``group_role`` should have passed ``group_role_problem``; it is quoted here.
    """
    return [
        "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
        f" CONNECTION LIMIT 5 IN ROLE {quote_identifier(group_role)}"
    ]


def validate_templates(
    creation: Sequence[str], revocation: Sequence[str], *, field_prefix: str = ""
) -> None:
    """Checks creation and revocation templates; raises TemplateError on the first problem.

    The connections service calls this when a dynamic connection is saved and the agent
    before it mints, so a template that was saved can always be used. Fields are named
    ``f"{field_prefix}.creation_statements[i]"`` (without the prefix when it is empty), or
    the list itself for rules about the whole list. Rules: at most 20 statements per list,
    each non-empty, at most 4 KB in UTF-8, exactly one SQL statement that parses once
    placeholders are substituted, no transaction control (the agent owns the transaction),
    only the three known placeholders, never quoted and each standing where one SQL value
    goes; creation holds at least one statement and uses ``{{name}}``; revocation may be
    empty (the agent's built-in cleanup is then used).
    """
    _check_list(creation, _field(field_prefix, "creation_statements"))
    _check_list(revocation, _field(field_prefix, "revocation_statements"))
    field = _field(field_prefix, "creation_statements")
    if not creation:
        raise TemplateError(field, "must hold at least one statement")
    if not any("{{name}}" in statement for statement in creation):
        raise TemplateError(
            field, "must use {{name}} so the statements create the lease's own role"
        )


def validate_revocation(revocation: Sequence[str], *, field_prefix: str = "") -> None:
    """Checks revocation templates alone (the agent's revoke has no creation list)."""
    _check_list(revocation, _field(field_prefix, "revocation_statements"))


def placeholders(statements: Sequence[str]) -> frozenset[str]:
    """The placeholders ``statements`` use, so a caller computes only the values needed."""
    return frozenset(
        match.group(1) for statement in statements for match in _PLACEHOLDER.finditer(statement)
    )


def _check_list(statements: Sequence[str], field: str) -> None:
    if isinstance(statements, str):
        raise TemplateError(field, "must be a list of statements, not one string")
    # The agent checks on every mint and revoke; a connection's templates rarely change, so
    # each distinct list is parsed once per process.
    _check_list_once(tuple(statements), field)


@functools.lru_cache(maxsize=128)
def _check_list_once(statements: tuple[str, ...], field: str) -> None:
    if len(statements) > MAX_STATEMENTS:
        raise TemplateError(field, f"must hold at most {MAX_STATEMENTS} statements")
    for index, statement in enumerate(statements):
        problem = statement_problem(statement)
        if problem is not None:
            raise TemplateError(f"{field}[{index}]", problem)


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def statement_problem(template: str) -> str | None:
    """What is wrong with one template (None if nothing). Never raises on any text."""
    if not template.strip():
        return "must not be empty"
    try:
        size = len(template.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode text (no unpaired surrogates)"
    if size > MAX_STATEMENT_BYTES:
        return f"must be at most {MAX_STATEMENT_BYTES} bytes in UTF-8"
    if _BAD_CHARACTER.search(template):
        return "must not contain NUL or control characters other than tab and newline"
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) not in PLACEHOLDERS:
            shown = _shorten(match.group(0), _MAX_SHOWN)
            return (
                f"has an unknown placeholder {json.dumps(shown)}; "
                "allowed: {{name}}, {{password}}, {{expiration}}"
            )
    remainder = _PLACEHOLDER.sub("", template)
    if "{{" in remainder or "}}" in remainder:
        return "has an unterminated placeholder: {{ without }} or the reverse"
    if _QUOTED_PLACEHOLDER.search(template):
        return "must not put quotes around a placeholder; values are substituted already quoted"
    text, spots = _substitute_tracked(template)
    return _sql_problem(text) or _placement_problem(text, spots)


def segments(template: str) -> list[tuple[str, str | None]]:
    """``template`` cut into (text, None) runs and ("", placeholder) slots, in order.

    The agent builds its ``psycopg.sql.Composed`` from these, quoting each value with the
    live connection; text between placeholders is kept verbatim. Raises ValueError on a
    placeholder the rules do not allow; templates that passed ``validate_templates`` never
    hold one.
    """
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) not in PLACEHOLDERS:
            raise ValueError("template holds an unknown placeholder")
        pieces += [(template[position : match.start()], None), ("", match.group(1))]
        position = match.end()
    pieces.append((template[position:], None))
    return pieces


def render(template: str, *, name_sql: str, password_sql: str, expiration_sql: str) -> str:
    """Replaces each placeholder with its already-quoted SQL fragment, in one pass.

    Pure substitution: values are not quoted here and are never searched for placeholders,
    so a password holding ``{{name}}`` stays a password. Raises ValueError as ``segments``.
    """
    values = {"name": name_sql, "password": password_sql, "expiration": expiration_sql}
    return "".join(text if key is None else values[key] for text, key in segments(template))


def _substitute_tracked(template: str) -> tuple[str, list[tuple[int, int, str]]]:
    """The template with stand-in values, and where each landed (first, last character)."""
    parts: list[str] = []
    spots: list[tuple[int, int, str]] = []
    length, last = 0, 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(template[last : match.start()])
        length += match.start() - last
        value = _VALIDATION_VALUES[match.group(1)]
        spots.append((length, length + len(value) - 1, match.group(1)))
        parts.append(value)
        length += len(value)
        last = match.end()
    parts.append(template[last:])
    return "".join(parts), spots


def _sql_problem(text: str) -> str | None:
    try:
        tree = json.loads(parser.parse_sql_json(text))
    except parser.ParseError as error:
        detail = str(error.args[0]) if error.args else "syntax error"
        return f"is not valid SQL: {_shorten(detail, _MAX_PARSER_MESSAGE)}"
    except RecursionError:
        return "nests too deeply to check"
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        return f"must hold exactly one SQL statement, not {len(statements)}"
    if "TransactionStmt" in statements[0].get("stmt", {}):
        return "must not begin or end transactions; the agent runs the statements in its own"
    return None


def _placement_problem(text: str, spots: list[tuple[int, int, str]]) -> str | None:
    """A placeholder inside a string, a quoted name or a comment would not be one SQL value."""
    if not spots:
        return None
    try:
        tokens = {(token.start, token.end): token.name for token in parser.scan(text)}
    except parser.ParseError:  # unreachable after a successful parse; refuse rather than guess
        return "could not be scanned as SQL"
    for first, last, key in spots:
        if tokens.get((first, last)) != _TOKEN_NAMES[key]:
            return (
                f"uses {{{{{key}}}}} inside a string, quoted name or comment; "
                "a placeholder must stand on its own where a value goes"
            )
    return None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
