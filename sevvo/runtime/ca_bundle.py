"""CA bundles: the PEM certificates an agent verifies a customer database's server against.

One parser for both sides of the boundary: the connections service refuses a bad bundle
with a message naming the rule, and the agent refuses a stored one that no longer parses
instead of handing libpq a file it would misread. A CA certificate is public, so messages
may name a certificate's position; they never quote the text they were given.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

# Amazon RDS's global bundle (every region's roots and intermediates, ~110 certificates)
# is about 170 KB, the largest a managed provider hands out; these limits leave room for
# it to grow while keeping a connection's sealed payload small.
MAX_BUNDLE_CHARS: Final = 512 * 1024
MAX_CERTIFICATES: Final = 500
# A subject is display text; a certificate may carry an absurdly long one.
MAX_SUBJECT_CHARS: Final = 512

_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[^-\r\n]{1,64})-----(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)
_BEGIN = re.compile(r"-----BEGIN ([^-\r\n]{0,64})-----")
_CERTIFICATE_LABELS: Final = ("CERTIFICATE", "X509 CERTIFICATE")
# Printable ASCII and the whitespace PEM files use; anything else is not PEM text.
_TEXT = re.compile(r"[\x20-\x7e\t\r\n]*")
_DER_HINT: Final = (
    "convert a DER (binary) file with: openssl x509 -inform der -in ca.der -out ca.pem"
)


class CaBundleError(ValueError):
    """A bundle breaks a rule; the message states it and never quotes the bundle."""


@dataclass(frozen=True)
class CaCertificate:
    """What users see of one certificate of a bundle."""

    subject: str
    sha256_fingerprint: str
    expire_time: dt.datetime

    def to_payload(self) -> dict[str, str]:
        """A JSON-ready copy, for the connection row's display column."""
        return {
            "subject": self.subject,
            "sha256_fingerprint": self.sha256_fingerprint,
            "expire_time": self.expire_time.isoformat(),
        }


class CaBundle:
    """A parsed bundle; two bundles are equal when they hold the same certificates in order.

    ``pem`` and ``certificates`` are worked out when first read: an agent that only checks a
    bundle before a connection needs neither, and for a provider's bundle of a hundred
    certificates they cost milliseconds that the event loop would otherwise spend blocked.
    """

    def __init__(self, parsed: Sequence[x509.Certificate]) -> None:
        self._parsed = tuple(parsed)

    @functools.cached_property
    def pem(self) -> str:
        """The certificates alone, re-encoded, in the given order.

        Text between the blocks (comments, openssl's "Bag Attributes") is dropped, so what
        is stored and written for libpq is exactly the certificates that were checked.
        """
        return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in self._parsed)

    @functools.cached_property
    def certificates(self) -> tuple[CaCertificate, ...]:
        """What users see of each certificate, in order."""
        return tuple(_describe(c) for c in self._parsed)

    def summary(self) -> list[dict[str, str]]:
        """The certificates' display copies, in order."""
        return [certificate.to_payload() for certificate in self.certificates]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaBundle) and self.pem == other.pem

    def __hash__(self) -> int:
        return hash(self.pem)

    def __repr__(self) -> str:
        return f"CaBundle({len(self._parsed)} certificates)"


def parse_ca_bundle(text: str) -> CaBundle:
    """Parses the PEM text of one or more X.509 CA certificates.

    Raises CaBundleError when the text is empty, too large, not PEM, holds a block other
    than a certificate (a private key above all), or a block that is not an X.509
    certificate. Expired certificates are accepted: a provider's bundle may still carry an
    old root beside the current one, and the agent's test of the server decides.
    """
    if not text.strip():
        raise CaBundleError("is empty; give the PEM text of the CA certificate(s)")
    if len(text) > MAX_BUNDLE_CHARS:
        raise CaBundleError(f"must be at most {MAX_BUNDLE_CHARS // 1024} KiB of PEM text")
    if not _TEXT.fullmatch(text):
        raise CaBundleError(f"must be PEM text (printable ASCII); {_DER_HINT}")
    labels = [label.strip() for label in _BEGIN.findall(text)]
    if not labels:
        raise CaBundleError(
            f"is not PEM: no -----BEGIN CERTIFICATE----- block was found; {_DER_HINT}"
        )
    for label in labels:
        if "PRIVATE KEY" in label:
            # Never a reason to send one; saying so is the useful part of the message.
            raise CaBundleError(
                "contains a private key; give only the CA certificate(s), never a key"
            )
        if label not in _CERTIFICATE_LABELS:
            raise CaBundleError(
                f"contains a {label} block; only CERTIFICATE blocks are accepted"
                if re.fullmatch(r"[A-Z0-9 ]+", label)
                else "contains a block that is not a CERTIFICATE; only certificates are accepted"
            )
    if len(labels) > MAX_CERTIFICATES:
        raise CaBundleError(f"must hold at most {MAX_CERTIFICATES} certificates")
    try:
        # One call for the whole bundle: ten times faster than a call per block.
        parsed = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError:
        parsed = []
    if len(parsed) != len(labels):
        raise _first_problem(text, len(labels))
    return CaBundle(parsed)


def _first_problem(text: str, count: int) -> CaBundleError:
    """Why a bundle of ``count`` CERTIFICATE blocks did not load as ``count`` certificates."""
    blocks = list(_BLOCK.finditer(text))
    if len(blocks) != count:
        return CaBundleError(
            "is not valid PEM: a -----BEGIN CERTIFICATE----- block has no matching"
            " -----END CERTIFICATE----- line"
        )
    for position, block in enumerate(blocks, start=1):
        try:
            x509.load_pem_x509_certificate(block.group(0).encode("ascii"))
        except ValueError:
            return CaBundleError(
                f"certificate {position} of {count} is not a valid X.509 certificate"
            )
    return CaBundleError("is not valid PEM")


def _describe(certificate: x509.Certificate) -> CaCertificate:
    try:
        subject = certificate.subject.rfc4514_string()
    except ValueError:
        # A subject attribute cryptography cannot render; the fingerprint still identifies it.
        subject = ""
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1] + "…"
    digest = certificate.fingerprint(hashes.SHA256())
    return CaCertificate(
        subject=subject,
        sha256_fingerprint=":".join(f"{byte:02X}" for byte in digest),
        expire_time=certificate.not_valid_after_utc,
    )


__all__ = [
    "MAX_BUNDLE_CHARS",
    "MAX_CERTIFICATES",
    "CaBundle",
    "CaBundleError",
    "CaCertificate",
    "parse_ca_bundle",
]
