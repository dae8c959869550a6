"""The agent's bearer: exchanged from the deployment token, renewed before it expires.

The agent fails safe: it runs work only while it can prove it is still authorised. The control
plane may be unreachable for a while (network, deploys), so checks and exchanges back off and
retry, but only until the bearer in hand expires. A revoked or unknown deployment is final
(DeploymentRevoked); any other answer that is not worth retrying, or a bearer that expired
without being renewed, is final too (AuthorisationLost). Either way the agent stops polling.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import grpc

from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.deployment_token import DeploymentCredentials, wrap
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

_FINAL_REASONS = {"DEPLOYMENT_REVOKED", "INVALID_DEPLOYMENT_TOKEN"}
# Answers that say nothing about this agent's authorisation: the control plane (or the way to
# it) is down, overloaded or failing. Everything else is an answer about the agent itself.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}


class DeploymentRevoked(Exception):
    """The control plane no longer accepts this deployment; only a new token helps."""


class AuthorisationLost(Exception):
    """The agent cannot prove it is still authorised, so it must stop running work.

    Raised when the control plane answers a check or an exchange with an error that is not
    worth retrying (PERMISSION_DENIED, FAILED_PRECONDITION, ...), or when the bearer expires
    while the control plane cannot be reached to renew it.
    """


class BearerSession:
    """Holds the current bearer for every outgoing call and keeps it fresh."""

    def __init__(
        self,
        auth: auth_pb2_grpc.AuthServiceStub,
        credentials: DeploymentCredentials,
        *,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = auth
        self._token = wrap(credentials)
        self._max_backoff = max_backoff
        self._clock = clock
        self._bearer: str | None = None
        self._expires_at = 0.0
        self._issued_at = 0.0
        self.org_id = ""
        self.deployment_id = credentials.deployment_id
        # Temporal's token (worker rights on the org's namespace only) and that namespace,
        # renewed with the bearer; ``on_renewed`` hands a new token to the Temporal client.
        self.temporal_token = ""
        self.temporal_namespace = ""
        self.on_renewed: Callable[[], None] | None = None

    def bearer(self) -> str | None:
        """The current bearer (None before the first exchange); read on every call."""
        return self._bearer

    async def _exchange_once(self) -> None:
        response = await self._auth.ExchangeDeploymentToken(
            auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=self._token), timeout=10
        )
        self._bearer = response.bearer_token
        self._issued_at = self._clock()
        self._expires_at = response.expire_time.seconds + response.expire_time.nanos / 1e9
        self.org_id = response.org_id
        self.temporal_token = response.temporal_token
        self.temporal_namespace = response.temporal_namespace
        if self.on_renewed is not None:
            self.on_renewed()

    async def exchange(self, *, deadline: float | None = None) -> None:
        """Exchanges the token, retrying with backoff while the control plane is unreachable.

        With a ``deadline`` (the expiry of the bearer in hand, by ``clock``) retries stop
        there with AuthorisationLost; without one (no bearer yet, no work running) they go
        on. A revoked or unknown deployment raises DeploymentRevoked, and any other answer
        that is not worth retrying raises AuthorisationLost.
        """
        delay = 1.0
        while True:
            try:
                await self._exchange_once()
                log.info(
                    "deployment token exchanged",
                    org_id=self.org_id,
                    deployment_id=self.deployment_id,
                )
                return
            except grpc.aio.AioRpcError as exc:
                details = error_details(exc)
                if details.reason in _FINAL_REASONS or exc.code() in {
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                }:
                    raise DeploymentRevoked(
                        "the control plane rejected this agent's deployment token "
                        f"({details.reason or exc.code().name}): it was revoked or is not "
                        "valid; create a new deployment and configure its token"
                    ) from None
                if exc.code() not in _RETRYABLE:
                    raise _refused("the bearer token renewal", exc) from None
                if deadline is not None and self._clock() >= deadline:
                    raise _expired(exc) from None
                log.warning(
                    "control plane unreachable; retrying",
                    code=exc.code().name,
                    retry_in_s=round(delay, 1),
                )
            pause = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter only
            if deadline is not None:
                # One last attempt right at the expiry, rather than a sleep past it.
                pause = max(min(pause, deadline - self._clock()), 0.0)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._max_backoff)

    async def keep_fresh(self, check_interval: float = 15.0) -> None:
        """Renews the bearer at two thirds of its lifetime and checks it in between.

        The check (GetCaller) notices a revoked deployment within ``check_interval`` instead
        of at the next renewal; the exchange that follows then raises DeploymentRevoked. It
        returns only by raising: DeploymentRevoked, or AuthorisationLost when the control
        plane refuses a check or renewal for another reason, or stays unreachable until the
        bearer expires. The caller must then stop polling and running work.
        """
        while True:
            renew_at = self._issued_at + (self._expires_at - self._issued_at) * 2 / 3
            await asyncio.sleep(max(min(renew_at - self._clock(), check_interval), 0.5))
            if self._clock() >= renew_at:
                await self.exchange(deadline=self._expires_at)
                continue
            try:
                await self._auth.GetCaller(auth_pb2.GetCallerRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    log.warning(
                        "bearer token rejected; exchanging again", reason=error_details(exc).reason
                    )
                    await self.exchange(deadline=self._expires_at)
                elif exc.code() not in _RETRYABLE:
                    raise _refused("the authorisation check", exc) from None
                elif self._clock() >= self._expires_at:
                    raise _expired(exc) from None
                else:
                    log.warning(
                        "authorisation check failed; retrying until the bearer token expires",
                        code=exc.code().name,
                        expires_in_s=round(self._expires_at - self._clock(), 1),
                    )


def _refused(what: str, exc: grpc.aio.AioRpcError) -> AuthorisationLost:
    details = error_details(exc)
    return AuthorisationLost(
        f"the control plane refused {what} ({exc.code().name}"
        + (f", {details.reason}" if details.reason else "")
        + "), so this agent cannot prove it is still authorised"
    )


def _expired(exc: grpc.aio.AioRpcError) -> AuthorisationLost:
    return AuthorisationLost(
        "the bearer token expired and could not be renewed: the control plane stayed unreachable"
        f" ({exc.code().name}), so this agent cannot prove it is still authorised"
    )
