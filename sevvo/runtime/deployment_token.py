"""The agent deployment token: an opaque string that unwraps into deployment credentials.

Auth mints it once, when an admin creates a deployment; the agent unwraps it and presents the
credentials in ExchangeDeploymentToken. The fixed prefix lets secret scanners and our log
redaction recognise a leaked token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from dataclasses import dataclass

from sevvo.runtime.errors import InvalidArgument

PREFIX = "sevvo_dt_"
_VERSION = 1
_SECRET_BYTES = 32
_TOKEN_RE = re.compile(r"^sevvo_dt_[A-Za-z0-9_-]{20,512}$")


@dataclass(frozen=True)
class DeploymentCredentials:
    """The deployment id and the secret whose hash auth stores."""

    deployment_id: str
    secret: str

    def __repr__(self) -> str:  # Never let the secret reach a log through repr().
        return f"DeploymentCredentials(deployment_id={self.deployment_id!r}, secret='***')"


def new_secret() -> str:
    """Returns a fresh random deployment secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def wrap(credentials: DeploymentCredentials) -> str:
    """Encodes deployment credentials as the opaque token handed to the admin."""
    body = json.dumps(
        {"v": _VERSION, "d": credentials.deployment_id, "s": credentials.secret},
        separators=(",", ":"),
    ).encode()
    return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def unwrap(token: str) -> DeploymentCredentials:
    """Decodes a deployment token; raises InvalidArgument without echoing the token."""
    token = token.strip()
    if not _TOKEN_RE.match(token):
        raise InvalidArgument("deployment_token", "is not a sevvo deployment token")
    encoded = token[len(PREFIX) :]
    try:
        body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidArgument("deployment_token", "is corrupted") from None
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise InvalidArgument("deployment_token", "has an unsupported version")
    deployment_id, secret = body.get("d"), body.get("s")
    if not isinstance(deployment_id, str) or not isinstance(secret, str) or not secret:
        raise InvalidArgument("deployment_token", "is corrupted")
    try:
        uuid.UUID(deployment_id)
    except ValueError:
        raise InvalidArgument("deployment_token", "is corrupted") from None
    return DeploymentCredentials(deployment_id=deployment_id, secret=secret)
