"""The Postgres kind: a database with a login, a source and a destination.

It wraps services/connections/postgres_target.py (the rules) and holds the protobuf
translation of a Postgres connection's request, metadata and resolved credentials.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from services.connections.kinds.base import Payload, Purpose
from services.connections.postgres_target import (
    PostgresTarget,
    from_dsn,
    from_dynamic,
    from_fields,
)
from services.connections.preview_settings import PreviewSettings, preview_settings
from services.connections.store import ConnectionRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.servicing import timestamp
from sevvo.runtime.workload_grants import DEFAULT_ROLE

SSL_TO_PB = {
    "disable": pb.SSL_MODE_DISABLE,
    "require": pb.SSL_MODE_REQUIRE,
    "verify-ca": pb.SSL_MODE_VERIFY_CA,
    "verify-full": pb.SSL_MODE_VERIFY_FULL,
}
_SSL_FROM_PB: dict[int, str] = {v: k for k, v in SSL_TO_PB.items()}
_DYNAMIC_COLUMNS = (
    "default_ttl_seconds",
    "max_ttl_seconds",
    "group_role",
    "creation_statement_count",
    "revocation_statement_count",
)


def ssl_mode(value: int) -> str:
    """The SSL mode's name; "" for an unknown or unset value, which the rules refuse."""
    return _SSL_FROM_PB.get(value, "")


def preview_pb(settings: dict[str, Any] | PreviewSettings | None) -> pb.PreviewSettings | None:
    """The preview settings as users and agents see them; None when none were set."""
    if settings is None:
        return None
    if isinstance(settings, dict):
        settings = PreviewSettings.from_payload(settings, field="preview_settings")
    return pb.PreviewSettings(
        allowed_functions=settings.allowed_functions, max_plan_cost=settings.max_plan_cost
    )


def request_preview(
    message: pb.PostgresFields | pb.PostgresDsn | pb.PostgresDynamic, prefix: str
) -> PreviewSettings | None:
    """The validated preview settings of a request's credentials, if it has them."""
    if not message.HasField("preview"):
        return None
    return preview_settings(
        list(message.preview.allowed_functions),
        message.preview.max_plan_cost,
        prefix=f"{prefix}.preview",
    )


def target_from_request(request: pb.CreateConnectionRequest) -> tuple[PostgresTarget, str]:
    """The validated target and credential mode of a Postgres create request."""
    target, mode = _login_from_request(request)
    details: pb.PostgresFields | pb.PostgresDsn | pb.PostgresDynamic = getattr(request, mode)
    return replace(target, preview=request_preview(details, mode)), mode


def _login_from_request(request: pb.CreateConnectionRequest) -> tuple[PostgresTarget, str]:
    which = request.WhichOneof("credentials")
    if which == "fields":
        f = request.fields
        target = from_fields(
            host=f.host,
            port=f.port if f.HasField("port") else None,
            database=f.database,
            username=f.username,
            password=f.password,
            ssl_mode=ssl_mode(f.ssl_mode),
            ssl_root_cert=f.ssl_root_cert,
            prefix="fields",
        )
        return target, "fields"
    if which == "dsn":
        dsn = request.dsn
        target = from_dsn(
            dsn.uri, ssl_mode(dsn.ssl_mode) or None, ssl_root_cert=dsn.ssl_root_cert, prefix="dsn"
        )
        return target, "dsn"
    if which == "dynamic":
        d = request.dynamic
        target = from_dynamic(
            host=d.host,
            port=d.port if d.HasField("port") else None,
            database=d.database,
            ssl_mode=ssl_mode(d.ssl_mode),
            privileged_username=d.privileged_username,
            privileged_password=d.privileged_password,
            default_ttl_seconds=d.default_ttl_seconds,
            max_ttl_seconds=d.max_ttl_seconds,
            creation_statements=list(d.creation_statements),
            revocation_statements=list(d.revocation_statements),
            group_role=d.group_role,
            ssl_root_cert=d.ssl_root_cert,
            prefix="dynamic",
        )
        return target, "dynamic"
    raise InvalidArgument("credentials", "one of fields, dsn or dynamic is required")


def dynamic_columns(target: PostgresTarget) -> dict[str, Any]:
    """The connection row's display copies of a target's dynamic settings (all None if none)."""
    settings = target.dynamic
    if settings is None:
        return dict.fromkeys(_DYNAMIC_COLUMNS)
    return {
        "default_ttl_seconds": settings.default_ttl_seconds,
        "max_ttl_seconds": settings.max_ttl_seconds,
        "group_role": settings.group_role,
        "creation_statement_count": len(settings.creation_statements),
        "revocation_statement_count": len(settings.revocation_statements),
    }


def preview_column(target: PostgresTarget) -> dict[str, Any] | None:
    """The connection row's display copy of a target's preview settings."""
    return None if target.preview is None else target.preview.to_payload()


def root_certs_column(target: PostgresTarget) -> list[dict[str, str]] | None:
    """The connection row's display summary of a target's CA bundle (None without one)."""
    return None if target.ssl_root_cert is None else target.ssl_root_cert.summary()


def _certificate_pb(summary: dict[str, str]) -> pb.CertificateSummary:
    """One CA certificate's display copy, as stored in the connection row."""
    return pb.CertificateSummary(
        subject=summary["subject"],
        sha256_fingerprint=summary["sha256_fingerprint"],
        expire_time=timestamp(datetime.fromisoformat(summary["expire_time"])),
    )


def _dynamic_summary(row: ConnectionRow) -> pb.DynamicSettingsSummary | None:
    if row.credential_mode != "dynamic":
        return None
    return pb.DynamicSettingsSummary(
        default_ttl_seconds=row.default_ttl_seconds or 0,
        max_ttl_seconds=row.max_ttl_seconds or 0,
        group_role=row.group_role or "",
        creation_statement_count=row.creation_statement_count or 0,
        revocation_statement_count=row.revocation_statement_count or 0,
    )


class PostgresKind:
    """A PostgreSQL database."""

    name = "postgres"
    label = "Postgres"
    connection_type = pb.CONNECTION_TYPE_POSTGRES
    purposes = (Purpose.SOURCE, Purpose.DESTINATION, Purpose.INCREMENTAL_DESTINATION)
    request_fields = ("fields", "dsn", "dynamic")
    payload_type = PostgresTarget

    def from_request(self, request: pb.CreateConnectionRequest) -> tuple[Payload, str]:
        """The validated target and credential mode (fields, dsn or dynamic)."""
        return target_from_request(request)

    def from_json(self, data: bytes) -> Payload:
        """The sealed target, every rule checked again."""
        return PostgresTarget.from_json(data)

    def columns(self, payload: Payload) -> dict[str, Any]:
        """Server, login and TLS settings, dynamic and preview settings, the CA summary."""
        target = _target(payload)
        return {
            "host": target.host,
            "port": target.port,
            "database": target.database,
            "username": target.username,
            "ssl_mode": target.ssl_mode,
            **dynamic_columns(target),
            "preview_settings": preview_column(target),
            "ssl_root_certs": root_certs_column(target),
            "details": None,
        }

    def describe(self, row: ConnectionRow, message: pb.Connection) -> None:
        """safe_metadata, the dynamic summary and the preview settings."""
        message.safe_metadata.CopyFrom(
            pb.PostgresMetadata(
                host=row.host or "",
                port=row.port or 0,
                database=row.database or "",
                username=row.username or "",
                ssl_mode=SSL_TO_PB.get(row.ssl_mode or "", pb.SSL_MODE_UNSPECIFIED),
                ssl_root_certs=[_certificate_pb(c) for c in row.ssl_root_certs or ()],
            )
        )
        summary = _dynamic_summary(row)
        if summary is not None:
            message.dynamic.CopyFrom(summary)
        preview = preview_pb(row.preview_settings)
        if preview is not None:
            message.preview.CopyFrom(preview)

    def resolved(self, payload: Payload, role: str) -> pb.ResolveConnectionCredentialsResponse:
        """The login (and staged password), preview settings and the role's dynamic settings."""
        target = _target(payload)
        settings = target.dynamic
        return pb.ResolveConnectionCredentialsResponse(
            postgres=pb.PostgresCredentials(
                host=target.host,
                port=target.port,
                database=target.database,
                username=target.username,
                password=target.password,
                ssl_mode=SSL_TO_PB[target.ssl_mode],
                pending_password=target.pending_password,
                pending_stage_id=target.pending_stage_id or "",
                ssl_root_cert=target.ssl_root_cert.pem if target.ssl_root_cert else "",
            ),
            preview=preview_pb(target.preview),
            dynamic=None
            if settings is None
            else pb.DynamicSettings(
                default_ttl_seconds=settings.default_ttl_seconds,
                max_ttl_seconds=settings.max_ttl_seconds,
                creation_statements=settings.creation_statements,
                revocation_statements=settings.revocation_statements,
                group_role=settings.group_role,
                role=role or DEFAULT_ROLE,
            ),
        )


def _target(payload: Payload) -> PostgresTarget:
    if not isinstance(payload, PostgresTarget):
        raise TypeError("a Postgres connection's payload is a PostgresTarget")
    return payload


KIND = PostgresKind()
