"""Rules of named connection roles, without a server (fast): settings, update masks, the sealed
payload's roles section and the command line's edit flags.

tests/test_connection_roles.py drives the same rules through the real TLS server and
database once per kind, proving the wiring.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.commands.connection_roles import RoleEdit
from cli.errors import CliError
from services.connections.dynamic import dynamic_settings, role_update_mask, updated_settings
from services.connections.postgres_target import PostgresTarget, from_dynamic
from services.connections.roles import RoleSettingsInput
from sevvo.runtime import credential_templates
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.sealing import CredentialsUnreadable

SECRET = "privileged-Pa55-roles-canary"
CREATE = "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"


def _target() -> PostgresTarget:
    return from_dynamic(
        host="db.acme.internal",
        port=None,
        database="shop",
        ssl_mode="require",
        privileged_username="sevvo_admin",
        privileged_password=SECRET,
        default_ttl_seconds=0,
        max_ttl_seconds=0,
        creation_statements=[],
        revocation_statements=[],
        group_role="",
    )


# (settings, failing field, fragment of the rule)
INVALID_SETTINGS: list[tuple[str, RoleSettingsInput, str, str]] = [
    ("ttl-59", RoleSettingsInput(default_ttl_seconds=59), "settings.default_ttl_seconds", "60"),
    ("max-too-long", RoleSettingsInput(max_ttl_seconds=604801), "settings.max_ttl_seconds", "60"),
    (
        "default-over-max",
        RoleSettingsInput(default_ttl_seconds=7200, max_ttl_seconds=3600),
        "settings.default_ttl_seconds",
        "must not exceed",
    ),
    (
        "creation-without-name",
        RoleSettingsInput(creation_statements=("SELECT 1",)),
        "settings.creation_statements",
        "{{name}}",
    ),
    (
        "creation-not-sql",
        RoleSettingsInput(creation_statements=(CREATE, "GRANT nonsense nonsense {{name}}")),
        "settings.creation_statements[1]",
        "not valid sql",
    ),
    (
        "revocation-two-statements",
        RoleSettingsInput(revocation_statements=("DROP ROLE {{name}}; SELECT 1",)),
        "settings.revocation_statements[0]",
        "exactly one",
    ),
    (
        "quoted-placeholder",
        RoleSettingsInput(creation_statements=(CREATE.replace("{{name}}", "'{{name}}'"),)),
        "settings.creation_statements[0]",
        "quotes",
    ),
    ("group-blank", RoleSettingsInput(group_role="  "), "settings.group_role", "required"),
    (
        "too-many-statements",
        RoleSettingsInput(creation_statements=(CREATE,) * 21),
        "settings.creation_statements",
        "at most 20",
    ),
]


@pytest.mark.parametrize(
    ("settings", "field", "rule"),
    [case[1:] for case in INVALID_SETTINGS],
    ids=[case[0] for case in INVALID_SETTINGS],
)
def test_invalid_role_settings_name_the_field(
    settings: RoleSettingsInput, field: str, rule: str
) -> None:
    """Each broken rule is InvalidArgument naming the request's field and stating the rule."""
    with pytest.raises(InvalidArgument) as caught:
        settings.validated()
    assert caught.value.field == field
    assert rule.lower() in caught.value.description.lower()


def test_empty_role_settings_get_the_defaults_expanded() -> None:
    """0 TTLs and no statements mean 1 h / 8 h and the default CREATE ROLE for the group."""
    settings = RoleSettingsInput(group_role="shop_readers").validated()
    assert (settings.default_ttl_seconds, settings.max_ttl_seconds) == (3600, 28800)
    assert list(settings.creation_statements) == credential_templates.default_creation(
        "shop_readers"
    )
    assert settings.revocation_statements == ()


@pytest.mark.parametrize(
    ("mask", "fragment"),
    [([], "at least one"), (["default_ttl_seconds", "name"], "cannot update name")],
    ids=["empty", "unknown"],
)
def test_role_update_mask_must_name_known_settings(mask: list[str], fragment: str) -> None:
    """An empty mask or one naming anything but a setting is refused on update_mask."""
    with pytest.raises(InvalidArgument) as caught:
        role_update_mask(mask)
    assert caught.value.field == "update_mask"
    assert fragment in caught.value.description


def _update(current: Any, paths: set[str], **values: Any) -> Any:
    fields: dict[str, Any] = {
        "default_ttl_seconds": 0,
        "max_ttl_seconds": 0,
        "creation_statements": (),
        "revocation_statements": (),
        "group_role": "",
    }
    fields.update(values)
    return updated_settings(current, frozenset(paths), **fields)


def test_update_changes_only_the_masked_settings() -> None:
    """Unmasked settings keep their values, whatever the request carries for them."""
    current = dynamic_settings(
        default_ttl_seconds=600,
        max_ttl_seconds=1200,
        creation_statements=[CREATE],
        revocation_statements=["DROP OWNED BY {{name}}"],
        group_role="g",
    )
    after = _update(current, {"max_ttl_seconds"}, max_ttl_seconds=3600, group_role="other")
    assert after == replace(current, max_ttl_seconds=3600)


def test_update_is_validated_as_a_whole() -> None:
    """A max TTL below the kept default TTL is refused, naming the default TTL's field."""
    current = dynamic_settings(
        default_ttl_seconds=600,
        max_ttl_seconds=1200,
        creation_statements=[],
        revocation_statements=[],
        group_role="g",
    )
    with pytest.raises(InvalidArgument) as caught:
        _update(current, {"max_ttl_seconds"}, max_ttl_seconds=300)
    assert caught.value.field == "settings.default_ttl_seconds"


def test_a_new_group_moves_default_creation_statements_but_not_written_ones() -> None:
    """Group alone: default statements follow it; statements an admin wrote stay."""
    defaulted = dynamic_settings(
        default_ttl_seconds=0,
        max_ttl_seconds=0,
        creation_statements=[],
        revocation_statements=[],
        group_role="old_group",
    )
    moved = _update(defaulted, {"group_role"}, group_role="new_group")
    assert list(moved.creation_statements) == credential_templates.default_creation("new_group")
    written = replace(defaulted, creation_statements=(CREATE,))
    kept = _update(written, {"group_role"}, group_role="new_group")
    assert kept.creation_statements == (CREATE,)
    assert kept.group_role == "new_group"


def test_roles_ride_in_the_sealed_payload_and_come_back() -> None:
    """Named roles are written beside "dynamic" (the default role) and read back as they were."""
    target = _target()
    etl = RoleSettingsInput(creation_statements=(CREATE,), default_ttl_seconds=300).validated()
    readonly = RoleSettingsInput(group_role="readers").validated()
    with_roles = target.with_role("readonly", readonly).with_role("etl", etl)
    assert [name for name, _ in with_roles.roles] == ["etl", "readonly"]
    back = PostgresTarget.from_json(with_roles.to_json())
    assert back == with_roles
    assert back.role_settings("etl") == etl
    assert back.role_settings("default") == target.dynamic
    assert back.role_settings("missing") is None
    assert back.without_role("etl").role_settings("etl") is None
    assert SECRET not in repr(with_roles)
    assert "etl" in repr(with_roles)


def test_payload_of_an_older_connection_has_no_roles_section() -> None:
    """A connection saved before named roles reads back with only its default role."""
    target = _target()
    assert "roles" not in json.loads(target.to_json())
    assert PostgresTarget.from_json(target.to_json()).roles == ()


def test_the_default_role_is_dynamic_and_cannot_be_removed() -> None:
    """with_role("default") replaces the single set; without_role("default") is a bug."""
    target = _target()
    new_default = RoleSettingsInput(default_ttl_seconds=120).validated()
    assert target.with_role("default", new_default).dynamic == new_default
    with pytest.raises(ValueError, match="default"):
        target.without_role("default")


@pytest.mark.parametrize(
    "roles",
    [
        {"default": None},
        {"Bad-Name": None},
        [],
    ],
    ids=["default-in-roles", "bad-name", "not-an-object"],
)
def test_a_malformed_roles_section_is_unreadable_not_trusted(roles: Any) -> None:
    """A payload whose roles section breaks a rule is refused as malformed stored data."""
    payload = json.loads(_target().to_json())
    settings = payload["dynamic"]
    payload["roles"] = {name: settings for name in roles} if isinstance(roles, dict) else roles
    with pytest.raises(CredentialsUnreadable):
        PostgresTarget.from_json(json.dumps(payload).encode())


def test_roles_without_dynamic_settings_are_unreadable() -> None:
    """Only a dynamic connection's payload may hold roles."""
    payload = json.loads(_target().to_json())
    payload["roles"] = {"etl": payload.pop("dynamic")}
    with pytest.raises(CredentialsUnreadable):
        PostgresTarget.from_json(json.dumps(payload).encode())


# The command line's edit flags.


def test_role_edit_masks_exactly_the_flags_given() -> None:
    """Flags become mask paths; --default-creation sends an empty list under its path."""
    edit = RoleEdit(max_ttl="2h", default_creation=True)
    request = edit.request("3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10", "etl")
    assert list(request.update_mask.paths) == ["max_ttl_seconds", "creation_statements"]
    assert request.settings.max_ttl_seconds == 7200
    assert list(request.settings.creation_statements) == []
    assert edit.changes_statements
    assert not RoleEdit(default_ttl="5m").changes_statements


@pytest.mark.parametrize(
    "edit",
    [
        {},
        {"creation": ["SELECT 1"], "default_creation": True},
        {"revocation": ["SELECT 1"], "default_revocation": True},
    ],
    ids=["nothing", "creation-twice", "revocation-twice"],
)
def test_role_edit_refuses_nothing_or_contradictions(edit: dict[str, Any]) -> None:
    """Nothing to change, or a list and its reset together, is a usage error (exit 2)."""
    with pytest.raises(CliError) as caught:
        RoleEdit(**edit)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("command", ["list", "get", "create", "update", "delete"])
def test_every_roles_command_has_help_with_an_example(command: str) -> None:
    """``sevvo connections roles COMMAND --help`` works without a session, with an example."""
    result = CliRunner().invoke(app, ["connections", "roles", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: sevvo connections roles" in result.stdout
