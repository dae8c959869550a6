"""A credential that stays valid while the block runs: renewed, then replaced before max TTL.

    async with managed_credentials("reporting-db", role="etl", ttl="1h") as cred:
        async for current in cred.changes():   # or on_change=..., or cred.current
            await reconnect(current.conninfo)

The two patterns people write by hand against Vault: renew the lease in the background (at
2/3 of its TTL by default), and when the next renewal would pass the lease's max TTL, borrow
a new credential, hand it over, and revoke the old one after a grace period so work still
using it can finish. Everything is revoked when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc

from sevvo.agent.v1 import credentials_pb2, credentials_pb2_grpc
from sevvo_client.credentials import (
    CALL_TIMEOUT_SECONDS,
    DEFAULT_PURPOSE,
    Credential,
    generate_request,
)
from sevvo_client.durations import parse_duration
from sevvo_client.errors import (
    AgentUnavailable,
    CredentialError,
    PastMaxTTL,
    from_rpc_error,
)
from sevvo_client.settings import ClientSettings, resolve

log = logging.getLogger(__name__)

Callback = Callable[[Credential], Awaitable[None] | None]
RETRY_SECONDS = 5.0
"""The longest wait between retries while the agent does not answer."""


class AsyncCredentialClient:
    """asyncio calls to the agent's CredentialService, errors mapped to CredentialError."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._channel = settings.agent.aio_channel()
        self._stub = credentials_pb2_grpc.CredentialServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def generate(self, request: credentials_pb2.GenerateCredentialRequest) -> Credential:
        """Borrows a credential."""
        try:
            response = await self._stub.GenerateCredential(
                request, metadata=self._settings.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token,)) from None
        return Credential.from_proto(response)

    async def renew(self, credential: Credential, increment_seconds: int) -> Credential:
        """Moves the credential's expiry to now + ``increment_seconds``."""
        try:
            lease = await self._stub.RenewCredential(
                credentials_pb2.RenewCredentialRequest(
                    lease_id=credential.lease_id, increment_seconds=increment_seconds
                ),
                metadata=self._settings.metadata,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token, credential.password)) from None
        return credential.renewed(lease)

    async def revoke(self, lease_id: str) -> None:
        """Gives a credential back; revoking twice is not an error."""
        try:
            await self._stub.RevokeCredential(
                credentials_pb2.RevokeCredentialRequest(lease_id=lease_id),
                metadata=self._settings.metadata,
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, secrets=(self._settings.token,)) from None


class ManagedCredential:
    """The live credential of a ``managed_credentials`` block; ``current`` is always the
    newest. Renewals update its times; a replacement is announced to ``on_change`` and to
    ``changes()``."""

    def __init__(
        self,
        client: AsyncCredentialClient,
        request: credentials_pb2.GenerateCredentialRequest,
        *,
        renew_fraction: float,
        grace_seconds: float,
        on_change: Callback | None,
        on_renew: Callback | None,
    ) -> None:
        self._client = client
        self._request = request
        self._renew_fraction = renew_fraction
        self._grace_seconds = grace_seconds
        self._on_change = on_change
        self._on_renew = on_renew
        self._current: Credential | None = None
        self._ttl_seconds = request.ttl_seconds
        self._renewed_at = datetime.now(UTC)
        self._changed = asyncio.Event()
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: list[str] = []
        self.renewals = 0
        """How many renewals succeeded."""
        self.borrows = 0
        """How many credentials were borrowed, the first included."""
        self.last_error: CredentialError | None = None
        """The latest failure of a background renewal or borrow, until one succeeds."""

    @property
    def current(self) -> Credential:
        """The credential to use now."""
        assert self._current is not None, "used outside its async with block"
        return self._current

    async def changes(self) -> AsyncIterator[Credential]:
        """Yields each new credential that replaces the current one, until the block ends."""
        while True:
            event = self._changed
            await event.wait()
            yield self.current

    async def start(self) -> None:
        """Borrows the first credential."""
        self._current = await self._client.generate(self._request)
        self._renewed_at = datetime.now(UTC)
        self.borrows = 1
        if not self._ttl_seconds:  # The role's default: learn it from the first lease.
            self._ttl_seconds = max(1, round(self._current.remaining().total_seconds()))

    async def run(self) -> None:
        """Keeps ``current`` valid until cancelled."""
        while True:
            credential = self.current
            lifetime = credential.expire_time - self._renewed_at
            renew_at = self._renewed_at + lifetime * self._renew_fraction
            await _sleep_until(renew_at)
            now = datetime.now(UTC)
            if now + timedelta(seconds=self._ttl_seconds) > credential.max_expire_time:
                await self._replace()
                continue
            try:
                self._current = await self._client.renew(credential, self._ttl_seconds)
            except PastMaxTTL:
                await self._replace()
                continue
            except CredentialError as exc:
                await self._back_off(exc, credential, "renewal")
                continue
            self._renewed_at = now
            self.renewals += 1
            self.last_error = None
            await _call(self._on_renew, self._current)

    async def _replace(self) -> None:
        """Borrows a new credential, announces it, and retires the old one after the grace."""
        old = self.current
        while True:
            try:
                new = await self._client.generate(self._request)
                break
            except CredentialError as exc:
                await self._back_off(exc, old, "new borrow")
        self._current = new
        self._renewed_at = datetime.now(UTC)
        self.borrows += 1
        self.last_error = None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        retire = asyncio.create_task(self._retire(old.lease_id, self._grace_seconds))
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)
        await _call(self._on_change, new)

    async def _back_off(self, error: CredentialError, credential: Credential, what: str) -> None:
        self.last_error = error
        remaining = credential.remaining().total_seconds()
        delay = max(0.2, min(RETRY_SECONDS, remaining / 4))
        level = logging.WARNING if isinstance(error, AgentUnavailable) else logging.ERROR
        log.log(
            level,
            "credential lease %s: %s failed (%s); retrying in %.1f s, %.0f s before it expires",
            credential.lease_id,
            what,
            error.reason,
            delay,
            remaining,
        )
        await asyncio.sleep(delay)

    async def _retire(self, lease_id: str, after: float) -> None:
        try:
            await asyncio.sleep(after)
        finally:
            # Also when cancelled at the block's end: the old lease is revoked at once then.
            await asyncio.shield(self._revoke_quietly(lease_id))

    async def _revoke_quietly(self, lease_id: str) -> None:
        try:
            await self._client.revoke(lease_id)
            self._retired.append(lease_id)
        except CredentialError as exc:
            log.warning(
                "could not revoke credential lease %s (%s); it expires on its own",
                lease_id,
                exc.reason,
            )

    async def close(self) -> None:
        """Revokes the current credential and any the grace period still keeps alive."""
        retiring = list(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        if self._current is not None:
            await self._revoke_quietly(self._current.lease_id)


@asynccontextmanager
async def managed_credentials(
    connection: str,
    role: str = "default",
    ttl: str | int | float | timedelta | None = "1h",
    purpose: str = DEFAULT_PURPOSE,
    *,
    on_change: Callback | None = None,
    on_renew: Callback | None = None,
    renew_fraction: float = 2 / 3,
    grace: str | int | float | timedelta = "30s",
    socket: str | os.PathLike[str] | None = None,
    address: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> AsyncIterator[ManagedCredential]:
    """Borrows a credential and keeps it valid in the background until the block ends.

    Renews at ``renew_fraction`` of each lease period; when a renewal would pass the lease's
    max TTL, borrows a new credential, calls ``on_change`` with it (a function or coroutine
    function), and revokes the old one ``grace`` later. On exit every credential is revoked.
    The agent and token are found as for ``sevvo_credentials``.
    """
    if not 0 < renew_fraction < 1:
        raise ValueError("renew_fraction must be between 0 and 1 (exclusive)")
    grace_seconds = (
        float(grace)
        if isinstance(grace, int | float) and not isinstance(grace, bool) and grace >= 0
        else float(parse_duration(grace))
    )
    settings = resolve(socket=socket, address=address, ca_file=ca_file, token=token)
    request = generate_request(connection, role, ttl, purpose)
    client = AsyncCredentialClient(settings)
    managed = ManagedCredential(
        client,
        request,
        renew_fraction=renew_fraction,
        grace_seconds=grace_seconds,
        on_change=on_change,
        on_renew=on_renew,
    )
    try:
        await managed.start()
        keeper = asyncio.create_task(managed.run(), name="sevvo-credential-keeper")
        try:
            yield managed
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await managed.close()
    finally:
        await client.close()


async def _sleep_until(when: datetime) -> None:
    delay = (when - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def _call(callback: Callback | None, credential: Credential) -> None:
    if callback is None:
        return
    try:
        result = callback(credential)
        if inspect.isawaitable(result):
            await result
    except Exception:
        # A failing callback must not stop the renewals that keep the credential alive.
        log.exception("credential callback failed")
