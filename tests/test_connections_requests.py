"""Create-request rules, driven through their seam without a server (fast): every rule a
CreateConnection request must meet is checked by ``create_arguments`` before any I/O.

tests/test_connections.py and tests/test_connections_dynamic.py keep one case of each kind
against the real TLS server and database, proving the wiring: INVALID_ARGUMENT naming the
field, nothing stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.connections.postgres_target import PostgresTarget
from services.connections.servicer import create_arguments
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import InvalidArgument
from tests.plugins.pki import ca_certificate_pem

SECRET = "s3cret-Pa55word-canary"
CREATE = "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
CA_PEM, CA_KEY = ca_certificate_pem("Example Root CA")


def _fields(**changes: Any) -> pb.PostgresFields:
    values: dict[str, Any] = {
        "host": "db.acme.internal",
        "database": "analytics",
        "username": "reader",
        "password": SECRET,
        "ssl_mode": pb.SSL_MODE_REQUIRE,
    }
    values.update(changes)
    return pb.PostgresFields(**values)


# (request, failing field, fragment of the rule), with their ids below.
INVALID_CREATE: list[tuple[pb.CreateConnectionRequest, str, str]] = [
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(host="")),
        "fields.host",
        "required",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(port=0)),
        "fields.port",
        "65535",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(port=70000)),
        "fields.port",
        "65535",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(ssl_mode=0)),
        "fields.ssl_mode",
        "require",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(database="")),
        "fields.database",
        "required",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(username="")),
        "fields.username",
        "required",
    ),
    (
        pb.CreateConnectionRequest(display_name="x", fields=_fields(password="")),
        "fields.password",
        "required",
    ),
    (
        pb.CreateConnectionRequest(display_name="x" * 101, fields=_fields()),
        "display_name",
        "100",
    ),
    (
        pb.CreateConnectionRequest(display_name="bad\x1bname", fields=_fields()),
        "display_name",
        "control",
    ),
    (pb.CreateConnectionRequest(display_name="", fields=_fields()), "display_name", "empty"),
    (pb.CreateConnectionRequest(display_name="x"), "credentials", "required"),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            dsn=pb.PostgresDsn(uri=f"postgresql://u:{SECRET}@h/db?sslmode=verify-full"),
        ),
        "dsn.ssl_root_cert",
        "required with SSL mode verify-full",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            dsn=pb.PostgresDsn(
                uri=f"postgresql://u:{SECRET}@h/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem"
            ),
        ),
        "dsn.uri",
        "PEM text in ssl_root_cert",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x", fields=_fields(ssl_mode=pb.SSL_MODE_VERIFY_CA)
        ),
        "fields.ssl_root_cert",
        "required with SSL mode verify-ca",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            fields=_fields(ssl_mode=pb.SSL_MODE_DISABLE, ssl_root_cert=CA_PEM),
        ),
        "fields.ssl_root_cert",
        "only with SSL mode verify-ca or verify-full",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            fields=_fields(ssl_mode=pb.SSL_MODE_VERIFY_FULL, ssl_root_cert="not a pem"),
        ),
        "fields.ssl_root_cert",
        "not PEM",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            fields=_fields(ssl_mode=pb.SSL_MODE_VERIFY_FULL, ssl_root_cert=CA_PEM + CA_KEY),
        ),
        "fields.ssl_root_cert",
        "private key",
    ),
    (
        pb.CreateConnectionRequest(
            display_name="x",
            dsn=pb.PostgresDsn(
                uri=f"postgresql://u:{SECRET}@h/db?sslmode=disable",
                ssl_mode=pb.SSL_MODE_REQUIRE,
            ),
        ),
        "dsn.ssl_mode",
        "conflict",
    ),
]
INVALID_CREATE_IDS = [
    "empty-host",
    "port-0",
    "port-70000",
    "no-ssl-mode",
    "no-database",
    "no-username",
    "no-password",
    "long-name",
    "control-char-name",
    "empty-name",
    "no-credentials",
    "dsn-verify-full-without-bundle",
    "dsn-sslrootcert-path",
    "verify-ca-without-bundle",
    "disable-with-bundle",
    "bundle-not-pem",
    "bundle-with-private-key",
    "dsn-conflict",
]


def _dyn(**changes: Any) -> pb.PostgresDynamic:
    values: dict[str, Any] = {
        "host": "db.acme.internal",
        "database": "analytics",
        "privileged_username": "sevvo_admin",
        "privileged_password": SECRET,
        "ssl_mode": pb.SSL_MODE_REQUIRE,
    }
    values.update(changes)
    return pb.PostgresDynamic(**values)


# (id, dynamic settings, failing field, fragment of the rule)
INVALID_DYNAMIC: list[tuple[str, pb.PostgresDynamic, str, str]] = [
    ("no-host", _dyn(host=""), "dynamic.host", "required"),
    ("port-0", _dyn(port=0), "dynamic.port", "65535"),
    ("no-database", _dyn(database=""), "dynamic.database", "required"),
    ("no-ssl-mode", _dyn(ssl_mode=0), "dynamic.ssl_mode", "require"),
    (
        "verify-full-without-bundle",
        _dyn(ssl_mode=pb.SSL_MODE_VERIFY_FULL),
        "dynamic.ssl_root_cert",
        "required",
    ),
    ("no-username", _dyn(privileged_username=""), "dynamic.privileged_username", "required"),
    (
        "long-username",
        _dyn(privileged_username="u" * 64),
        "dynamic.privileged_username",
        "63 bytes",
    ),
    ("no-password", _dyn(privileged_password=""), "dynamic.privileged_password", "required"),
    (
        "nul-password",
        _dyn(privileged_password=SECRET + "\x00"),
        "dynamic.privileged_password",
        "nul",
    ),
    ("ttl-59", _dyn(default_ttl_seconds=59), "dynamic.default_ttl_seconds", "between 60"),
    ("ttl-negative", _dyn(default_ttl_seconds=-5), "dynamic.default_ttl_seconds", "between"),
    ("ttl-86401", _dyn(default_ttl_seconds=86401), "dynamic.default_ttl_seconds", "86400"),
    ("max-ttl-59", _dyn(max_ttl_seconds=59), "dynamic.max_ttl_seconds", "between 60"),
    ("max-ttl-7d+1", _dyn(max_ttl_seconds=604801), "dynamic.max_ttl_seconds", "604800"),
    (
        "default-over-max",
        _dyn(default_ttl_seconds=7200, max_ttl_seconds=3600),
        "dynamic.default_ttl_seconds",
        "default_ttl_seconds must not exceed max_ttl_seconds",
    ),
    (
        "default-over-default-max",
        _dyn(default_ttl_seconds=86400),
        "dynamic.default_ttl_seconds",
        "must not exceed",
    ),
    ("group-too-long", _dyn(group_role="g" * 64), "dynamic.group_role", "63 bytes"),
    ("group-placeholder", _dyn(group_role="{{password}}"), "dynamic.group_role", "{{"),
    ("group-control", _dyn(group_role="a\nb"), "dynamic.group_role", "control"),
    (
        "unknown-placeholder",
        _dyn(creation_statements=["CREATE ROLE {{name}} PASSWORD {{secret}}"]),
        "dynamic.creation_statements[0]",
        "{{secret}}",
    ),
    (
        "creation-without-name",
        _dyn(creation_statements=["CREATE ROLE fixed LOGIN"]),
        "dynamic.creation_statements",
        "{{name}}",
    ),
    (
        "creation-not-sql",
        _dyn(creation_statements=[CREATE, "GRANT {{name}} TO"]),
        "dynamic.creation_statements[1]",
        "not valid sql",
    ),
    (
        "creation-quoted-placeholder",
        _dyn(creation_statements=["CREATE ROLE '{{name}}'"]),
        "dynamic.creation_statements[0]",
        "quotes",
    ),
    (
        "creation-21",
        _dyn(creation_statements=[CREATE] * 21),
        "dynamic.creation_statements",
        "at most 20",
    ),
    (
        "creation-over-4kb",
        _dyn(creation_statements=[CREATE + " " + "-" * 4100]),
        "dynamic.creation_statements[0]",
        "4096",
    ),
    (
        "revocation-two-statements",
        _dyn(revocation_statements=["DROP ROLE {{name}}", "SELECT 1; SELECT 2"]),
        "dynamic.revocation_statements[1]",
        "exactly one",
    ),
    (
        "revocation-transaction",
        _dyn(revocation_statements=["COMMIT"]),
        "dynamic.revocation_statements[0]",
        "transactions",
    ),
]


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [
        *INVALID_CREATE,
        *(
            (pb.CreateConnectionRequest(display_name="x", dynamic=dynamic), field, rule)
            for _, dynamic, field, rule in INVALID_DYNAMIC
        ),
    ],
    ids=[*INVALID_CREATE_IDS, *(f"dynamic-{case[0]}" for case in INVALID_DYNAMIC)],
)
def test_each_broken_rule_names_its_field(
    request_: pb.CreateConnectionRequest, field: str, rule: str
) -> None:
    """Each broken rule is InvalidArgument naming the field and the rule, never echoing the
    password."""
    with pytest.raises(InvalidArgument) as caught:
        create_arguments(request_)
    assert caught.value.field == field
    assert rule.lower() in caught.value.description.lower()
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "request_",
    [
        pb.CreateConnectionRequest(
            display_name="x",
            fields=_fields(ssl_mode=pb.SSL_MODE_VERIFY_FULL, ssl_root_cert=CA_PEM),
        ),
        pb.CreateConnectionRequest(
            display_name="x",
            dsn=pb.PostgresDsn(
                uri=f"postgresql://u:{SECRET}@h/db?sslmode=verify-full", ssl_root_cert=CA_PEM
            ),
        ),
        pb.CreateConnectionRequest(
            display_name="x",
            dynamic=_dyn(ssl_mode=pb.SSL_MODE_VERIFY_CA, ssl_root_cert=CA_PEM),
        ),
    ],
    ids=["fields", "dsn", "dynamic"],
)
def test_every_credential_mode_takes_a_ca_bundle(request_: pb.CreateConnectionRequest) -> None:
    """Form, DSN and dynamic requests all carry the bundle into the target they describe."""
    target = create_arguments(request_).target
    assert isinstance(target, PostgresTarget)
    assert target.ssl_mode in ("verify-ca", "verify-full")
    assert target.ssl_root_cert is not None
    assert target.ssl_root_cert.pem == CA_PEM
