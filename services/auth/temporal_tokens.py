"""Tokens for Temporal's stock JWT authorizer, and the JWKS document it fetches to verify them.

Temporal's default claim mapper reads ``sub``, ``exp`` and a ``permissions`` claim of
``<namespace>:<role>`` strings; its default key provider fetches a JWKS over HTTP(S) every
``refreshInterval`` and accepts RSA (RS256) and ECDSA (ES256) keys, not Ed25519. So these
tokens are signed with auth's second key set, ES256 (services/auth/keys.py), whose keys are
sealed at rest and rotated like the Ed25519 ones, published two Temporal refreshes before they
sign. An agent's token grants its own org's namespace only and expires with its bearer; the
orchestrator's grants one org's namespace per token. See deploy/k8s/README.md.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.auth.keys import SigningKeys
from services.auth.store import TEMPORAL_SIGNING_KEYS, AuthStore
from sevvo.runtime import temporal, validation
from sevvo.runtime.errors import FailedPrecondition, PermissionDenied
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import ISSUER

log = get_logger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
SERVICE_TOKEN_METADATA = temporal.SERVICE_TOKEN_METADATA
# The JWKS is read from Postgres at most this often, however often it is fetched.
_JWKS_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class TemporalToken:
    """A signed Temporal token, the namespace it grants and when it stops working."""

    token: str
    namespace: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(kid: str, public_point: bytes) -> dict[str, str]:
    """The JWK (RFC 7517/7518) of a P-256 public key stored as its uncompressed point."""
    if len(public_point) != 65 or public_point[0] != 4:
        raise ValueError("not an uncompressed P-256 point")
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(public_point[1:33]),
        "y": _b64(public_point[33:]),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    }


class TemporalTokenIssuer:
    """Signs Temporal tokens and publishes the keys that verify them."""

    def __init__(
        self,
        keys: SigningKeys,
        store: AuthStore,
        *,
        service_token: str | None,
        orchestrator_ttl: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = keys
        self._store = store
        self._service_token = service_token
        self._orchestrator_ttl = orchestrator_ttl
        self._clock = clock
        self._jwks: tuple[float, bytes] | None = None
        self._jwks_lock = threading.Lock()

    @staticmethod
    def _claims(
        subject: str, namespace: str, roles: tuple[str, ...], now: datetime, expires: datetime
    ) -> dict[str, Any]:
        return {
            "iss": ISSUER,
            "aud": temporal.TOKEN_AUDIENCE,
            "sub": subject,
            temporal.PERMISSIONS_CLAIM: temporal.permissions(namespace, roles),
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }

    def agent_claims(self, org_id: str, deployment_id: str, expires: datetime) -> dict[str, Any]:
        """An agent's claims: worker rights on its org's namespace, expiring with its bearer."""
        return self._claims(
            f"deployment:{deployment_id}",
            temporal.namespace_for(org_id),
            temporal.AGENT_ROLES,
            self._clock(),
            expires,
        )

    def for_agent_in_memory(
        self, org_id: str, deployment_id: str, expires: datetime
    ) -> TemporalToken | None:
        """An agent's token without I/O, or None when the keys must be reloaded first."""
        signed = self._keys.sign_in_memory(self.agent_claims(org_id, deployment_id, expires))
        if signed is None:
            return None
        return TemporalToken(signed, temporal.namespace_for(org_id), expires)

    def for_agent(self, org_id: str, deployment_id: str, expires: datetime) -> TemporalToken:
        """An agent's token; may read Postgres."""
        signed = self._keys.sign(self.agent_claims(org_id, deployment_id, expires))
        return TemporalToken(signed, temporal.namespace_for(org_id), expires)

    def for_orchestrator(self, presented: str | None, org_id: str) -> TemporalToken:
        """The orchestrator's token for one org's namespace, for a caller proving it is the
        orchestrator with the service token; may read Postgres.

        The org comes from the request: only the orchestrator holds the service token, and it
        asks for the org of the verified user (or agent) it acts for.
        """
        if self._service_token is None:
            raise FailedPrecondition(
                "auth has no service token configured (SEVVO_AUTH_SERVICE_TOKEN_FILE), so it"
                " issues no Temporal tokens to services",
                reason="SERVICE_TOKENS_DISABLED",
            )
        if presented is None or not hmac.compare_digest(
            presented.encode(), self._service_token.encode()
        ):
            raise PermissionDenied(
                "this method needs the service token", reason="SERVICE_TOKEN_INVALID"
            )
        org = str(validation.resource_id("org_id", org_id))
        now = self._clock()
        expires = now + self._orchestrator_ttl
        namespace = temporal.namespace_for(org)
        claims = self._claims(
            "service:orchestrator", namespace, temporal.ORCHESTRATOR_ROLES, now, expires
        )
        return TemporalToken(self._keys.sign(claims), namespace, expires)

    def jwks(self) -> dict[str, Any]:
        """The JWKS Temporal fetches: every key that signs or may still verify a token."""
        now = self._clock()
        return {
            "keys": [
                jwk(row.kid, row.public_key)
                for row in self._store.signing_keys(TEMPORAL_SIGNING_KEYS)
                if row.verify_until is None or row.verify_until > now
            ]
        }

    def jwks_document(self) -> bytes:
        """The JWKS as served, read from the store at most every few seconds."""
        with self._jwks_lock:
            cached = self._jwks
            if cached is None or time.monotonic() - cached[0] > _JWKS_CACHE_SECONDS:
                cached = (time.monotonic(), json.dumps(self.jwks()).encode())
                self._jwks = cached
            return cached[1]


class JwksServer:
    """A small HTTP server with one document: the JWKS at ``/.well-known/jwks.json``.

    Temporal's key provider fetches it with a plain ``http.Get``; it holds public keys only.
    Run inside the cluster (a ClusterIP Service), it needs no TLS of its own.
    """

    def __init__(self, issuer: TemporalTokenIssuer, host: str, port: int) -> None:
        document = issuer.jwks_document

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != JWKS_PATH:
                    self.send_error(404)
                    return
                try:
                    body = document()
                except Exception as exc:  # The store may be restarting; Temporal retries.
                    log.warning("jwks unavailable", error=type(exc).__name__)
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=5")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Fetched every refresh interval: not worth a line each time.

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (useful when asked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serves in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="jwks-http", daemon=True
        )
        self._thread.start()
        log.info("jwks serving", port=self.port, path=JWKS_PATH)

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
