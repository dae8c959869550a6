"""sevvo's client library: borrow a Postgres credential from the sevvo agent beside a service.

Importable without any control-plane or agent code: it needs only the generated
``sevvo.agent.v1`` stubs, grpcio and protobuf. See docs/workload-credentials.md.
"""

from sevvo_client.credentials import Credential, CredentialClient, sevvo_credentials
from sevvo_client.durations import parse_duration
from sevvo_client.errors import (
    AgentUnavailable,
    ConfigurationError,
    CredentialError,
    InvalidRequest,
    NotFound,
    NotGranted,
    PastMaxTTL,
    Unauthenticated,
)
from sevvo_client.managed import AsyncCredentialClient, ManagedCredential, managed_credentials

__all__ = [
    "AgentUnavailable",
    "AsyncCredentialClient",
    "ConfigurationError",
    "Credential",
    "CredentialClient",
    "CredentialError",
    "InvalidRequest",
    "ManagedCredential",
    "NotFound",
    "NotGranted",
    "PastMaxTTL",
    "Unauthenticated",
    "managed_credentials",
    "parse_duration",
    "sevvo_credentials",
]
