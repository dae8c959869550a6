"""PostgresTarget: every form and DSN rule, the sealed payload format, and no password leaks."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.connections.postgres_target import (
    PostgresTarget,
    from_dsn,
    from_dynamic,
    from_fields,
)
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.sealing import CredentialsUnreadable
from tests.plugins.pki import ca_certificate_pem

PASSWORD = "Sup3r-Secret-Pw"
VALID: dict[str, Any] = {
    "host": "db.example.com",
    "port": 5432,
    "database": "app",
    "username": "app_user",
    "password": PASSWORD,
    "ssl_mode": "require",
}
BASE_DSN = f"postgresql://app_user:{PASSWORD}@db.example.com:5432/app"
CA_PEM, CA_KEY = ca_certificate_pem("Example Root CA")
SSL_CHOICES = "'disable', 'require', 'verify-ca' or 'verify-full'"


def _assert_no_leak(error: Exception, *secrets: str) -> None:
    """Neither the password nor the raw input appears anywhere in the error's text."""
    text = f"{error} {error!r}"
    for secret in secrets:
        if secret:
            assert secret not in text


# from_fields: (id, field overrides, failing field, fragment of the rule)
FIELD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("host-empty", {"host": ""}, "host", "is required"),
    ("host-whitespace-only", {"host": "   "}, "host", "is required"),
    ("host-too-long", {"host": "a" * 254}, "host", "at most 253 characters"),
    ("host-inner-space", {"host": "db host"}, "host", "whitespace"),
    ("host-trailing-space", {"host": "db.example.com "}, "host", "whitespace"),
    ("host-tab", {"host": "db\thost"}, "host", "control characters"),
    ("host-nul", {"host": "db\x00"}, "host", "control characters"),
    ("host-comma", {"host": "db1,db2"}, "host", "multiple hosts are not supported"),
    ("host-unix-socket", {"host": "/var/run/postgresql"}, "host", "Unix socket"),
    ("host-bracketed-ipv6", {"host": "[::1]"}, "host", "without [ ]"),
    ("host-underscore", {"host": "my_db"}, "host", "must be a hostname"),
    ("host-label-too-long", {"host": "a" * 64 + ".com"}, "host", "must be a hostname"),
    ("host-leading-hyphen", {"host": "-db.example.com"}, "host", "must be a hostname"),
    ("host-empty-label", {"host": "db..example.com"}, "host", "must be a hostname"),
    ("host-ipv4-out-of-range", {"host": "256.1.1.1"}, "host", "IPv4 or IPv6 address"),
    ("host-ipv4-short-form", {"host": "127.1"}, "host", "IPv4 or IPv6 address"),
    ("host-unicode", {"host": "bücher.example"}, "host", "punycode"),
    ("host-with-port", {"host": "db.example.com:5432"}, "host", "must not include a port"),
    ("host-ipv6-zone-id", {"host": "fe80::1%eth0"}, "host", "zone id"),
    ("port-zero", {"port": 0}, "port", "between 1 and 65535"),
    ("port-too-large", {"port": 70000}, "port", "between 1 and 65535"),
    ("port-negative", {"port": -1}, "port", "between 1 and 65535"),
    ("port-bool", {"port": True}, "port", "integer between 1 and 65535"),
    ("database-empty", {"database": ""}, "database", "is required"),
    ("database-whitespace-only", {"database": "  "}, "database", "is required"),
    ("database-64-bytes", {"database": "d" * 64}, "database", "at most 63 bytes"),
    ("database-64-bytes-multibyte", {"database": "é" * 32}, "database", "at most 63 bytes"),
    ("database-nul", {"database": "app\x00"}, "database", "control"),
    ("database-newline", {"database": "app\nx"}, "database", "control"),
    ("database-bidi-override", {"database": "app\u202e"}, "database", "control"),
    ("username-empty", {"username": ""}, "username", "is required"),
    ("username-whitespace-only", {"username": " "}, "username", "is required"),
    ("username-64-bytes", {"username": "u" * 64}, "username", "at most 63 bytes"),
    ("username-64-bytes-multibyte", {"username": "ü" * 32}, "username", "at most 63 bytes"),
    ("username-nul", {"username": "app\x00user"}, "username", "control"),
    ("username-escape", {"username": "app\x1buser"}, "username", "control"),
    ("password-empty", {"password": ""}, "password", "is required"),
    ("password-too-long", {"password": "p" * 1025}, "password", "at most 1024 characters"),
    ("password-nul", {"password": "Secret\x00Tail"}, "password", "NUL"),
    ("password-lone-surrogate", {"password": "Secret\ud800"}, "password", "valid Unicode"),
    ("ssl-prefer", {"ssl_mode": "prefer"}, "ssl_mode", SSL_CHOICES),
    ("ssl-allow", {"ssl_mode": "allow"}, "ssl_mode", SSL_CHOICES),
    ("ssl-empty", {"ssl_mode": ""}, "ssl_mode", SSL_CHOICES),
    ("ssl-boolean-word", {"ssl_mode": "on"}, "ssl_mode", SSL_CHOICES),
    # The CA bundle goes with the verify modes, and only with them.
    (
        "verify-full-without-bundle",
        {"ssl_mode": "verify-full"},
        "ssl_root_cert",
        "is required with SSL mode verify-full",
    ),
    (
        "verify-ca-blank-bundle",
        {"ssl_mode": "verify-ca", "ssl_root_cert": " \n"},
        "ssl_root_cert",
        "is required with SSL mode verify-ca",
    ),
    (
        "disable-with-bundle",
        {"ssl_mode": "disable", "ssl_root_cert": CA_PEM},
        "ssl_root_cert",
        "only with SSL mode verify-ca or verify-full, not disable",
    ),
    (
        "require-with-bundle",
        {"ssl_mode": "require", "ssl_root_cert": CA_PEM},
        "ssl_root_cert",
        "only with SSL mode verify-ca or verify-full, not require",
    ),
    (
        "bundle-not-pem",
        {"ssl_mode": "verify-full", "ssl_root_cert": "MIIB...base64 without armour"},
        "ssl_root_cert",
        "no -----BEGIN CERTIFICATE----- block",
    ),
    (
        "bundle-with-private-key",
        {"ssl_mode": "verify-ca", "ssl_root_cert": CA_PEM + CA_KEY},
        "ssl_root_cert",
        "contains a private key",
    ),
]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"), [pytest.param(*case[1:], id=case[0]) for case in FIELD_CASES]
)
def test_from_fields_rejects_each_broken_rule(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    """Each form rule fails on its own field path with a message stating the rule."""
    values = {**VALID, **changes}
    with pytest.raises(InvalidArgument) as caught:
        from_fields(**values)
    assert caught.value.field == f"fields.{field}"
    assert fragment in caught.value.description
    _assert_no_leak(caught.value, values["password"], CA_KEY.splitlines()[1])


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full", "VERIFY-FULL"])
def test_a_verify_mode_with_a_bundle_keeps_its_certificates(mode: str) -> None:
    """A verify mode takes the bundle: its PEM without the text around it, and a summary."""
    target = from_fields(**{**VALID, "ssl_mode": mode, "ssl_root_cert": f"# root\n{CA_PEM}"})
    assert target.ssl_mode == mode.lower()
    assert target.ssl_root_cert is not None
    assert target.ssl_root_cert.pem == CA_PEM
    assert [c.subject for c in target.ssl_root_cert.certificates] == ["CN=Example Root CA"]
    assert "ssl_root_certs=1" in repr(target)


def test_from_fields_uses_the_given_prefix() -> None:
    """Callers nesting the form elsewhere get their own field path."""
    with pytest.raises(InvalidArgument) as caught:
        from_fields(**{**VALID, "host": ""}, prefix="connection.fields")
    assert caught.value.field == "connection.fields.host"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"host": "10.0.0.5"}, {"host": "10.0.0.5"}, id="ipv4"),
        pytest.param({"host": "2001:db8::1"}, {"host": "2001:db8::1"}, id="ipv6"),
        pytest.param({"host": "localhost"}, {"host": "localhost"}, id="single-label"),
        pytest.param({"host": "db.example.com."}, {"host": "db.example.com."}, id="fqdn-dot"),
        pytest.param({"host": "xn--bcher-kva.ch"}, {"host": "xn--bcher-kva.ch"}, id="punycode"),
        pytest.param({"host": "a" * 63 + ".io"}, {"host": "a" * 63 + ".io"}, id="63-char-label"),
        pytest.param({"port": None}, {"port": 5432}, id="default-port"),
        pytest.param({"port": 1}, {"port": 1}, id="port-1"),
        pytest.param({"port": 65535}, {"port": 65535}, id="port-65535"),
        pytest.param({"ssl_mode": "REQUIRE"}, {"ssl_mode": "require"}, id="ssl-uppercase"),
        pytest.param({"ssl_mode": " disable "}, {"ssl_mode": "disable"}, id="ssl-spaces"),
        pytest.param({"database": "my app"}, {"database": "my app"}, id="database-space"),
        pytest.param({"database": "é" * 31 + "a"}, {"database": "é" * 31 + "a"}, id="db-63-bytes"),
        pytest.param({"username": "app-user@corp"}, {"username": "app-user@corp"}, id="user-at"),
        pytest.param({"password": " \t pw "}, {"password": " \t pw "}, id="password-blank-tab"),
        pytest.param({"password": "p" * 1024}, {"password": "p" * 1024}, id="password-1024"),
    ],
)
def test_from_fields_accepts_valid_input(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    """Valid form input becomes a target holding exactly the normalized values."""
    target = from_fields(**{**VALID, **changes})
    for name, value in expected.items():
        assert getattr(target, name) == value


# from_dsn: (id, dsn, ssl_mode argument, failing field suffix, fragment of the rule)
DSN_CASES: list[tuple[str, str, str | None, str, str]] = [
    ("empty", "", "require", "uri", "is required"),
    ("too-long", BASE_DSN + "x" * 4096, "require", "uri", "at most 4096 characters"),
    ("raw-nul", f"postgresql://u:{PASSWORD}\x00@h/db", "require", "uri", "control characters"),
    ("raw-newline", f"postgresql://u:{PASSWORD}@h/d\nb", "require", "uri", "control characters"),
    ("key-value", f"host=h user=u password={PASSWORD} dbname=d", "require", "uri", "key=value"),
    ("other-scheme", f"mysql://u:{PASSWORD}@h/db", "require", "uri", "postgresql://"),
    ("uppercase-scheme", f"POSTGRESQL://u:{PASSWORD}@h/db", "require", "uri", "postgresql://"),
    ("no-scheme", f"u:{PASSWORD}@h/db", "require", "uri", "must start with postgresql://"),
    ("unclosed-bracket", f"postgresql://u:{PASSWORD}@[::1/db", "require", "uri", "not a valid"),
    ("bad-percent", f"postgresql://u:{PASSWORD}%zz@h/db", "require", "uri", "not a valid"),
    ("percent-nul-password", f"postgresql://u:{PASSWORD}%00@h/db", "require", "uri", "not a valid"),
    ("percent-invalid-utf8", f"postgresql://u:{PASSWORD}%FF@h/db", "require", "uri", "not a valid"),
    ("unknown-parameter", f"{BASE_DSN}?bogus={PASSWORD}", "require", "uri", "not a valid"),
    ("parameter-without-value", f"{BASE_DSN}?sslmode", None, "uri", "not a valid"),
    ("two-hosts", f"postgresql://u:{PASSWORD}@h1,h2/db", "require", "uri", "multiple hosts"),
    ("two-ports", f"postgresql://u:{PASSWORD}@h:5432,5433/db", "require", "uri", "multiple hosts"),
    ("encoded-comma", f"postgresql://u:{PASSWORD}@h1%2Ch2/db", "require", "uri", "multiple hosts"),
    ("missing-user", "postgresql://db.example.com/app", "require", "uri", "missing the user name"),
    ("missing-password", "postgresql://u@db.example.com/app", "require", "uri", "the password"),
    ("empty-password", "postgresql://u:@db.example.com/app", "require", "uri", "the password"),
    ("missing-host", f"postgresql://u:{PASSWORD}@/app", "require", "uri", "missing the host"),
    ("port-only", f"postgresql://u:{PASSWORD}@:5432/app", "require", "uri", "missing the host"),
    ("missing-dbname", f"postgresql://u:{PASSWORD}@h", "require", "uri", "the database name"),
    ("empty-dbname", f"postgresql://u:{PASSWORD}@h/", "require", "uri", "the database name"),
    ("param-options", f"{BASE_DSN}?options=-c%20x", "require", "uri", "parameter 'options'"),
    ("param-app-name", f"{BASE_DSN}?application_name=x", None, "uri", "'application_name'"),
    ("param-timeout", f"{BASE_DSN}?connect_timeout=5", None, "uri", "parameter 'connect_timeout'"),
    ("param-jdbc-ssl", f"{BASE_DSN}?ssl=true", None, "uri", "unsupported parameter 'ssl'"),
    ("param-sslrootcert", f"{BASE_DSN}?sslrootcert=/x", None, "uri", "PEM text in ssl_root_cert"),
    ("param-encoded-name", f"{BASE_DSN}?%6Fptions=x", None, "uri", "parameter 'options'"),
    ("param-password", f"{BASE_DSN}?password={PASSWORD}2", None, "uri", "'password' conflicts"),
    ("param-host", f"{BASE_DSN}?host=other", None, "uri", "'host' conflicts"),
    ("param-host-socket", f"{BASE_DSN}?host=/tmp", None, "uri", "'host' conflicts"),
    ("param-hostaddr", f"{BASE_DSN}?hostaddr=10.0.0.1", None, "uri", "'hostaddr' conflicts"),
    ("param-user", f"{BASE_DSN}?user=admin", None, "uri", "'user' conflicts"),
    ("param-port", f"{BASE_DSN}?port=6543", None, "uri", "'port' conflicts"),
    ("param-dbname", f"{BASE_DSN}?dbname=other", None, "uri", "'dbname' conflicts"),
    ("param-password-no-uri-pw", "postgresql://u@h/db?password=x", None, "uri", "conflicts"),
    ("sslmode-twice", f"{BASE_DSN}?sslmode=require&sslmode=disable", None, "uri", "more than once"),
    ("sslmode-verify-full", f"{BASE_DSN}?sslmode=verify-full", None, "ssl_root_cert", "required"),
    ("sslmode-verify-ca", f"{BASE_DSN}?sslmode=verify-ca", None, "ssl_root_cert", "required"),
    ("sslmode-prefer", f"{BASE_DSN}?sslmode=prefer", None, "uri", SSL_CHOICES),
    ("sslmode-allow", f"{BASE_DSN}?sslmode=allow", None, "uri", SSL_CHOICES),
    ("sslmode-empty", f"{BASE_DSN}?sslmode=", None, "uri", SSL_CHOICES),
    ("arg-verify-full", BASE_DSN, "verify-full", "ssl_root_cert", "required"),
    ("arg-prefer", BASE_DSN, "prefer", "ssl_mode", SSL_CHOICES),
    ("arg-empty", BASE_DSN, "", "ssl_mode", SSL_CHOICES),
    (
        "ssl-conflict",
        f"{BASE_DSN}?sslmode=require",
        "disable",
        "ssl_mode",
        "conflicts with sslmode",
    ),
    ("ssl-missing", BASE_DSN, None, "ssl_mode", "is required"),
    ("host-socket", f"postgresql://u:{PASSWORD}@%2Ftmp/db", "require", "uri", "Unix socket"),
    ("host-too-long", f"postgresql://u:{PASSWORD}@{'a' * 254}/db", "require", "uri", "at most 253"),
    ("host-not-name", f"postgresql://u:{PASSWORD}@my_db/db", "require", "uri", "host must be a"),
    ("host-space", f"postgresql://u:{PASSWORD}@my%20db/db", "require", "uri", "whitespace"),
    ("host-control", f"postgresql://u:{PASSWORD}@my%09db/db", "require", "uri", "control"),
    ("host-zone-id", f"postgresql://u:{PASSWORD}@[fe80::1%25eth0]/db", "require", "uri", "zone"),
    ("host-ipv4-bad", f"postgresql://u:{PASSWORD}@256.1.1.1/db", "require", "uri", "host must be"),
    ("port-zero", f"postgresql://u:{PASSWORD}@h:0/db", "require", "uri", "between 1 and 65535"),
    (
        "port-70000",
        f"postgresql://u:{PASSWORD}@h:70000/db",
        "require",
        "uri",
        "between 1 and 65535",
    ),
    ("port-not-number", f"postgresql://u:{PASSWORD}@h:pg/db", "require", "uri", "must be a number"),
    ("db-64-bytes", f"postgresql://u:{PASSWORD}@h/{'d' * 64}", "require", "uri", "63 bytes"),
    ("db-control", f"postgresql://u:{PASSWORD}@h/a%0Ab", "require", "uri", "database name must"),
    ("user-64-bytes", f"postgresql://{'u' * 64}:{PASSWORD}@h/db", "require", "uri", "63 bytes"),
    ("user-control", f"postgresql://a%1Bb:{PASSWORD}@h/db", "require", "uri", "user name must"),
    ("password-too-long", f"postgresql://u:{'p' * 1025}@h/db", "require", "uri", "at most 1024"),
]


@pytest.mark.parametrize(
    ("dsn", "ssl_mode", "field", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in DSN_CASES],
)
def test_from_dsn_rejects_each_broken_rule(
    dsn: str, ssl_mode: str | None, field: str, fragment: str
) -> None:
    """Each DSN rule fails on dsn.uri or dsn.ssl_mode, quoting neither the URI nor the password."""
    with pytest.raises(InvalidArgument) as caught:
        from_dsn(dsn, ssl_mode)
    assert caught.value.field == f"dsn.{field}"
    assert fragment in caught.value.description
    _assert_no_leak(caught.value, PASSWORD, dsn, "p" * 1025)


def test_a_dsn_takes_its_bundle_beside_the_uri() -> None:
    """sslmode=verify-ca in the URI plus the PEM in ssl_root_cert; a bundle with require fails."""
    target = from_dsn(f"{BASE_DSN}?sslmode=verify-ca", None, ssl_root_cert=CA_PEM)
    assert target == from_fields(**{**VALID, "ssl_mode": "verify-ca", "ssl_root_cert": CA_PEM})
    with pytest.raises(InvalidArgument) as caught:
        from_dsn(f"{BASE_DSN}?sslmode=require", None, ssl_root_cert=CA_PEM)
    assert caught.value.field == "dsn.ssl_root_cert"
    _assert_no_leak(caught.value, PASSWORD, BASE_DSN)


def test_a_dynamic_connection_takes_a_bundle_under_its_own_prefix() -> None:
    """The privileged login verifies the server like any other; errors name dynamic.*."""

    def dynamic(**changes: Any) -> PostgresTarget:
        values: dict[str, Any] = {
            "host": "db.example.com",
            "port": None,
            "database": "app",
            "ssl_mode": "verify-full",
            "privileged_username": "sevvo_admin",
            "privileged_password": PASSWORD,
            "default_ttl_seconds": 0,
            "max_ttl_seconds": 0,
            "creation_statements": [],
            "revocation_statements": [],
            "group_role": "",
            "ssl_root_cert": CA_PEM,
        }
        return from_dynamic(**{**values, **changes})

    target = dynamic()
    assert target.dynamic is not None
    assert target.ssl_root_cert is not None
    assert PostgresTarget.from_json(target.to_json()) == target
    with pytest.raises(InvalidArgument) as caught:
        dynamic(ssl_root_cert="")
    assert caught.value.field == "dynamic.ssl_root_cert"


def test_from_dsn_uses_the_given_prefix() -> None:
    """Callers nesting the DSN elsewhere get their own field path."""
    with pytest.raises(InvalidArgument) as caught:
        from_dsn("mysql://x", "require", prefix="connection.dsn")
    assert caught.value.field == "connection.dsn.uri"


@pytest.mark.parametrize(
    ("dsn", "ssl_mode", "expected"),
    [
        pytest.param(
            f"postgresql://app_user:{PASSWORD}@10.0.0.5:6543/app?sslmode=require",
            None,
            {"host": "10.0.0.5", "port": 6543, "ssl_mode": "require"},
            id="ipv4-sslmode-in-uri",
        ),
        pytest.param(
            f"postgresql://app_user:{PASSWORD}@[2001:db8::1]:5433/app",
            "disable",
            {"host": "2001:db8::1", "port": 5433, "ssl_mode": "disable"},
            id="ipv6-bracketed",
        ),
        pytest.param(
            f"postgresql://app_user:{PASSWORD}@[::1]/app?sslmode=disable",
            None,
            {"host": "::1", "port": 5432},
            id="ipv6-default-port",
        ),
        pytest.param(
            f"postgresql://app_user:{PASSWORD}@db.example.com/app",
            "require",
            {"port": 5432, "ssl_mode": "require"},
            id="default-port-ssl-from-field",
        ),
        pytest.param(
            "postgresql://app_user:p%40ss%2Fw%3Ard%3F%25@db.example.com/app",
            "require",
            {"password": "p@ss/w:rd?%"},
            id="percent-encoded-password",
        ),
        pytest.param(
            f"postgres://app_user:{PASSWORD}@db.example.com/app",
            "require",
            {"host": "db.example.com", "database": "app", "username": "app_user"},
            id="postgres-scheme",
        ),
        pytest.param(
            f"{BASE_DSN}?sslmode=REQUIRE", "require", {"ssl_mode": "require"}, id="both-agree"
        ),
        pytest.param(f"{BASE_DSN}?sslmode=disable&", None, {"ssl_mode": "disable"}, id="trail-&"),
        pytest.param(
            "postgresql://app%20user:a?b@db.example.com/my%20db",
            "require",
            {"username": "app user", "password": "a?b", "database": "my db"},
            id="raw-question-mark-in-password",
        ),
        pytest.param(f"  {BASE_DSN}\n", "require", {"password": PASSWORD}, id="surrounding-space"),
        pytest.param(
            f"postgresql://u:{PASSWORD}@h:/db", "require", {"port": 5432}, id="empty-port"
        ),
    ],
)
def test_from_dsn_accepts_valid_uris(
    dsn: str, ssl_mode: str | None, expected: dict[str, Any]
) -> None:
    """A valid URI becomes a target holding the percent-decoded parts."""
    target = from_dsn(dsn, ssl_mode)
    for name, value in expected.items():
        assert getattr(target, name) == value


def test_dsn_and_form_give_the_same_target() -> None:
    """The same connection typed as a form or as a DSN is the same value."""
    assert from_dsn(BASE_DSN, "require") == from_fields(**VALID)


TARGET = from_fields(**VALID)


def test_json_round_trip() -> None:
    """from_json reads back exactly what to_json wrote, password included."""
    data = TARGET.to_json()
    assert isinstance(data, bytes)
    assert json.loads(data)["version"] == 1
    assert PostgresTarget.from_json(data) == TARGET


VERIFIED = from_fields(**{**VALID, "ssl_mode": "verify-full", "ssl_root_cert": CA_PEM})


def test_the_bundle_is_sealed_with_the_credentials() -> None:
    """The payload carries the bundle's PEM and reads back the same target."""
    data = VERIFIED.to_json()
    assert json.loads(data)["ssl_root_cert"] == CA_PEM
    assert PostgresTarget.from_json(data) == VERIFIED


STAGE_ID = "5f0c3d1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f"


def test_a_staged_rotation_round_trips_and_commits_with_its_stage() -> None:
    """Stage ids survive the payload; committing moves the stage to the current password."""
    staged = TARGET.with_pending_password("n3w-Pa55", field="p", stage_id=STAGE_ID)
    assert PostgresTarget.from_json(staged.to_json()) == staged
    committed = staged.with_staged_committed()
    assert (committed.password, committed.password_stage_id) == ("n3w-Pa55", STAGE_ID)
    assert (committed.pending_password, committed.pending_stage_id) == (None, None)
    assert PostgresTarget.from_json(committed.to_json()) == committed
    assert committed.with_password("typed-Pa55", field="p").password_stage_id is None


def _payload(**changes: Any) -> bytes:
    document = {**json.loads(TARGET.to_json()), **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param(b"not json " + PASSWORD.encode(), "not a JSON object", id="not-json"),
        pytest.param(b"\xff\xfe", "not a JSON object", id="not-utf8"),
        pytest.param(b"[]", "not a JSON object", id="array"),
        pytest.param(b"null", "not a JSON object", id="null"),
        pytest.param(_payload(version=2), "version", id="future-version"),
        pytest.param(_payload(version=...), "version", id="no-version"),
        pytest.param(_payload(password=...), "missing fields ['password']", id="no-password"),
        pytest.param(_payload(extra="x"), "unknown fields", id="extra-field"),
        pytest.param(_payload(port="5432"), "port is not an integer", id="port-string"),
        pytest.param(_payload(port=True), "port is not an integer", id="port-bool"),
        pytest.param(_payload(host=1), "host is not a string", id="host-number"),
        pytest.param(_payload(password=None), "password is not a string", id="password-null"),
        pytest.param(_payload(port=0), "payload.port", id="rule-port"),
        pytest.param(_payload(ssl_mode="prefer"), "payload.ssl_mode", id="rule-ssl"),
        pytest.param(
            _payload(ssl_mode="verify-full"), "payload.ssl_root_cert", id="verify-no-bundle"
        ),
        pytest.param(_payload(ssl_root_cert=CA_PEM), "payload.ssl_root_cert", id="bundle-require"),
        pytest.param(_payload(ssl_root_cert=""), "ssl_root_cert is not", id="bundle-empty"),
        pytest.param(_payload(ssl_root_cert=7), "ssl_root_cert is not", id="bundle-number"),
        pytest.param(_payload(password="a\x00" + PASSWORD), "payload.password", id="rule-nul"),
        pytest.param(
            b'{"password":"' + PASSWORD.encode() + b'","password":"x"}', "not a JSON", id="dup-key"
        ),
        pytest.param(
            _payload(pending_stage_id=STAGE_ID), "without pending_password", id="stage-no-pending"
        ),
        pytest.param(
            _payload(pending_password="n3w-Pa55", pending_stage_id="' or 1=1 --"),
            "pending_stage_id is not a stage id",
            id="stage-not-uuid",
        ),
        pytest.param(
            _payload(password_stage_id=STAGE_ID.upper()),
            "password_stage_id is not a stage id",
            id="stage-not-canonical",
        ),
    ],
)
def test_from_json_rejects_malformed_payloads(data: bytes, fragment: str) -> None:
    """A malformed payload is unreadable stored credentials, described without its content."""
    with pytest.raises(CredentialsUnreadable) as caught:
        PostgresTarget.from_json(data)
    assert caught.value.reason == "CREDENTIALS_PAYLOAD_MALFORMED"
    assert fragment in caught.value.message
    _assert_no_leak(caught.value, PASSWORD)


def test_repr_and_str_hide_the_password() -> None:
    """repr, str, f-strings and containers show the target without its password."""
    for text in (repr(TARGET), str(TARGET), f"{TARGET}", repr([TARGET]), repr({"t": TARGET})):
        assert PASSWORD not in text
        assert "db.example.com" in text
        assert "<redacted>" in text


def test_safe_metadata_has_no_password() -> None:
    """safe_metadata holds the UI fields and nothing secret."""
    assert TARGET.safe_metadata() == {
        "host": "db.example.com",
        "port": 5432,
        "database": "app",
        "username": "app_user",
        "ssl_mode": "require",
    }


# Property tests: passwords are open-ended input, so they get generated ones.
# codec="utf-8" leaves out lone surrogates, which no caller can send over gRPC.
passwords = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200
)


def _dsn_for(password: str, rest: str = "db.example.com:5432/app?sslmode=require") -> str:
    return f"postgresql://app_user:{quote(password, safe='')}@{rest}"


@settings(deadline=None)
@given(password=passwords)
def test_any_password_survives_form_dsn_and_payload(password: str) -> None:
    """A password without NUL comes back byte for byte from the form, the DSN and the payload."""
    by_form = from_fields(**{**VALID, "password": password})
    by_dsn = from_dsn(_dsn_for(password), None)
    assert by_form.password == password
    assert by_dsn.password == password
    assert by_dsn == by_form
    assert PostgresTarget.from_json(by_form.to_json()) == by_form


# Otherwise-invalid inputs, each built around a password: (id, build the call).
INVALID_WITH_PASSWORD: dict[str, Any] = {
    "form-port-0": lambda pw: from_fields(**{**VALID, "password": pw, "port": 0}),
    "form-host-blank": lambda pw: from_fields(**{**VALID, "password": pw, "host": " "}),
    "form-bad-host": lambda pw: from_fields(**{**VALID, "password": pw, "host": "a b"}),
    "form-no-database": lambda pw: from_fields(**{**VALID, "password": pw, "database": ""}),
    "form-bad-ssl-mode": lambda pw: from_fields(**{**VALID, "password": pw, "ssl_mode": "x"}),
    "dsn-port-0": lambda pw: from_dsn(_dsn_for(pw, "h:0/app"), "require"),
    "dsn-no-database": lambda pw: from_dsn(_dsn_for(pw, "h"), "require"),
    "dsn-two-hosts": lambda pw: from_dsn(_dsn_for(pw, "h1,h2/app"), "require"),
    "dsn-options": lambda pw: from_dsn(_dsn_for(pw, "h/app?options=x"), "require"),
    "dsn-unknown-param": lambda pw: from_dsn(_dsn_for(pw, "h/app?zz=1"), "require"),
    "dsn-unparseable": lambda pw: from_dsn(_dsn_for(pw, "[::1/app"), "require"),
    "dsn-ssl-conflict": lambda pw: from_dsn(_dsn_for(pw, "h/app?sslmode=require"), "disable"),
    "dsn-no-ssl": lambda pw: from_dsn(_dsn_for(pw, "h/app"), None),
}


def _message(call: Any, password: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call(password)
    return str(caught.value)


@settings(deadline=None)
@given(password=passwords, case=st.sampled_from(sorted(INVALID_WITH_PASSWORD)))
def test_error_messages_never_depend_on_the_password(password: str, case: str) -> None:
    """An error for an otherwise-invalid input is the same text whatever the password is."""
    call = INVALID_WITH_PASSWORD[case]
    message = _message(call, password)
    reference = _message(call, "reference-password")
    # Equal text proves nothing of the password is in it; a short password can still be a
    # substring of the fixed rule wording ("e" in "required"), which is not a leak.
    assert message == reference
    if password not in reference:
        assert password not in message
        assert quote(password, safe="") not in message


_URI_PIECES = st.sampled_from(
    [
        "postgresql://", "postgres://", "u", ":", "@", "[", "]", "::1", "/", "?", "&", "=", "%",
        "%2C", "%2F", "%00", "%FF", "%25", ",", "h", "db", "5432", "0", "sslmode", "require",
        "verify-full", "host", "password", "options", "ssl", "true", " ", "é", "\x00",
    ]
)  # fmt: skip
# Text from URI punctuation and a few letters, so generated parts often parse and reach the
# field rules instead of stopping at the scheme or control-character checks.
_uri_part = st.text(st.sampled_from("ab1é-._~:@/?&=%[],25FC "), max_size=12)
dsn_texts = st.one_of(
    st.text(),
    st.text().map(lambda text: "postgresql://" + text),
    st.lists(_URI_PIECES, max_size=30).map("".join),
    st.tuples(_uri_part, _uri_part, _uri_part, _uri_part, _uri_part).map(
        lambda p: f"postgresql://{p[0]}:{p[1]}@{p[2]}/{p[3]}?sslmode={p[4]}"
    ),
    st.tuples(_uri_part, _uri_part, _uri_part).map(
        lambda p: f"postgres://user:{p[0]}@{p[1] or 'h'}:{p[2]}/db"
    ),
)


@settings(deadline=None, max_examples=500)
@given(dsn=dsn_texts, ssl_mode=st.one_of(st.none(), st.sampled_from(["require", "disable", "x"])))
def test_any_text_as_dsn_raises_only_invalid_argument(dsn: str, ssl_mode: str | None) -> None:
    """Arbitrary text is either a valid target or InvalidArgument, never another exception."""
    try:
        target = from_dsn(dsn, ssl_mode)
    except InvalidArgument as error:
        field = error.field
    else:
        # Whatever the DSN path accepts, the form rules accept too: one set of rules.
        again = from_fields(
            host=target.host,
            port=target.port,
            database=target.database,
            username=target.username,
            password=target.password,
            ssl_mode=target.ssl_mode,
        )
        assert again == target
        return
    assert field in ("dsn.uri", "dsn.ssl_mode", "dsn.ssl_root_cert")
