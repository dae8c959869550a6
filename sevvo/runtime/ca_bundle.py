"""CA bundles: the PEM certificates an agent verifies a customer database's server against.

One parser for both sides of the boundary: the connections service refuses a bad bundle
with a message naming the rule, and the agent refuses a stored one that no longer parses
instead of handing libpq a file it would misread. A CA certificate is public, so messages
may name a certificate's position; they never quote the text they were given.
"""

from __future__ import annotations

import datetime as dt
import re
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


@dataclass(frozen=True)
class CaBundle:
    """A parsed bundle: ``pem`` holds its certificates alone, re-encoded, in the given order.

    Text between the blocks (comments, openssl's "Bag Attributes") is dropped, so what is
    stored and written for libpq is exactly the certificates that were checked.
    """

    pem: str
    certificates: tuple[CaCertificate, ...]

    def summary(self) -> list[dict[str, str]]:
        """The certificates' display copies, in order."""
        return [certificate.to_payload() for certificate in self.certificates]


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
    blocks = list(_BLOCK.finditer(text))
    if len(blocks) != len(labels):
        raise CaBundleError(
            "is not valid PEM: a -----BEGIN CERTIFICATE----- block has no matching"
            " -----END CERTIFICATE----- line"
        )
    if len(blocks) > MAX_CERTIFICATES:
        raise CaBundleError(f"must hold at most {MAX_CERTIFICATES} certificates")
    parsed: list[x509.Certificate] = []
    for position, block in enumerate(blocks, start=1):
        try:
            certificate = x509.load_pem_x509_certificate(block.group(0).encode("ascii"))
        except ValueError:
            raise CaBundleError(
                f"certificate {position} of {len(blocks)} is not a valid X.509 certificate"
            ) from None
        parsed.append(certificate)
    return CaBundle(
        pem="".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in parsed),
        certificates=tuple(_describe(c) for c in parsed),
    )


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
