"""The user's guide as the demo's only source of database SQL, so the two cannot drift apart.

docs/user-guide.md keeps the SQL a DBA runs in fenced ``sql`` blocks under two stable
headings; the demo reads them from the file and runs them statement by statement. Passwords
are not in the guide at all: it tells the DBA to set them with psql's ``\\password``, which
the demo reproduces with :func:`set_password`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pglast
import psycopg
from psycopg import sql

GUIDE: Final = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"

READER_ROLE_HEADING: Final = "Create a least-privilege reader role"
PRIVILEGED_ROLE_HEADING: Final = "Create a privileged role for dynamic credentials"
LOADER_ROLE_HEADING: Final = "Create a loader role for a destination"

# The names the guide's SQL uses; the demo's sample database and roles are called the same.
DATABASE: Final = "shop"
READER: Final = "sevvo_reader"
GROUP: Final = "sevvo_readers"
PRIVILEGED: Final = "sevvo_minter"
LOADER: Final = "sevvo_loader"

_HEADING: Final = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE: Final = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")


class GuideError(ValueError):
    """The guide lacks a heading or SQL block the demo depends on."""


@dataclass(frozen=True)
class GuideSection:
    """The SQL statements of one section, in the order the guide gives them."""

    heading: str
    statements: tuple[str, ...]


def sql_blocks(markdown: str, heading: str) -> list[str]:
    """The fenced ``sql`` blocks under ``heading``, up to the next heading of its level or above.

    Lines inside fences are never taken for headings: a ``# comment`` in a shell block
    must not end a section.
    """
    blocks: list[str] = []
    level: int | None = None
    fence: str | None = None
    taking = False
    current: list[str] = []
    for line in markdown.splitlines():
        if fence is not None:
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                if taking and level is not None:
                    blocks.append("\n".join(current))
                fence, taking = None, False
            elif taking:
                current.append(line)
            continue
        opened = _FENCE.match(line.strip())
        if opened is not None:
            fence = opened.group(1)
            taking = level is not None and opened.group(2).lower() == "sql"
            current = []
            continue
        found = _HEADING.match(line)
        if found is None:
            continue
        depth, title = len(found.group(1)), found.group(2)
        if level is not None and depth <= level:
            break
        if level is None and title == heading:
            level = depth
    if level is None:
        raise GuideError(f"the guide has no heading {heading!r}")
    if not blocks:
        raise GuideError(f"the guide has no sql block under {heading!r}")
    return blocks


def section(markdown: str, heading: str) -> GuideSection:
    """The statements of every ``sql`` block under ``heading``, split by the Postgres parser."""
    statements: list[str] = []
    for block in sql_blocks(markdown, heading):
        # pglast splits with the server's own grammar (and drops the comments), so a
        # semicolon inside a string or comment cannot cut a statement in two.
        statements.extend(str(s) for s in pglast.split(block, with_parser=True))
    return GuideSection(heading, tuple(statements))


def read_guide(path: Path = GUIDE) -> str:
    """The guide's text."""
    return path.read_text(encoding="utf-8")


def set_password(conn: psycopg.Connection[object], role: str, password: str) -> None:
    """What psql's ``\\password ROLE`` does: send a SCRAM verifier, never the password itself.

    The verifier is computed by libpq on this side, so the plaintext appears in no
    statement the server could log.
    """
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(verifier.decode())
        )
    )


__all__ = [
    "DATABASE",
    "GROUP",
    "GUIDE",
    "LOADER",
    "LOADER_ROLE_HEADING",
    "PRIVILEGED",
    "PRIVILEGED_ROLE_HEADING",
    "READER",
    "READER_ROLE_HEADING",
    "GuideError",
    "GuideSection",
    "read_guide",
    "section",
    "set_password",
    "sql_blocks",
]
