"""Dynamic-credential statement templates: placeholders, parsing, limits and rendering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevvo.runtime import credential_templates as templates
from sevvo.runtime.errors import InvalidArgument

CREATE = "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
GRANT = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}"

# (id, one creation statement, fragment of the rule it breaks)
BAD_STATEMENTS: list[tuple[str, str, str]] = [
    ("empty", "", "must not be empty"),
    ("blank", "  \n\t", "must not be empty"),
    ("unknown-placeholder", "CREATE ROLE {{name}} PASSWORD {{pass}}", '"{{pass}}"'),
    ("spaced-placeholder", "CREATE ROLE {{ name }}", "unknown placeholder"),
    ("upper-placeholder", "CREATE ROLE {{NAME}}", "unknown placeholder"),
    ("unterminated", "CREATE ROLE {{name}", "unterminated"),
    ("stray-close", "CREATE ROLE {{name}} }}", "unterminated"),
    ("double-quoted-name", 'CREATE ROLE "{{name}}"', "quotes around"),
    ("single-quoted-password", "ALTER ROLE {{name}} PASSWORD '{{password}}'", "quotes around"),
    ("dollar-quoted", "ALTER ROLE {{name}} VALID UNTIL $${{expiration}}$$", "quotes around"),
    ("inside-string", "COMMENT ON ROLE {{name}} IS 'for {{name}} only'", "inside a string"),
    ("inside-comment", "CREATE ROLE {{name}} -- {{password}}", "inside a string"),
    ("inside-dollar-body", "DO $$ BEGIN PERFORM {{password}}; END $$", "inside a string"),
    ("syntax-error", "CREATE ROLL {{name}}", "not valid SQL"),
    ("two-statements", "CREATE ROLE {{name}}; GRANT r TO {{name}}", "exactly one"),
    ("comment-only", "-- nothing", "exactly one"),
    ("begin", "BEGIN", "transactions"),
    ("commit", "COMMIT", "transactions"),
    ("nul", "CREATE ROLE {{name}}\x00", "NUL"),
    ("control", "CREATE ROLE {{name}}\x1b", "control"),
    ("too-long", "CREATE ROLE {{name}} " + "-" * 4096, "4096 bytes"),
    ("surrogate", "CREATE ROLE {{name}} \ud800", "Unicode"),
]


@pytest.mark.parametrize(
    ("statement", "rule"),
    [case[1:] for case in BAD_STATEMENTS],
    ids=[case[0] for case in BAD_STATEMENTS],
)
def test_bad_statement_is_rejected_naming_its_index(statement: str, rule: str) -> None:
    """Each broken template is InvalidArgument on its own index with the rule in the message."""
    with pytest.raises(InvalidArgument) as caught:
        templates.validate_templates([CREATE, statement], [], field_prefix="dynamic")
    assert caught.value.field == "dynamic.creation_statements[1]"
    assert rule in caught.value.description


@pytest.mark.parametrize(
    ("statement", "rule"),
    [case[1:] for case in BAD_STATEMENTS],
    ids=[case[0] for case in BAD_STATEMENTS],
)
def test_revocation_statements_follow_the_same_rules(statement: str, rule: str) -> None:
    """Revocation templates are checked statement by statement like creation ones."""
    with pytest.raises(InvalidArgument) as caught:
        templates.validate_templates([CREATE], [statement], field_prefix="p")
    assert caught.value.field == "p.revocation_statements[0]"
    assert rule in caught.value.description


# (id, creation, revocation, failing field, fragment of the rule)
BAD_LISTS: list[tuple[str, list[str], list[str], str, str]] = [
    ("creation-empty", [], [], "x.creation_statements", "at least one"),
    ("creation-without-name", ["CREATE ROLE fixed"], [], "x.creation_statements", "{{name}}"),
    ("creation-over-20", [GRANT] * 21, [], "x.creation_statements", "at most 20"),
    ("revocation-over-20", [CREATE], ["DROP ROLE {{name}}"] * 21, "x.revocation_statements", "20"),
]


@pytest.mark.parametrize(
    ("creation", "revocation", "field", "rule"),
    [case[1:] for case in BAD_LISTS],
    ids=[case[0] for case in BAD_LISTS],
)
def test_list_rules(creation: list[str], revocation: list[str], field: str, rule: str) -> None:
    """Whole-list rules name the list: at most 20 statements; creation must use {{name}}."""
    with pytest.raises(InvalidArgument) as caught:
        templates.validate_templates(creation, revocation, field_prefix="x")
    assert caught.value.field == field
    assert rule in caught.value.description


@pytest.mark.parametrize(
    "creation",
    [
        [CREATE],
        [CREATE, GRANT],
        [CREATE.lower() + ";"],
        ["CREATE ROLE {{name}}\nLOGIN\tPASSWORD {{password}}"],
        ["ALTER ROLE {{name}} SET search_path = 'é', public", GRANT],
        [GRANT] * 19 + [CREATE],
        ["CREATE ROLE {{name}} " + "-" * (4096 - 21 - len("\n")) + "\n"],
    ],
    ids=["default-shape", "with-grant", "lower-semicolon", "whitespace", "non-ascii", "20", "4kb"],
)
def test_valid_templates_pass(creation: list[str]) -> None:
    """Well-formed templates, up to the limits, are accepted."""
    templates.validate_templates(creation, ["DROP ROLE IF EXISTS {{name}}"], field_prefix="d")


def test_default_creation_quotes_the_group_and_validates() -> None:
    """The default statement puts the lease role in the group, quoting the group's name."""
    statements = templates.default_creation('odd "group"')
    assert statements == [
        "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
        ' CONNECTION LIMIT 5 IN ROLE "odd ""group"""'
    ]
    templates.validate_templates(statements, templates.DEFAULT_REVOCATION, field_prefix="d")


@pytest.mark.parametrize(
    ("group", "rule"),
    [
        ("", "required"),
        ("  ", "required"),
        ("a" * 64, "63 bytes"),
        ("é" * 32, "63 bytes"),
        ("bad\nname", "control"),
        ("x{{password}}", "{{"),
    ],
)
def test_group_role_rules(group: str, rule: str) -> None:
    """A group role must be a usable Postgres name that cannot smuggle in a placeholder."""
    problem = templates.group_role_problem(group)
    assert problem is not None
    assert rule in problem


def test_render_substitutes_once_and_never_inside_values() -> None:
    """Values are inserted as given, and a placeholder inside a value is left alone."""
    rendered = templates.render(
        CREATE + " IN ROLE g",
        name_sql='"v_1"',
        password_sql="'{{name}}'",
        expiration_sql="'2030-01-01T00:00:00Z'",
    )
    assert rendered == (
        "CREATE ROLE \"v_1\" LOGIN PASSWORD '{{name}}' VALID UNTIL '2030-01-01T00:00:00Z' IN ROLE g"
    )


def test_render_refuses_an_unknown_placeholder() -> None:
    """Rendering an unvalidated template with an unknown placeholder fails loudly."""
    with pytest.raises(ValueError, match="unknown placeholder"):
        templates.render("CREATE ROLE {{who}}", name_sql="a", password_sql="b", expiration_sql="c")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_crashes(text: str) -> None:
    """Any text is either accepted or refused with InvalidArgument, never another error."""
    field = ""
    try:
        templates.validate_templates([text], [text], field_prefix="f")
    except InvalidArgument as error:
        field = error.field
    assert field == "" or field.startswith("f.")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["{{name}}", "{{password}}", "{{expiration}}", "{{", "}}", "'", '"', "$$", "--", " "]
        )
        | st.text(alphabet="CREATEROLEabc ;(),'\"{}$-\n", max_size=8),
        max_size=25,
    )
)
def test_placeholder_soup_never_crashes(parts: list[str]) -> None:
    """Text dense with braces, quotes and placeholders is judged without a crash."""
    text = "CREATE ROLE " + "".join(parts)
    problem = templates.statement_problem(text)
    assert problem is None or isinstance(problem, str)
