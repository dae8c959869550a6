"""A borrowed Postgres credential, and the blocking context manager that borrows one.

    with sevvo_credentials("reporting-db", role="readonly", ttl="2h") as creds:
        conn = psycopg.connect(creds.conninfo)

The credential is revoked when the block ends, however it ends.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from sevvo.agent.v1 import credentials_pb2, credentials_pb2_grpc
from sevvo_client.durations import parse_duration
from sevvo_client.errors import ConfigurationError, CredentialError, from_rpc_error
from sevvo_client.settings import ClientSettings, resolve

log = logging.getLogger(__name__)

DEFAULT_PURPOSE = "workload"
CALL_TIMEOUT_SECONDS = 30.0
"""Generate may wait on CREATE ROLE in the customer's database; the rest are quick."""


@dataclass(frozen=True)
class Credential:
    """A login role borrowed from the agent. ``password`` and ``conninfo`` stay out of repr."""

    lease_id: str
    username: str
    password: str = dataclasses.field(repr=False)
    conninfo: str = dataclasses.field(repr=False)
    host: str
    port: int
    database: str
    ssl_mode: str
    connection_id: str
    role: str
    expire_time: datetime
    max_expire_time: datetime

    @classmethod
    def from_proto(cls, message: credentials_pb2.Credential) -> Credential:
        """The credential in a GenerateCredential response."""
        return cls(
            lease_id=message.lease_id,
            username=message.username,
            password=message.password,
            conninfo=message.conninfo,
            host=message.host,
            port=message.port,
            database=message.database,
            ssl_mode=message.ssl_mode,
            connection_id=message.connection_id,
            role=message.role,
            expire_time=message.expire_time.ToDatetime(tzinfo=UTC),
            max_expire_time=message.max_expire_time.ToDatetime(tzinfo=UTC),
        )

    def renewed(self, lease: credentials_pb2.CredentialLease) -> Credential:
        """The same credential with the times a renewal returned."""
        return dataclasses.replace(
            self,
            expire_time=lease.expire_time.ToDatetime(tzinfo=UTC),
            max_expire_time=lease.max_expire_time.ToDatetime(tzinfo=UTC),
        )

    def remaining(self, now: datetime | None = None) -> timedelta:
        """How long the credential works before it must be renewed."""
        return self.expire_time - (now or datetime.now(UTC))


def generate_request(
    connection: str, role: str, ttl: str | int | float | timedelta | None, purpose: str
) -> credentials_pb2.GenerateCredentialRequest:
    """The request for a borrow; ConfigurationError for an empty connection or bad TTL."""
    if not connection:
        raise ConfigurationError("name the connection to borrow from (its name or UUID)")
    try:
        seconds = 0 if ttl is None else parse_duration(ttl)
    except ValueError as exc:
        raise ConfigurationError(f"ttl: {exc}") from None
    return credentials_pb2.GenerateCredentialRequest(
        connection=connection, role=role, ttl_seconds=seconds, purpose=purpose
    )


class CredentialClient:
    """Blocking calls to the agent's CredentialService, errors mapped to CredentialError."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._channel = settings.agent.channel()
        self._stub = credentials_pb2_grpc.CredentialServiceStub(self._channel)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> CredentialClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def generate(self, request: credentials_pb2.GenerateCredentialRequest) -> Credential:
        """Borrows a credential."""
        try:
            response = self._stub.GenerateCredential(
                request, metadata=self._settings.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token,)) from None
        return Credential.from_proto(response)

    def renew(
        self, credential: Credential, increment: str | int | timedelta | None = None
    ) -> Credential:
        """Moves the credential's expiry to now + ``increment`` (the role's default TTL if None)."""
        seconds = 0 if increment is None else parse_duration(increment)
        try:
            lease = self._stub.RenewCredential(
                credentials_pb2.RenewCredentialRequest(
                    lease_id=credential.lease_id, increment_seconds=seconds
                ),
                metadata=self._settings.metadata,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token, credential.password)) from None
        return credential.renewed(lease)

    def revoke(self, lease_id: str) -> None:
        """Gives the credential back; revoking twice is not an error."""
        try:
            self._stub.RevokeCredential(
                credentials_pb2.RevokeCredentialRequest(lease_id=lease_id),
                metadata=self._settings.metadata,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token,)) from None


@contextmanager
def sevvo_credentials(
    connection: str,
    role: str = "default",
    ttl: str | int | float | timedelta | None = "2h",
    purpose: str = DEFAULT_PURPOSE,
    *,
    socket: str | os.PathLike[str] | None = None,
    address: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> Iterator[Credential]:
    """Borrows a Postgres login role from the agent beside this service, revoking it on exit.

    ``ttl`` is a duration ("2h", "30m", "90s", seconds) or None for the role's default; it
    must fit the role's and the workload's maximum TTL. The agent is found at ``socket`` (a
    Unix socket path) or ``address`` (host:port, TLS, verified with ``ca_file``), else from
    SEVVO_AGENT_SOCKET / SEVVO_AGENT_ADDRESS; the token from ``token``, else
    SEVVO_WORKLOAD_TOKEN_FILE / SEVVO_WORKLOAD_TOKEN. Raises a CredentialError subclass.
    """
    settings = resolve(socket=socket, address=address, ca_file=ca_file, token=token)
    request = generate_request(connection, role, ttl, purpose)
    with CredentialClient(settings) as client:
        credential = client.generate(request)
        try:
            yield credential
        except BaseException:
            # The block's own exception matters more than a failed revoke: the role expires
            # on its own and the agent's reaper drops it.
            try:
                client.revoke(credential.lease_id)
            except CredentialError as exc:
                log.warning(
                    "could not revoke credential lease %s (%s); it expires at %s",
                    credential.lease_id,
                    exc.reason,
                    credential.expire_time.isoformat(),
                )
            raise
        client.revoke(credential.lease_id)
