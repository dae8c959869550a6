"""A throwaway certificate authority so every local gRPC hop can use TLS on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = structlog.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CLIENT_COMMON_NAME = "sevvo-dev-client"
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost",)
DEFAULT_IPS: tuple[str, ...] = ("127.0.0.1", "::1")

# Leaves are renewed when they have less than this left, so a long-running `make dev`
# started today does not hit an expired certificate tomorrow.
_RENEW_BEFORE = dt.timedelta(days=1)
_CA_LIFETIME = dt.timedelta(days=3650)
_LEAF_LIFETIME = dt.timedelta(days=365)
# Tolerate clocks that disagree a little between the issuing and the verifying process.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class DevPki:
    """Paths of the development CA and the leaf certificates it issued (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def ensure_dev_pki(directory: Path) -> DevPki:
    """Create, or reuse, a development CA with one server and one client certificate.

    Files that are present, unexpired for at least a day and issued by the CA on disk are
    kept, so restarts keep the same CA and clients keep trusting it. The server
    certificate is valid for localhost, 127.0.0.1 and ::1; the client certificate (CN
    ``sevvo-dev-client``) is for mutual TLS. Private keys are written mode 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = DevPki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    # Parallel test workers share one directory; without the lock two of them could each
    # write a CA and leave a leaf signed by the CA that lost the race.
    with _locked(directory / ".lock"):
        ca = _load_valid(pki.ca_cert, pki.ca_key, issuer=None)
        if ca is None:
            ca = _new_ca()
            _write_pair(ca, pki.ca_cert, pki.ca_key)
            log.info("devstack.pki.ca_created", directory=str(directory))
        if _load_valid(pki.server_cert, pki.server_key, issuer=ca[0]) is None:
            _write_pair(
                _issue(ca, "sevvo-dev-server", DEFAULT_HOSTNAMES, _ips(DEFAULT_IPS), server=True),
                pki.server_cert,
                pki.server_key,
            )
        if _load_valid(pki.client_cert, pki.client_key, issuer=ca[0]) is None:
            _write_pair(
                _issue(ca, CLIENT_COMMON_NAME, (), (), server=False),
                pki.client_cert,
                pki.client_key,
            )
    return pki


def issue_server_cert(
    pki: DevPki,
    directory: Path,
    *,
    name: str,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    ips: Sequence[str | IPAddress] = DEFAULT_IPS,
) -> tuple[Path, Path]:
    """Issue a fresh server certificate from the dev CA; returns ``(cert_path, key_path)``.

    For servers that need names other than the defaults. The files are
    ``<directory>/<name>.crt`` and ``<directory>/<name>.key`` (the key mode 0600) and are
    overwritten on every call.
    """
    ca = _load_valid(pki.ca_cert, pki.ca_key, issuer=None)
    if ca is None:
        raise ValueError(f"no valid CA at {pki.ca_cert}; call ensure_dev_pki first")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    _write_pair(_issue(ca, name, hostnames, _ips(ips), server=True), cert_path, key_path)
    return cert_path, key_path


_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 rather than Ed25519: BoringSSL (grpcio), OpenSSL-linked Postgres and browsers
    # all accept ECDSA P-256 certificates, while Ed25519 ones are still patchy in TLS.
    return ec.generate_private_key(ec.SECP256R1())


def _new_ca() -> _Pair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sevvo development CA")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CA_LIFETIME)
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: _Pair,
    common_name: str,
    hostnames: Sequence[str],
    ips: Sequence[IPAddress],
    *,
    server: bool,
) -> _Pair:
    ca_cert, ca_key = ca
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + _LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hostnames or ips:
        # Clients match host names against the SAN only; the CN is ignored for that.
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
        sans += [x509.IPAddress(ip) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _ips(values: Sequence[str | IPAddress]) -> list[IPAddress]:
    return [ipaddress.ip_address(v) if isinstance(v, str) else v for v in values]


def _load_valid(
    cert_path: Path, key_path: Path, *, issuer: x509.Certificate | None
) -> _Pair | None:
    """Load a certificate and its key if they match, are fresh, and come from ``issuer``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key():
        return None
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE:
        return None
    if issuer is not None:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return None
    return cert, key


def _write_pair(pair: _Pair, cert_path: Path, key_path: Path) -> None:
    cert, key = pair
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a reader that finds the new certificate must also find its key.
    _write_atomic(key_path, key_pem, mode=0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write via a temporary file and rename, so a reader sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # The mode is set at creation: a key must never exist, even briefly, with wider access.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
