"""The agent deployment token: an opaque string that unwraps into deployment credentials.

Auth mints it once, when an admin creates a deployment; the agent unwraps it and presents the
credentials in ExchangeDeploymentToken. The format is shared with workload tokens
(sevvo/runtime/credential_token.py); the prefix ``sevvo_dt_`` tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sevvo.runtime.credential_token import DEPLOYMENT_TOKEN, Credentials, new_secret

PREFIX = DEPLOYMENT_TOKEN.prefix


@dataclass(frozen=True)
class DeploymentCredentials:
    """The deployment id and the secret whose hash auth stores."""

    deployment_id: str
    secret: str

    def __repr__(self) -> str:  # Never let the secret reach a log through repr().
        return f"DeploymentCredentials(deployment_id={self.deployment_id!r}, secret='***')"


def wrap(credentials: DeploymentCredentials) -> str:
    """Encodes deployment credentials as the opaque token handed to the admin."""
    return DEPLOYMENT_TOKEN.wrap(Credentials(credentials.deployment_id, credentials.secret))


def unwrap(token: str) -> DeploymentCredentials:
    """Decodes a deployment token; raises InvalidArgument without echoing the token."""
    credentials = DEPLOYMENT_TOKEN.unwrap(token)
    return DeploymentCredentials(deployment_id=credentials.subject_id, secret=credentials.secret)


__all__ = ["PREFIX", "DeploymentCredentials", "new_secret", "unwrap", "wrap"]
