"""Save and mint agree on templates: what connections stores, the agent can mint and revoke
with, and what the agent would refuse, connections refuses to store (issue 14).

Connections' save path (services.connections.dynamic.dynamic_settings) and the agent's mint
and revoke paths (agent.dynamic_credentials) share sevvo.runtime.credential_templates; these
properties hold that line should either side grow a rule of its own.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from agent import dynamic_credentials as dc
from services.connections.dynamic import dynamic_settings
from sevvo.runtime import credential_templates as templates
from sevvo.runtime.errors import InvalidArgument

_PIECES = st.sampled_from(
    [
        "CREATE ROLE {{name}} ",
        "WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
        "GRANT sevvo_readers TO {{name}}",
        "DROP ROLE IF EXISTS {{name}}",
        "REVOKE ALL ON t FROM {{name}}",
        "COMMENT ON ROLE {{name}} IS {{expiration}}",
        "{{who}}",
        "{{",
        "}}",
        "'",
        '"',
        "$$",
        "--",
        ";",
        " ",
        "\n",
    ]
)
_VALID = st.sampled_from(
    [
        "CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
        "CREATE ROLE {{name}} LOGIN PASSWORD {{password}}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
        "GRANT sevvo_readers TO {{name}}",
        "COMMENT ON ROLE {{name}} IS {{expiration}}",
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {{name}}",
        "DROP ROLE IF EXISTS {{name}}",
    ]
)
_JUNK = st.lists(_PIECES | st.text(max_size=6), min_size=1, max_size=12).map("".join)
# Whole valid statements, valid ones with junk spliced in, and junk: both outcomes of the save
# path come up often.
_STATEMENT = _VALID | st.tuples(_VALID, _JUNK).map("".join) | _JUNK
_STATEMENTS = st.lists(_STATEMENT, max_size=3)

_VALUES = {
    "name": sql.Identifier("sevvo_dyn_check_0123456789"),
    "password": sql.Literal("not-a-real-password"),
    "expiration": sql.Literal("2030-01-01 00:00:00+00"),
}


def _saved(
    creation: list[str], revocation: list[str], group: str = ""
) -> tuple[list[str], list[str]] | None:
    """What the save path stores for these templates, or None when it refuses them."""
    try:
        stored = dynamic_settings(
            default_ttl_seconds=0,
            max_ttl_seconds=0,
            creation_statements=creation,
            revocation_statements=revocation,
            group_role=group,
        )
    except InvalidArgument:
        return None
    return list(stored.creation_statements), list(stored.revocation_statements)


def _agent_accepts(creation: list[str], revocation: list[str]) -> bool:
    """Whether the agent's mint and revoke would take these templates."""
    try:
        dc.validate_templates(creation, revocation)
        templates.validate_revocation(revocation or list(dc.DEFAULT_REVOCATION))
    except ValueError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(_STATEMENTS, _STATEMENTS)
def test_what_save_stores_the_agent_mints_and_revokes_with(
    creation: list[str], revocation: list[str]
) -> None:
    """Every stored template passes the agent's checks and renders with every placeholder
    filled; every template the agent would refuse was refused at save."""
    stored = _saved(creation, revocation)
    event("refused at save" if stored is None else "stored")
    if stored is None:
        # The reverse: a template refused at save is one the agent refuses too, unless the
        # save path refused it for its empty creation list's default (never the case here:
        # an empty list is replaced, not refused).
        assert not creation or not _agent_accepts(creation, revocation)
        return
    stored_creation, stored_revocation = stored
    assert _agent_accepts(stored_creation, stored_revocation)
    for template in [*stored_creation, *stored_revocation]:
        rendered = sql.Composed(
            [
                sql.SQL(text) if key is None else _VALUES[key]
                for text, key in templates.segments(template)
            ]
        )
        assert "{{" not in rendered.as_string(None)


@pytest.mark.parametrize("group", ["sevvo_readers", "analytics", "Reporting Team"])
def test_the_default_creation_of_any_accepted_group_mints(group: str) -> None:
    """The default statements save fills in for a group are the agent's own default for that
    group, and the agent mints with them."""
    stored = _saved([], [], group)
    assert stored is not None
    assert stored == (list(dc.default_creation(group)), [])
    assert _agent_accepts(*stored)
