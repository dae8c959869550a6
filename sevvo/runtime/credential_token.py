"""Opaque credential tokens: a fixed prefix, then base64url JSON naming an id and its secret.

auth mints one, once, when an admin creates an agent deployment (``sevvo_dt_``) or a workload
identity (``sevvo_wt_``), and stores only the SHA-256 of the secret; the holder presents the
whole token to exchange it for a short-lived bearer. The fixed prefix lets secret scanners and
our log redaction (sevvo/runtime/logs.py) recognise a leaked token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass

from sevvo.runtime.errors import InvalidArgument

_VERSION = 1
_SECRET_BYTES = 32


@dataclass(frozen=True)
class Credentials:
    """The id a token names and the secret whose hash auth stores."""

    subject_id: str
    secret: str

    def __repr__(self) -> str:  # Never let the secret reach a log through repr().
        return f"Credentials(subject_id={self.subject_id!r}, secret='***')"


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def secret_hash(secret: str) -> bytes:
    """What auth stores of a secret.

    The secret is 256 random bits, so a fast hash is enough; a KDF would only slow every
    exchange without making a guess any less hopeless.
    """
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Whether ``secret`` is the one ``stored_hash`` was made from, in constant time."""
    return hmac.compare_digest(stored_hash, secret_hash(secret))


class TokenFormat:
    """One kind of opaque token: its prefix, the JSON key of its id, and how errors name it."""

    def __init__(self, prefix: str, id_key: str, field: str, noun: str) -> None:
        self.prefix = prefix
        self._id_key = id_key
        self._field = field
        self._noun = noun
        self._pattern = re.compile(rf"^{re.escape(prefix)}[A-Za-z0-9_-]{{20,512}}$")

    def wrap(self, credentials: Credentials) -> str:
        """Encodes credentials as the opaque token handed to the admin."""
        body = json.dumps(
            {"v": _VERSION, self._id_key: credentials.subject_id, "s": credentials.secret},
            separators=(",", ":"),
        ).encode()
        return self.prefix + base64.urlsafe_b64encode(body).decode().rstrip("=")

    def unwrap(self, token: str) -> Credentials:
        """Decodes a token; raises InvalidArgument naming the field, never echoing the token."""
        token = token.strip()
        if not self._pattern.match(token):
            raise InvalidArgument(self._field, f"is not a sevvo {self._noun}")
        encoded = token[len(self.prefix) :]
        try:
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except (binascii.Error, ValueError):
            raise InvalidArgument(self._field, "is corrupted") from None
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise InvalidArgument(self._field, "has an unsupported version")
        subject_id, secret = body.get(self._id_key), body.get("s")
        if not isinstance(subject_id, str) or not isinstance(secret, str) or not secret:
            raise InvalidArgument(self._field, "is corrupted")
        try:
            uuid.UUID(subject_id)
        except ValueError:
            raise InvalidArgument(self._field, "is corrupted") from None
        return Credentials(subject_id=subject_id, secret=secret)


DEPLOYMENT_TOKEN = TokenFormat("sevvo_dt_", "d", "deployment_token", "deployment token")
"""An agent deployment's token (sevvo/runtime/deployment_token.py)."""
WORKLOAD_TOKEN = TokenFormat("sevvo_wt_", "w", "workload_token", "workload token")
"""A workload identity's token, which a customer service presents to the agent beside it."""
