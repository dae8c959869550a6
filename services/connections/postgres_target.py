"""A Postgres connection target: what a user typed (form or DSN) turned into one validated value."""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict

from services.connections.dynamic import DynamicSettings, dynamic_settings
from services.connections.preview_settings import PreviewSettings
from sevvo.runtime.ca_bundle import CaBundle, CaBundleError, parse_ca_bundle
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.sealing import CredentialsUnreadable
from sevvo.runtime.validation import has_control_characters
from sevvo.runtime.workload_grants import DEFAULT_ROLE, ROLE_NAME_RULE

DEFAULT_PORT = 5432
SSL_MODES = ("disable", "require", "verify-ca", "verify-full")
# The modes that check the server's certificate against the connection's CA bundle.
VERIFY_MODES = ("verify-ca", "verify-full")
MAX_HOST_LENGTH = 253
# Postgres truncates identifiers to NAMEDATALEN - 1 bytes; rejecting longer names up front beats
# connecting to a silently truncated name.
MAX_NAME_BYTES = 63
MAX_PASSWORD_LENGTH = 1024
MAX_DSN_LENGTH = 4096
PAYLOAD_VERSION = 1

_SCHEMES = ("postgresql://", "postgres://")
_SSL_CHOICES = "'disable', 'require', 'verify-ca' or 'verify-full'"
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,10}")
_KEYWORD = re.compile(r"[a-z_]{1,40}")  # the shape of every libpq keyword
# Query parameters that would override a part of the URI itself; libpq lets the query win
# silently, which would make the URI say one thing and the connection do another.
_URI_PART_PARAMETERS = {
    "host": "host",
    "hostaddr": "host",
    "port": "port",
    "dbname": "database name",
    "user": "user name",
    "password": "password",
}
_PAYLOAD_FIELDS = ("host", "port", "database", "username", "password", "ssl_mode")
# Sections a payload may hold beyond the login itself; payloads written before they existed
# simply lack them.
_OPTIONAL_PAYLOAD_FIELDS = (
    "dynamic",
    "pending_password",
    "pending_stage_id",
    "password_stage_id",
    "preview",
    "ssl_root_cert",
    "roles",
)


@dataclass(frozen=True)
class PostgresTarget:
    """One Postgres server, database and login; build it with ``from_fields`` or ``from_dsn``.

    ``ssl_mode`` is one of ``SSL_MODES``; ``ssl_root_cert`` is the CA bundle, set exactly
    for the ``VERIFY_MODES``. For a dynamic connection the login is the
    privileged role's, ``dynamic`` holds the lease settings, and ``pending_password`` a
    rotation's staged password, staged under ``pending_stage_id`` (None when staged without
    one). ``password_stage_id`` names the stage the current password was committed from, so a
    retried commit can tell it already happened. ``preview`` holds the owner's preview
    settings, in any mode. ``dynamic`` is the connection role "default"; ``roles`` holds the
    other named roles' settings by name, in name order (a role being removed included, until
    its leases are revoked). No password ever appears in ``repr`` or ``str``, so a target can
    be logged or put in an exception without leaking it.
    """

    host: str
    port: int
    database: str
    username: str
    password: str
    ssl_mode: str
    dynamic: DynamicSettings | None = None
    pending_password: str | None = None
    pending_stage_id: str | None = None
    password_stage_id: str | None = None
    preview: PreviewSettings | None = None
    ssl_root_cert: CaBundle | None = None
    roles: tuple[tuple[str, DynamicSettings], ...] = ()

    def __repr__(self) -> str:
        # The bundle is public but long: its size says enough in a log line.
        certificates = 0 if self.ssl_root_cert is None else len(self.ssl_root_cert.certificates)
        return (
            f"PostgresTarget(host={self.host!r}, port={self.port!r}, "
            f"database={self.database!r}, username={self.username!r}, "
            f"password='<redacted>', ssl_mode={self.ssl_mode!r}, "
            f"dynamic={self.dynamic!r}, preview={self.preview!r}, "
            f"ssl_root_certs={certificates}, "
            f"roles={[name for name, _ in self.roles]!r}, "
            f"pending_password={None if self.pending_password is None else '<redacted>'!r})"
        )

    __str__ = __repr__

    def safe_metadata(self) -> dict[str, str | int]:
        """The non-secret part, for the UI and the connection row: everything but the password."""
        return {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": self.username,
            "ssl_mode": self.ssl_mode,
        }

    def to_json(self) -> bytes:
        """The plaintext of the sealed credential payload (versioned JSON, UTF-8)."""
        payload: dict[str, Any] = {"version": PAYLOAD_VERSION, **self.safe_metadata()}
        payload["password"] = self.password
        if self.dynamic is not None:
            payload["dynamic"] = self.dynamic.to_payload()
        if self.roles:
            payload["roles"] = {name: settings.to_payload() for name, settings in self.roles}
        if self.preview is not None:
            payload["preview"] = self.preview.to_payload()
        if self.ssl_root_cert is not None:
            payload["ssl_root_cert"] = self.ssl_root_cert.pem
        if self.pending_password is not None:
            payload["pending_password"] = self.pending_password
        for name in ("pending_stage_id", "password_stage_id"):
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PostgresTarget:
        """Reads what ``to_json`` wrote, checking its shape and every field rule again.

        Raises ``CredentialsUnreadable`` (reason ``CREDENTIALS_PAYLOAD_MALFORMED``): a payload
        that unsealed but does not hold a valid target is stored data nobody can use until the
        credentials are saved again, not a bad request. The message never quotes the payload.
        """
        try:
            payload = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
        except (UnicodeDecodeError, ValueError):
            # ValueError covers JSONDecodeError and duplicate keys; neither message is kept
            # because JSON errors can quote the document.
            raise _malformed("it is not a JSON object") from None
        if not isinstance(payload, dict):
            raise _malformed("it is not a JSON object")
        if payload.get("version") != PAYLOAD_VERSION:
            raise _malformed(f"its version is not {PAYLOAD_VERSION}")
        expected = {"version", *_PAYLOAD_FIELDS}
        if not expected <= set(payload) <= expected | set(_OPTIONAL_PAYLOAD_FIELDS):
            missing = sorted(expected - set(payload))
            extra = len(set(payload) - expected - set(_OPTIONAL_PAYLOAD_FIELDS))
            raise _malformed(f"missing fields {missing}" if missing else f"{extra} unknown fields")
        port = payload["port"]
        # bool is an int subclass; JSON true must not become port 1.
        if not isinstance(port, int) or isinstance(port, bool):
            raise _malformed("port is not an integer")
        for name in ("host", "database", "username", "password", "ssl_mode"):
            if not isinstance(payload[name], str):
                raise _malformed(f"{name} is not a string")
        pending = payload.get("pending_password")
        if pending is not None and not isinstance(pending, str):
            raise _malformed("pending_password is not a string")
        root_cert = payload.get("ssl_root_cert", "")
        if not isinstance(root_cert, str) or ("ssl_root_cert" in payload and not root_cert):
            raise _malformed("ssl_root_cert is not a PEM string")
        pending_stage_id, password_stage_id = (
            _stage_id_field(payload, name) for name in ("pending_stage_id", "password_stage_id")
        )
        if pending_stage_id is not None and pending is None:
            raise _malformed("pending_stage_id is set without pending_password")
        try:
            target = from_fields(
                host=payload["host"],
                port=port,
                database=payload["database"],
                username=payload["username"],
                password=payload["password"],
                ssl_mode=payload["ssl_mode"],
                ssl_root_cert=root_cert,
                prefix="payload",
            )
            if pending is not None:
                problem = password_problem(pending)
                if problem is not None:
                    raise InvalidArgument("payload.pending_password", problem)
            dynamic = (
                DynamicSettings.from_payload(payload["dynamic"]) if "dynamic" in payload else None
            )
            preview = (
                PreviewSettings.from_payload(payload["preview"]) if "preview" in payload else None
            )
            roles = _roles_from_payload(payload["roles"]) if "roles" in payload else ()
        except InvalidArgument as error:
            raise _malformed(f"{error.field} {error.description}") from None
        if roles and dynamic is None:
            raise _malformed("roles are set without dynamic settings")
        return replace(
            target,
            dynamic=dynamic,
            roles=roles,
            preview=preview,
            pending_password=pending,
            pending_stage_id=pending_stage_id,
            password_stage_id=password_stage_id,
        )

    def with_password(self, password: str, *, field: str) -> PostgresTarget:
        """The target with a new password, from no stage, and nothing staged; InvalidArgument
        on ``field``."""
        problem = password_problem(password)
        if problem is not None:
            raise InvalidArgument(field, problem)
        return replace(self, password=password, password_stage_id=None, **_UNSTAGED)

    def with_pending_password(
        self, password: str | None, *, field: str, stage_id: str | None = None
    ) -> PostgresTarget:
        """The same target with ``password`` staged beside the current one under ``stage_id``
        (None: staged without an id); ``password=None`` unstages."""
        if password is None:
            return replace(self, **_UNSTAGED)
        problem = password_problem(password)
        if problem is not None:
            raise InvalidArgument(field, problem)
        if stage_id is not None and not _is_stage_id(stage_id):
            raise InvalidArgument("stage_id", "must be a UUID")
        return replace(self, pending_password=password, pending_stage_id=stage_id)

    def with_staged_committed(self) -> PostgresTarget:
        """The staged password made current, remembering its stage; ValueError if none."""
        if self.pending_password is None:
            raise ValueError("no password is staged")
        return replace(
            self,
            password=self.pending_password,
            password_stage_id=self.pending_stage_id,
            **_UNSTAGED,
        )

    def role_settings(self, name: str) -> DynamicSettings | None:
        """The settings of the connection role ``name``; None when there is no such role."""
        if name == DEFAULT_ROLE:
            return self.dynamic
        return dict(self.roles).get(name)

    def with_role(self, name: str, settings: DynamicSettings) -> PostgresTarget:
        """The target with the role ``name`` added or replaced ("default" is ``dynamic``)."""
        if self.dynamic is None:
            raise ValueError("only a dynamic connection has roles")
        if name == DEFAULT_ROLE:
            return replace(self, dynamic=settings)
        return replace(self, roles=tuple(sorted({**dict(self.roles), name: settings}.items())))

    def without_role(self, name: str) -> PostgresTarget:
        """The target without the named role (never "default", which every dynamic
        connection keeps)."""
        if name == DEFAULT_ROLE:
            raise ValueError("the default role cannot be removed")
        return replace(self, roles=tuple(item for item in self.roles if item[0] != name))

    def with_login_of(self, edited: PostgresTarget) -> PostgresTarget:
        """``edited``'s server, login and TLS settings, keeping this target's dynamic and
        preview settings, its roles, its staged rotation and the stage its password came
        from (for an edit that kept the password)."""
        return replace(
            edited,
            dynamic=self.dynamic,
            roles=self.roles,
            preview=self.preview,
            pending_password=self.pending_password,
            pending_stage_id=self.pending_stage_id,
            password_stage_id=self.password_stage_id,
        )


_UNSTAGED: Final[dict[str, Any]] = {"pending_password": None, "pending_stage_id": None}


def _roles_from_payload(section: Any) -> tuple[tuple[str, DynamicSettings], ...]:
    """The ``roles`` section: named roles other than "default", each under every rule again."""
    if not isinstance(section, dict):
        raise InvalidArgument("payload.roles", "must be an object")
    roles = []
    for name, settings in sorted(section.items()):
        if name == DEFAULT_ROLE or not ROLE_NAME_RULE.fullmatch(name):
            raise InvalidArgument("payload.roles", "holds a role that is not a valid role name")
        roles.append((name, DynamicSettings.from_payload(settings)))
    return tuple(roles)


def _stage_id_field(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not (isinstance(value, str) and _is_stage_id(value)):
        raise _malformed(f"{name} is not a stage id")
    return value


def _is_stage_id(value: str) -> bool:
    """Whether ``value`` is a stage id: a UUID in its canonical lower-case form."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def from_fields(
    *,
    host: str,
    port: int | None,
    database: str,
    username: str,
    password: str,
    ssl_mode: str,
    ssl_root_cert: str = "",
    prefix: str = "fields",
) -> PostgresTarget:
    """The target a user entered in the form; ``port=None`` means 5432.

    ``ssl_root_cert`` is the CA bundle's PEM text, "" for none. Raises ``InvalidArgument``
    on ``f"{prefix}.<field>"`` for the first field that breaks a rule. Messages state the
    rule and never echo the password.
    """

    def fail(part: str, message: str) -> NoReturn:
        raise InvalidArgument(f"{prefix}.{part}", message)

    if port is not None and (not isinstance(port, int) or isinstance(port, bool)):
        fail("port", "must be an integer between 1 and 65535")
    mode = _ssl_mode(ssl_mode)
    target = _validated(
        host=host,
        port=DEFAULT_PORT if port is None else port,
        database=database,
        username=username,
        password=password,
        ssl_mode=mode,
        fail=fail,
        ssl_problem=lambda message: fail("ssl_mode", message),
    )
    return with_root_cert(target, ssl_root_cert, field=f"{prefix}.ssl_root_cert")


def from_dynamic(
    *,
    host: str,
    port: int | None,
    database: str,
    ssl_mode: str,
    privileged_username: str,
    privileged_password: str,
    default_ttl_seconds: int,
    max_ttl_seconds: int,
    creation_statements: Sequence[str],
    revocation_statements: Sequence[str],
    group_role: str,
    ssl_root_cert: str = "",
    prefix: str = "dynamic",
) -> PostgresTarget:
    """A dynamic connection: the privileged role's login under the form's rules, plus settings.

    Raises ``InvalidArgument`` naming ``f"{prefix}.<field>"`` with the request's own field
    names (``privileged_username``, ``privileged_password``).
    """
    renamed = {
        f"{prefix}.username": f"{prefix}.privileged_username",
        f"{prefix}.password": f"{prefix}.privileged_password",
    }
    try:
        login = from_fields(
            host=host,
            port=port,
            database=database,
            username=privileged_username,
            password=privileged_password,
            ssl_mode=ssl_mode,
            ssl_root_cert=ssl_root_cert,
            prefix=prefix,
        )
    except InvalidArgument as error:
        raise InvalidArgument(renamed.get(error.field, error.field), error.description) from None
    settings = dynamic_settings(
        default_ttl_seconds=default_ttl_seconds,
        max_ttl_seconds=max_ttl_seconds,
        creation_statements=creation_statements,
        revocation_statements=revocation_statements,
        group_role=group_role,
        prefix=prefix,
    )
    return replace(login, dynamic=settings)


def from_dsn(
    dsn: str, ssl_mode: str | None, *, ssl_root_cert: str = "", prefix: str = "dsn"
) -> PostgresTarget:
    """The target in a ``postgresql://`` (or ``postgres://``) URI, for programmatic use.

    The URI must name exactly one host, a user, a password and a database; its only allowed
    query parameter is ``sslmode``. The SSL mode comes from the URI or from ``ssl_mode``
    (``None`` when not given; an empty string is an invalid value, not an absent one), and
    the two must agree when both are given. Percent-decoding is libpq's, via psycopg. The
    CA bundle, for the verify modes, comes as PEM text in ``ssl_root_cert``, never from the
    URI (whose ``sslrootcert`` would name a file on the agent's machine).

    Raises ``InvalidArgument`` on ``f"{prefix}.uri"`` for anything about the URI and on
    ``f"{prefix}.ssl_mode"`` for the separate argument. No message quotes the URI or any
    part of it: a malformed URI could put the password anywhere.
    """
    uri_field = f"{prefix}.uri"

    def fail_uri(message: str) -> NoReturn:
        raise InvalidArgument(uri_field, message)

    def fail_part(part: str, message: str) -> NoReturn:
        fail_uri(f"{_PART_LABELS[part]} {message}")

    # Surrounding whitespace is copy-paste residue, never meaningful in a URI.
    dsn = dsn.strip()
    if not dsn:
        fail_uri("is required")
    if len(dsn) > MAX_DSN_LENGTH:
        fail_uri(f"must be at most {MAX_DSN_LENGTH} characters")
    if has_control_characters(dsn):
        # libpq reads a C string, so a NUL would silently cut the URI short.
        fail_uri("must not contain control characters; percent-encode them")
    if not dsn.startswith(_SCHEMES):
        if "=" in dsn and "://" not in dsn:
            fail_uri("key=value connection strings are not supported; use a postgresql:// URI")
        fail_uri("must start with postgresql:// or postgres://")
    try:
        # Parsed from a string, every value is a str; the dict type also allows kwargs' ints.
        parsed = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except Exception:  # any parse failure is the same user mistake
        # psycopg's message can quote the URI, password included; it is dropped on purpose.
        fail_uri(
            "is not a valid postgresql:// URI; check its percent-encoding and that "
            "sslmode is its only query parameter"
        )

    # Every key here passed libpq's parser, so it is a libpq keyword (or JDBC's "ssl") and
    # naming it cannot echo anything the user typed as a secret. The pattern check guards that
    # promise should the query scan ever disagree with libpq.
    query_keys = _query_keys(dsn)
    for key in query_keys:
        if not _KEYWORD.fullmatch(key):
            fail_uri("has unsupported query parameters; sslmode is the only supported parameter")
        if key == "sslrootcert":
            fail_uri(
                "parameter 'sslrootcert' would name a file on the agent's machine; give the"
                " CA certificate's PEM text in ssl_root_cert instead"
            )
        if key in _URI_PART_PARAMETERS:
            part = _URI_PART_PARAMETERS[key]
            fail_uri(
                f"parameter '{key}' conflicts with the {part} in the URI; "
                f"give the {part} only in the URI itself"
            )
        if key != "sslmode":
            fail_uri(f"unsupported parameter '{key}'; sslmode is the only supported parameter")
    if query_keys.count("sslmode") > 1:
        fail_uri("parameter 'sslmode' is given more than once")
    if set(parsed) - {"host", "port", "dbname", "user", "password", "sslmode"}:
        # Defence in depth: a key libpq produced that the query scan above did not see.
        fail_uri("has unsupported parameters; sslmode is the only supported parameter")

    host = parsed.get("host", "")
    port_text = parsed.get("port", "")
    if "," in host or "," in port_text:
        fail_uri("must name a single host; multiple hosts are not supported")
    for key, what in (
        ("user", "user name"),
        ("password", "password"),
        ("host", "host"),
        ("dbname", "database name"),
    ):
        if not parsed.get(key):
            fail_uri(f"is missing the {what}; expected postgresql://user:password@host/database")

    port: int = DEFAULT_PORT
    if port_text:
        if not _DIGITS.fullmatch(port_text):
            fail_part("port", "must be a number between 1 and 65535")
        port = int(port_text)

    mode = _dsn_ssl_mode(parsed.get("sslmode"), ssl_mode, prefix)
    target = _validated(
        host=host,
        port=port,
        database=parsed["dbname"],
        username=parsed["user"],
        password=parsed["password"],
        ssl_mode=mode,
        fail=fail_part,
        # Unreachable in practice: _dsn_ssl_mode already checked the mode.
        ssl_problem=lambda message: fail_part("ssl_mode", message),
    )
    return with_root_cert(target, ssl_root_cert, field=f"{prefix}.ssl_root_cert")


_PART_LABELS = {
    "host": "host",
    "port": "port",
    "database": "database name",
    "username": "user name",
    "password": "password",
    "ssl_mode": "sslmode",
}


def _validated(
    *,
    host: str,
    port: int,
    database: str,
    username: str,
    password: str,
    ssl_mode: str,
    fail: Callable[[str, str], NoReturn],
    ssl_problem: Callable[[str], NoReturn],
) -> PostgresTarget:
    """Applies every field rule in form order; ``fail(part, message)`` reports the first."""
    for part, problem in (
        ("host", _host_problem(host)),
        ("port", _port_problem(port)),
        ("database", _name_problem(database)),
        ("username", _name_problem(username)),
        ("password", password_problem(password)),
    ):
        if problem is not None:
            fail(part, problem)
    problem = _ssl_mode_problem(ssl_mode)
    if problem is not None:
        ssl_problem(problem)
    return PostgresTarget(
        host=host,
        port=port,
        database=database,
        username=username,
        password=password,
        ssl_mode=ssl_mode,
    )


def _host_problem(host: str) -> str | None:
    """What is wrong with a host (None if nothing); messages never quote the host."""
    if not host.strip():
        return "is required"
    if len(host) > MAX_HOST_LENGTH:
        return f"must be at most {MAX_HOST_LENGTH} characters"
    if has_control_characters(host):
        return "must not contain control characters"
    if any(ch.isspace() for ch in host):
        return "must not contain whitespace"
    if "," in host:
        return "must be a single host; multiple hosts are not supported"
    if "/" in host:
        return "must be a hostname or IP address, not a Unix socket path; the agent uses TCP"
    if host.startswith("["):
        return "must be written without [ ]; brackets around IPv6 addresses belong in a URI"
    if _is_ip_address(host) or _is_hostname(host):
        return None
    name, colon, port = host.partition(":")
    if colon and port.isdecimal() and (_is_ip_address(name) or _is_hostname(name)):
        return "must not include a port; enter the port in its own field"
    if "%" in host and _is_ip_address(host.split("%", 1)[0]):
        # A zone id (fe80::1%eth0) names an interface on whichever machine runs the agent,
        # which the user cannot know; refuse rather than connect somewhere surprising.
        return "must not carry an IPv6 zone id (%...); zone ids name a local interface"
    return (
        "must be a hostname (letters, digits, hyphens and dots; internationalized names "
        "in punycode) or an IPv4 or IPv6 address"
    )


def _is_ip_address(host: str) -> bool:
    """An IPv4 or IPv6 literal without a zone id."""
    if "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_hostname(host: str) -> bool:
    """RFC 1123 labels, one optional trailing dot, and a final label that is not all digits."""
    name = host.removesuffix(".")
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return False
    # An all-digit last label means a mistyped IPv4 address (256.1.1.1, 127.1), not a name.
    return not labels[-1].isdigit()


def _port_problem(port: int) -> str | None:
    if not 1 <= port <= 65535:
        return "must be between 1 and 65535"
    return None


def _name_problem(name: str) -> str | None:
    """Rules shared by the database name and the user name."""
    if not name.strip():
        return "is required"
    # Checked before the byte length: lone surrogates (category Cs) cannot be encoded.
    if has_control_characters(name):
        return "must not contain control or invisible format characters"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes in UTF-8 (the Postgres name limit)"
    return None


def password_problem(password: str) -> str | None:
    """What is wrong with a password (None if nothing); never quotes it."""
    # Only NUL is refused: libpq sends the password as a C string. Every other character is
    # legal in a Postgres password, and refusing it would lock out existing users.
    if not password:
        return "is required"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if "\x00" in password:
        return "must not contain NUL characters"
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate can come from a Python caller (never from protobuf); libpq could
        # not send it, and the payload would seal a password nobody can use.
        return "must be valid Unicode text (no unpaired surrogates)"
    return None


def _ssl_mode(value: str) -> str:
    """Normalizes case and surrounding spaces; the rule itself is in ``_ssl_mode_problem``."""
    return value.strip().lower()


def _ssl_mode_problem(mode: str) -> str | None:
    if mode in SSL_MODES:
        return None
    if not mode:
        return f"is required; must be {_SSL_CHOICES}"
    return f"must be {_SSL_CHOICES}"


def with_root_cert(target: PostgresTarget, pem: str, *, field: str) -> PostgresTarget:
    """``target`` with the CA bundle in ``pem`` ("" for none), checked against its SSL mode.

    The verify modes need a bundle and the others refuse one: a bundle that libpq would not
    use (or, with require, would use without the user asking) must not look like a check.
    Raises ``InvalidArgument`` on ``field``; messages never quote the PEM.
    """
    mode = target.ssl_mode
    if not pem.strip():
        if mode in VERIFY_MODES:
            raise InvalidArgument(
                field,
                f"is required with SSL mode {mode}: give the PEM text of the CA certificate(s)"
                " that sign the server's certificate (your provider's CA bundle)",
            )
        return replace(target, ssl_root_cert=None)
    if mode not in VERIFY_MODES:
        raise InvalidArgument(
            field,
            f"is used only with SSL mode verify-ca or verify-full, not {mode}; remove it, or"
            " choose one of those modes",
        )
    try:
        bundle = parse_ca_bundle(pem)
    except CaBundleError as error:
        raise InvalidArgument(field, str(error)) from None
    return replace(target, ssl_root_cert=bundle)


def _dsn_ssl_mode(in_uri: str | None, argument: str | None, prefix: str) -> str:
    """The one SSL mode of a DSN request, from the URI's sslmode and/or the separate field."""
    uri_mode = None if in_uri is None else _ssl_mode(in_uri)
    if uri_mode is not None:
        problem = _ssl_mode_problem(uri_mode)
        if problem is not None:
            raise InvalidArgument(f"{prefix}.uri", f"sslmode {problem}")
    arg_mode = None if argument is None else _ssl_mode(argument)
    if arg_mode is not None:
        problem = _ssl_mode_problem(arg_mode)
        if problem is not None:
            raise InvalidArgument(f"{prefix}.ssl_mode", problem)
    if uri_mode is not None and arg_mode is not None and uri_mode != arg_mode:
        raise InvalidArgument(f"{prefix}.ssl_mode", "conflicts with sslmode in the URI")
    mode = uri_mode or arg_mode
    if mode is None:
        raise InvalidArgument(
            f"{prefix}.ssl_mode",
            f"is required: set it, or add sslmode to the URI; must be {_SSL_CHOICES}",
        )
    return mode


def _query_keys(uri: str) -> list[str]:
    """The percent-decoded parameter names in a URI's query, in order, duplicates kept.

    ``conninfo_to_dict`` merges the query into the URI's own parts, so it cannot say where a
    value came from. This finds the query the way libpq's URI parser does: user info runs to
    the first '@' before any '/', a bracketed IPv6 host to its ']', and the query starts at
    the next '?'. Only called on URIs libpq has already parsed.
    """
    rest = uri.split("://", 1)[1]
    start = 0
    stop = next((i for i, ch in enumerate(rest) if ch in "@/"), len(rest))
    if stop < len(rest) and rest[stop] == "@":
        start = stop + 1
    if rest.startswith("[", start):
        close = rest.find("]", start)
        start = len(rest) if close == -1 else close + 1
    mark = rest.find("?", start)
    if mark == -1:
        return []
    return [
        unquote(pair.split("=", 1)[0], errors="replace")
        for pair in rest[mark + 1 :].split("&")
        if pair
    ]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook refusing duplicate keys, which would make a payload ambiguous."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _malformed(problem: str) -> CredentialsUnreadable:
    return CredentialsUnreadable(
        f"the stored credential payload is malformed: {problem}",
        reason="CREDENTIALS_PAYLOAD_MALFORMED",
    )
