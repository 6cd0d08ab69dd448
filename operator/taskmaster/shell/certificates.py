"""Self-signed certificates for the admission webhook, kept in a Secret every replica shares.

The CA outlives many serving certificates, so renewing the serving
certificate never changes what the API server has to trust (`caBundle`).
The CA's key is kept next to it in the Secret for that reason; it can sign
nothing but certificates for this webhook, which the serving key in the same
Secret could impersonate anyway. When the CA itself must be replaced, the old
one stays in `ca.crt` until it expires, so replicas still serving a
certificate it signed are trusted while they catch up.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=365)
# A certificate with less than this left is replaced; a CA with less than a
# serving certificate's lifetime left is too (what it signs must not outlive it).
RENEW_BEFORE = timedelta(days=30)
# Clocks of the API server and the operator may disagree a little.
_BACKDATE = timedelta(minutes=5)

CERT_KEY, KEY_KEY, CA_KEY, CA_KEY_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"
SERVING_COMMON_NAME = "taskmaster-webhook"


@dataclass(frozen=True)
class Certificates:
    """PEM: the serving certificate and key, the CA bundle to trust, the CA's own key."""

    cert: bytes
    key: bytes
    ca: bytes
    ca_key: bytes | None = None

    def secret_data(self) -> dict[str, str]:
        data = {CERT_KEY: self.cert, KEY_KEY: self.key, CA_KEY: self.ca}
        if self.ca_key is not None:
            data[CA_KEY_KEY] = self.ca_key
        return {key: base64.b64encode(value).decode() for key, value in data.items()}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> Certificates | None:
        """The certificates in a Secret's data; None if any of them is missing."""
        try:
            decoded = {
                key: base64.b64decode(value, validate=True) for key, value in (data or {}).items()
            }
            return cls(
                decoded[CERT_KEY], decoded[KEY_KEY], decoded[CA_KEY], decoded.get(CA_KEY_KEY)
            )
        except (KeyError, ValueError):
            return None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"taskmaster-webhook-ca-{int(now.timestamp())}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ca, key


def _serving(
    names: Sequence[str], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: datetime
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        # Clients check the SANs; a common name is limited to 64 characters,
        # which a Service name in a long namespace can pass.
        .subject_name(_name(SERVING_COMMON_NAME))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + SERVING_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _covers(cert: x509.Certificate, names: Sequence[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return {_san(name) for name in names} <= set(san)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_public_key(cert: x509.Certificate, key_pem: bytes) -> bool:
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    return bool(
        key.public_key().public_bytes(encoding, public)
        == cert.public_key().public_bytes(encoding, public)
    )


def _usable_ca(
    current: Certificates, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The current CA and its key, if it can go on signing serving certificates."""
    if current.ca_key is None:
        return None
    try:
        ca = x509.load_pem_x509_certificates(current.ca)[0]
        key = serialization.load_pem_private_key(current.ca_key, password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public_key(ca, current.ca_key):
        return None
    if ca.not_valid_after_utc - now < SERVING_LIFETIME + RENEW_BEFORE:
        return None
    return ca, key


def good_for(current: Certificates, names: Sequence[str], now: datetime) -> bool:
    """Whether the certificates serve `names` for RENEW_BEFORE more, signed by the bundle's CA."""
    try:
        cert = x509.load_pem_x509_certificate(current.cert)
        ca = x509.load_pem_x509_certificates(current.ca)[0]
        matching = _same_public_key(cert, current.key)
    except (ValueError, TypeError):
        return False
    return (
        matching
        and _covers(cert, names)
        and _signed_by(cert, ca)
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc - now >= RENEW_BEFORE
        and ca.not_valid_after_utc - now >= RENEW_BEFORE
    )


def renew(current: Certificates | None, names: Sequence[str], now: datetime) -> Certificates:
    """Certificates for `names`: a new serving certificate, from the current CA where it can."""
    if not names:
        raise ValueError("a serving certificate needs at least one name")
    usable = _usable_ca(current, now) if current is not None else None
    if current is not None and usable is not None:
        ca, ca_key = usable
        bundle = current.ca
    else:
        ca, ca_key = _new_ca(now)
        bundle = ca.public_bytes(serialization.Encoding.PEM) + _unexpired(current, now)
    cert, key = _serving(names, ca, ca_key, now)
    return Certificates(cert=cert, key=key, ca=bundle, ca_key=_key_pem(ca_key))


def _unexpired(current: Certificates | None, now: datetime) -> bytes:
    """The old bundle's first CA while it is still valid: what not-yet-renewed replicas serve."""
    if current is None:
        return b""
    try:
        old = x509.load_pem_x509_certificates(current.ca)[0]
    except ValueError:
        return b""
    return old.public_bytes(serialization.Encoding.PEM) if old.not_valid_after_utc > now else b""
