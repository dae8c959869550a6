"""Preview-settings rules of a create request, driven through ``create_arguments`` (no server).

tests/test_connections_preview.py keeps two of these cases against the real TLS server and
database, proving the wiring: INVALID_ARGUMENT naming the field, nothing stored.
"""

from __future__ import annotations

import pytest

from services.connections.postgres_target import PostgresTarget
from services.connections.servicer import create_arguments
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import InvalidArgument

SECRET = "s3cret-Pa55word-canary"

# (settings, the field named), by case id; "space" and "infinite" also go over the wire.
INVALID_SETTINGS: dict[str, tuple[pb.PreviewSettings, str]] = {
    "space": (pb.PreviewSettings(allowed_functions=["two words"]), "allowed_functions"),
    "quotes": (pb.PreviewSettings(allowed_functions=['"quoted"']), "allowed_functions"),
    "three-parts": (pb.PreviewSettings(allowed_functions=["a.b.c"]), "allowed_functions"),
    "too-long": (pb.PreviewSettings(allowed_functions=["x" * 128]), "allowed_functions"),
    "too-many": (
        pb.PreviewSettings(allowed_functions=[f"f{n}" for n in range(101)]),
        "allowed_functions",
    ),
    "negative": (pb.PreviewSettings(max_plan_cost=-1), "max_plan_cost"),
    "infinite": (pb.PreviewSettings(max_plan_cost=float("inf")), "max_plan_cost"),
}


def _request(settings: pb.PreviewSettings) -> pb.CreateConnectionRequest:
    return pb.CreateConnectionRequest(
        display_name="warehouse",
        fields=pb.PostgresFields(
            host="db.acme.internal",
            database="analytics",
            username="reader",
            password=SECRET,
            ssl_mode=pb.SSL_MODE_REQUIRE,
            preview=settings,
        ),
    )


@pytest.mark.parametrize(
    ("settings", "field"), list(INVALID_SETTINGS.values()), ids=list(INVALID_SETTINGS)
)
def test_invalid_preview_settings_name_the_field(settings: pb.PreviewSettings, field: str) -> None:
    """Malformed settings are InvalidArgument on fields.preview.<field>, echoing no password."""
    with pytest.raises(InvalidArgument) as caught:
        create_arguments(_request(settings))
    assert caught.value.field == f"fields.preview.{field}"
    assert SECRET not in str(caught.value)


def test_the_limits_themselves_are_accepted() -> None:
    """100 functions of 63 characters (schema-qualified or not) and a zero budget are valid."""
    settings = pb.PreviewSettings(
        allowed_functions=["f" * 63, "public." + "g" * 56] + [f"f{n}" for n in range(98)],
        max_plan_cost=0,
    )
    arguments = create_arguments(_request(settings))
    assert isinstance(arguments.target, PostgresTarget)
    assert arguments.target.preview is not None
