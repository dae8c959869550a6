"""CA bundles: what parses, what is refused and why, and what users are shown of it."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sevvo.runtime.ca_bundle import (
    MAX_BUNDLE_CHARS,
    MAX_CERTIFICATES,
    CaBundleError,
    parse_ca_bundle,
)
from tests.plugins.pki import ca_certificate_pem

ROOT, ROOT_KEY = ca_certificate_pem("Example Root CA")
OTHER, _ = ca_certificate_pem("Example Other Root")


def _body(pem: str) -> str:
    """The base64 lines of a one-certificate PEM."""
    return "".join(pem.strip().splitlines()[1:-1])


def _der(pem: str) -> bytes:
    return base64.b64decode(_body(pem))


def _corrupted(pem: str) -> str:
    """A PEM block whose base64 decodes, but not to a certificate."""
    body = base64.b64encode(b"\x30\x03\x02\x01\x01" + _der(pem)[5:40]).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


# (id, bundle text, fragment of the rule)
REFUSED: list[tuple[str, str, str]] = [
    ("empty", "", "is empty"),
    ("blank", " \n\t", "is empty"),
    ("no-pem-block", "just some text", "no -----BEGIN CERTIFICATE----- block"),
    ("der-bytes-as-text", _der(ROOT).decode("latin-1"), "printable ASCII"),
    ("nul", ROOT + "\x00", "printable ASCII"),
    ("private-key-alone", ROOT_KEY, "contains a private key"),
    ("private-key-after-cert", ROOT + ROOT_KEY, "contains a private key"),
    (
        "rsa-private-key-label",
        ROOT + "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        "contains a private key",
    ),
    (
        "csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "contains a CERTIFICATE REQUEST block",
    ),
    ("no-end-line", ROOT.replace("-----END CERTIFICATE-----", ""), "no matching"),
    ("second-without-end", ROOT.strip()[:-25] + OTHER, "no matching"),
    ("not-x509", _corrupted(ROOT), "certificate 1 of 1 is not a valid X.509"),
    ("second-not-x509", ROOT + _corrupted(OTHER), "certificate 2 of 2 is not a valid X.509"),
    ("too-large", ROOT + " " * MAX_BUNDLE_CHARS, "at most 512 KiB"),
    ("too-many", ROOT * (MAX_CERTIFICATES + 1), f"at most {MAX_CERTIFICATES} certificates"),
]


@pytest.mark.parametrize(("text", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_a_bundle_that_breaks_a_rule_is_refused_with_the_rule(text: str, fragment: str) -> None:
    """Each rule fails with a message stating it, quoting nothing of the bundle."""
    with pytest.raises(CaBundleError) as caught:
        parse_ca_bundle(text)
    message = str(caught.value)
    assert fragment in message
    assert _body(ROOT)[:40] not in message
    assert _body(ROOT_KEY)[:40] not in message


def test_the_bundle_keeps_its_certificates_in_order_and_drops_the_text_between() -> None:
    """Comments and attributes between blocks go; the certificates stay, re-encoded, in order."""
    text = f"# Example bundle\n{ROOT}\nBag Attributes: friendlyName=other\n{OTHER}"

    bundle = parse_ca_bundle(text)

    assert bundle.pem == ROOT + OTHER
    assert [c.subject for c in bundle.certificates] == [
        "CN=Example Root CA",
        "CN=Example Other Root",
    ]


def test_the_summary_shows_subject_fingerprint_and_expiry() -> None:
    """Each certificate is summarised as openssl would print it: subject, SHA-256, not after."""
    certificate = x509.load_pem_x509_certificate(ROOT.encode())

    (summary,) = parse_ca_bundle(ROOT).certificates

    expected = certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert summary.sha256_fingerprint == expected
    assert summary.expire_time == certificate.not_valid_after_utc
    assert summary.to_payload() == {
        "subject": "CN=Example Root CA",
        "sha256_fingerprint": expected,
        "expire_time": certificate.not_valid_after_utc.isoformat(),
    }


def test_windows_line_endings_and_the_largest_allowed_bundle_parse() -> None:
    """CRLF files parse, and a bundle right at the certificate limit is accepted."""
    assert parse_ca_bundle(ROOT.replace("\n", "\r\n")).pem == ROOT
    assert len(parse_ca_bundle(ROOT * MAX_CERTIFICATES).certificates) == MAX_CERTIFICATES


def test_an_expired_certificate_is_accepted_and_shows_its_expiry() -> None:
    """An old root beside a current one is normal in providers' bundles: kept, not refused."""
    expired, _ = ca_certificate_pem("Example Retired Root", days=-10)

    bundle = parse_ca_bundle(expired + ROOT)

    assert bundle.certificates[0].expire_time < dt.datetime.now(dt.UTC)
    assert len(bundle.certificates) == 2
