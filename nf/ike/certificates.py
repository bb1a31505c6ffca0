"""X.509 credentials for IKE signature authentication: loading, chain validation, ID binding, CERT/CERTREQ.

Chains are validated with cryptography's x509.verification (a client verifier over our trust anchors)
with extension policies relaxed to "permit all": IKE certificates (e.g. made by strongSwan's `pki`)
carry no TLS extended key usage and often no SAN, and RFC 4945 leaves EKU checks to local policy.
Signatures, validity periods, CA basic constraints and path building are still checked by
cryptography. The peer's ID must then name the leaf: its subject DN, or a SAN of the ID's type.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification

from nf.ike.auth import PublicKey
from nf.ike.errors import AuthenticationError, AuthReason
from nf.ike.identities import Identity, IDType, dn_equal
from nf.ike.payloads import CertEncoding, CertPayload, CertReqPayload


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or one DER certificate)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise AuthenticationError(AuthReason.BAD_CERTIFICATE, f"no certificate in {path}") from None
    return list(certs)


def key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the SubjectPublicKeyInfo: how CERTREQ names a trusted CA (RFC 7296 s3.7)."""
    der, spki_format = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    spki = cert.public_key().public_bytes(der, spki_format)
    return hashlib.sha1(spki).digest()


def cert_payloads(chain: Sequence[x509.Certificate]) -> list[CertPayload]:
    """CERT payloads for our chain, end entity first (it holds the AUTH key, RFC 7296 s3.6)."""
    der = serialization.Encoding.DER
    return [CertPayload(CertEncoding.X509_SIGNATURE, cert.public_bytes(der)) for cert in chain]


def certificates_from_payloads(payloads: Iterable[CertPayload]) -> list[x509.Certificate]:
    """The peer's certificates in the order received; AuthenticationError(BAD_CERTIFICATE) if malformed."""
    certs: list[x509.Certificate] = []
    for payload in payloads:
        if payload.encoding != CertEncoding.X509_SIGNATURE:
            raise AuthenticationError(AuthReason.BAD_CERTIFICATE, f"certificate encoding {payload.encoding}")
        try:
            certs.append(x509.load_der_x509_certificate(payload.data))
        except ValueError:
            raise AuthenticationError(AuthReason.BAD_CERTIFICATE, "CERT data is not DER X.509") from None
    return certs


class TrustAnchors:
    """The CA certificates we accept peer chains from."""

    def __init__(self, anchors: Sequence[x509.Certificate]) -> None:
        if not anchors:
            raise ValueError("at least one trust anchor is needed")
        self._anchors = tuple(anchors)
        self._store = verification.Store(list(anchors))

    @classmethod
    def from_files(cls, *paths: str) -> TrustAnchors:
        return cls([cert for path in paths for cert in load_certificates(path)])

    def __repr__(self) -> str:
        return f"TrustAnchors({[a.subject.rfc4514_string() for a in self._anchors]!r})"

    def certreq_payload(self) -> CertReqPayload:
        return CertReqPayload(CertEncoding.X509_SIGNATURE, b"".join(key_hash(a) for a in self._anchors))

    def verify(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], *, now: datetime.datetime
    ) -> list[x509.Certificate]:
        """The validated chain (leaf first) at time `now`; AuthenticationError(UNTRUSTED_CERTIFICATE)."""
        permit = verification.ExtensionPolicy.permit_all()
        verifier = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=permit)
            .build_client_verifier()
        )
        try:
            return list(verifier.verify(leaf, list(intermediates)).chain)
        except verification.VerificationError as exc:
            raise AuthenticationError(AuthReason.UNTRUSTED_CERTIFICATE, _short(str(exc))) from None


def _ca_policy() -> verification.ExtensionPolicy:
    """CAs must still be CAs (basicConstraints); everything else is permitted."""
    return verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None
    )


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


def certificate_public_key(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise AuthenticationError(AuthReason.BAD_CERTIFICATE, f"unsupported key type {type(key).__name__}")
    return key


def certificate_matches(cert: x509.Certificate, identity: Identity) -> bool:
    """Whether `identity` (as received in IDi/IDr, or configured) names this certificate."""
    if identity.id_type == IDType.DER_ASN1_DN:
        return dn_equal(identity.data, cert.subject.public_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if identity.id_type == IDType.FQDN:
        wanted = identity.data.decode("ascii", "replace").lower()
        return any(name.lower() == wanted for name in san.get_values_for_type(x509.DNSName))
    if identity.id_type == IDType.RFC822_ADDR:
        wanted = identity.data.decode("ascii", "replace").lower()
        return any(name.lower() == wanted for name in san.get_values_for_type(x509.RFC822Name))
    if identity.id_type in (IDType.IPV4_ADDR, IDType.IPV6_ADDR):
        try:
            wanted_ip = ipaddress.ip_address(identity.data)
        except ValueError:
            return False
        return wanted_ip in san.get_values_for_type(x509.IPAddress)
    return False


def check_peer_certificate(
    trust: TrustAnchors,
    certs: Sequence[x509.Certificate],
    identity: Identity,
    *,
    now: datetime.datetime,
) -> PublicKey:
    """Validate the peer's chain and bind its ID; returns the key that must verify the peer's AUTH."""
    if not certs:
        raise AuthenticationError(AuthReason.UNTRUSTED_CERTIFICATE, "peer sent no certificate")
    leaf = certs[0]
    trust.verify(leaf, certs[1:], now=now)
    if not certificate_matches(leaf, identity):
        raise AuthenticationError(AuthReason.ID_MISMATCH, f"certificate does not name {identity}")
    return certificate_public_key(leaf)
