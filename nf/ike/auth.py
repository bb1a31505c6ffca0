"""AUTH payload computation and verification (RFC 7296 s2.15, s3.8; RFC 7427; RFC 4754).

Methods: 2 (shared key MIC), 14 (RFC 7427 Digital Signature: ECDSA-SHA2 with DER signatures, RSA
PKCS#1 v1.5 SHA-256/384/512, RSASSA-PSS SHA-256/384/512, Ed25519) for signing and verifying, and the legacy
methods 1 (RSA PKCS#1 v1.5 SHA-1) and 9/10/11 (ECDSA with fixed-size r | s) for a peer that did not
announce SIGNATURE_HASH_ALGORITHMS (strongSwan then falls back to them, and so do we when signing).

The AlgorithmIdentifier octets are DER built from cryptography's OID constants: ECDSA and Ed25519
without parameters, RSA PKCS#1 with NULL parameters (strongSwan asn1.c asn1_algorithmIdentifier), and
RSASSA-PSS with explicit hash/MGF1-hash/salt = hash size parameters and no trailerField, the form
strongSwan builds (test_signature_params.c); the RFC 7427 appendix form with an explicit default
trailerField is accepted too. Secrets (PSK, private keys) live in PreSharedKey and Signer, which
perform operations and never hand the secret out.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
from collections.abc import Collection
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ObjectIdentifier, SignatureAlgorithmOID

from nf.ike.errors import AuthenticationError, AuthReason, IKEParseError, ParseReason
from nf.ike.keymat import IKEKeymat
from nf.ike.payloads import AuthPayload, IDiPayload, IDrPayload
from nf.ike.transforms import PrfAlgorithm

KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 s2.15, 17 octets, no NUL

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class AuthMethod(enum.IntEnum):
    RSA_SIGNATURE = 1
    SHARED_KEY = 2
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    DIGITAL_SIGNATURE = 14


class HashAlgorithm(enum.IntEnum):
    """RFC 7427 hash algorithm IDs for SIGNATURE_HASH_ALGORITHMS (5 = Identity, RFC 8420)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


SUPPORTED_HASHES: tuple[int, ...] = (
    HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512, HashAlgorithm.IDENTITY,
)


def encode_hash_algorithms(algorithms: Collection[int] = SUPPORTED_HASHES) -> bytes:
    """Notification Data of SIGNATURE_HASH_ALGORITHMS: 2-octet hash IDs."""
    return b"".join(int(a).to_bytes(2, "big") for a in algorithms)


def decode_hash_algorithms(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise IKEParseError(ParseReason.BAD_PAYLOAD, "SIGNATURE_HASH_ALGORITHMS data has odd length")
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


# --- DER for AlgorithmIdentifier -----------------------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _oid(oid: ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


_NULL = _der(0x05, b"")
_SEQ = 0x30


def _algorithm_identifier(oid: ObjectIdentifier, params: bytes = b"") -> bytes:
    return _der(_SEQ, _oid(oid) + params)


_MGF1 = ObjectIdentifier("1.2.840.113549.1.1.8")
_TRAILER_1 = _der(0xA3, _der(0x02, b"\x01"))


def _pss_identifiers(hash_oid: str, salt: int) -> tuple[bytes, bytes]:
    """RSASSA-PSS with hash H, MGF1-H and salt = |H|: strongSwan's form, then RFC 7427's with trailerField."""
    hash_id = _algorithm_identifier(ObjectIdentifier(hash_oid), _NULL)
    mgf = _algorithm_identifier(_MGF1, hash_id)
    params = _der(0xA0, hash_id) + _der(0xA1, mgf) + _der(0xA2, _der(0x02, bytes([salt])))
    return (
        _algorithm_identifier(SignatureAlgorithmOID.RSASSA_PSS, _der(_SEQ, params)),
        _algorithm_identifier(SignatureAlgorithmOID.RSASSA_PSS, _der(_SEQ, params + _TRAILER_1)),
    )


def _pss(name: str, hash_id: int, hash_oid: str, salt: int) -> SignatureScheme:
    plain, with_trailer = _pss_identifiers(hash_oid, salt)
    return SignatureScheme(name, hash_id, "rsa", plain, (with_trailer,))


@dataclass(frozen=True)
class SignatureScheme:
    """One RFC 7427 scheme: its AlgorithmIdentifier encodings and how to sign/verify with it."""

    name: str
    hash_id: int
    key_kind: str  # "ec", "rsa", "ed25519"
    algorithm_identifier: bytes
    alternate_identifiers: tuple[bytes, ...] = ()

    @property
    def hash(self) -> hashes.HashAlgorithm | None:
        return _HASHES.get(self.hash_id)

    @property
    def pss(self) -> bool:
        return self.name.startswith("rsa-pss")


_HASHES: dict[int, hashes.HashAlgorithm] = {
    HashAlgorithm.SHA1: hashes.SHA1(),
    HashAlgorithm.SHA2_256: hashes.SHA256(),
    HashAlgorithm.SHA2_384: hashes.SHA384(),
    HashAlgorithm.SHA2_512: hashes.SHA512(),
}


def _ecdsa(name: str, hash_id: int, oid: ObjectIdentifier) -> SignatureScheme:
    plain = _algorithm_identifier(oid)
    return SignatureScheme(name, hash_id, "ec", plain, (_algorithm_identifier(oid, _NULL),))


def _pkcs1(name: str, hash_id: int, oid: ObjectIdentifier) -> SignatureScheme:
    with_null = _algorithm_identifier(oid, _NULL)
    return SignatureScheme(name, hash_id, "rsa", with_null, (_algorithm_identifier(oid),))


SCHEMES: tuple[SignatureScheme, ...] = (
    _ecdsa("ecdsa-sha256", HashAlgorithm.SHA2_256, SignatureAlgorithmOID.ECDSA_WITH_SHA256),
    _ecdsa("ecdsa-sha384", HashAlgorithm.SHA2_384, SignatureAlgorithmOID.ECDSA_WITH_SHA384),
    _ecdsa("ecdsa-sha512", HashAlgorithm.SHA2_512, SignatureAlgorithmOID.ECDSA_WITH_SHA512),
    _pkcs1("rsa-sha256", HashAlgorithm.SHA2_256, SignatureAlgorithmOID.RSA_WITH_SHA256),
    _pkcs1("rsa-sha384", HashAlgorithm.SHA2_384, SignatureAlgorithmOID.RSA_WITH_SHA384),
    _pkcs1("rsa-sha512", HashAlgorithm.SHA2_512, SignatureAlgorithmOID.RSA_WITH_SHA512),
    _pss("rsa-pss-sha256", HashAlgorithm.SHA2_256, "2.16.840.1.101.3.4.2.1", 32),
    _pss("rsa-pss-sha384", HashAlgorithm.SHA2_384, "2.16.840.1.101.3.4.2.2", 48),
    _pss("rsa-pss-sha512", HashAlgorithm.SHA2_512, "2.16.840.1.101.3.4.2.3", 64),
    SignatureScheme(
        "ed25519", HashAlgorithm.IDENTITY, "ed25519", _algorithm_identifier(SignatureAlgorithmOID.ED25519)
    ),
)
SCHEMES_BY_NAME = {scheme.name: scheme for scheme in SCHEMES}


def scheme_for_identifier(identifier: bytes) -> SignatureScheme | None:
    for scheme in SCHEMES:
        if identifier == scheme.algorithm_identifier or identifier in scheme.alternate_identifiers:
            return scheme
    return None


# --- Shared key (method 2) -------------------------------------------------------------------------


class PreSharedKey:
    """An IKE PSK: computes and checks method-2 AUTH data, never reveals the secret (not even in repr)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise AuthenticationError(AuthReason.BAD_CREDENTIAL, "empty pre-shared key")
        self._secret = secret

    @classmethod
    def from_config(cls, text: str) -> PreSharedKey:
        """strongSwan spelling: "0x<hex>", "0s<base64>", else the octets of the (UTF-8) string, no NUL.

        RFC 7296 s2.15 requires ASCII secrets of at least 64 octets and hex input; both work here.
        """
        try:
            if text.startswith("0x"):
                return cls(bytes.fromhex(text[2:]))
            if text.startswith("0s"):
                return cls(base64.b64decode(text[2:], validate=True))
        except (ValueError, binascii.Error):
            raise AuthenticationError(AuthReason.BAD_CREDENTIAL, "bad pre-shared key encoding") from None
        return cls(text.encode("utf-8"))

    def __repr__(self) -> str:
        return "PreSharedKey(<hidden>)"

    def __reduce__(self) -> str:
        raise TypeError("PreSharedKey cannot be serialized")

    def _mic(self, prf: PrfAlgorithm, octets: bytes) -> bytes:
        return prf.prf(prf.prf(self._secret, KEY_PAD), octets)

    def auth_payload(self, prf: PrfAlgorithm, octets: bytes) -> AuthPayload:
        """AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <signed octets>) with the SA's negotiated PRF."""
        return AuthPayload(AuthMethod.SHARED_KEY, self._mic(prf, octets))

    def verify(self, prf: PrfAlgorithm, auth: AuthPayload, octets: bytes) -> None:
        if auth.method != AuthMethod.SHARED_KEY:
            raise AuthenticationError(AuthReason.UNSUPPORTED_METHOD, f"method {auth.method}, not shared key")
        if not hmac.compare_digest(self._mic(prf, octets), auth.data):
            raise AuthenticationError(AuthReason.WRONG_AUTH_DATA, "shared key AUTH does not verify")


# --- Signatures (methods 1, 9-11, 14) --------------------------------------------------------------

_LEGACY_EC = {
    AuthMethod.ECDSA_SHA256_P256: (ec.SECP256R1.name, hashes.SHA256(), 32),
    AuthMethod.ECDSA_SHA384_P384: (ec.SECP384R1.name, hashes.SHA384(), 48),
    AuthMethod.ECDSA_SHA512_P521: (ec.SECP521R1.name, hashes.SHA512(), 66),
}
_EC_PREFERRED_HASH = {"secp256r1": HashAlgorithm.SHA2_256, "secp384r1": HashAlgorithm.SHA2_384}


def _key_kind(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    return "ed25519"


class Signer:
    """Our private key: signs AUTH octets choosing a scheme the peer can verify; never exports the key."""

    __slots__ = ("_key", "_rsa_pss")

    def __init__(self, key: PrivateKey, *, rsa_pss: bool = False) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise AuthenticationError(AuthReason.BAD_CREDENTIAL, f"unsupported key type {type(key).__name__}")
        self._key = key
        self._rsa_pss = rsa_pss

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None, *, rsa_pss: bool = False) -> Signer:
        try:
            key = serialization.load_pem_private_key(data, password)
        except (ValueError, TypeError):
            raise AuthenticationError(AuthReason.BAD_CREDENTIAL, "private key does not load") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise AuthenticationError(AuthReason.BAD_CREDENTIAL, f"unsupported key type {type(key).__name__}")
        return cls(key, rsa_pss=rsa_pss)

    @classmethod
    def from_file(cls, path: str, password: bytes | None = None, *, rsa_pss: bool = False) -> Signer:
        with open(path, "rb") as handle:
            return cls.from_pem(handle.read(), password, rsa_pss=rsa_pss)

    def __repr__(self) -> str:
        return f"Signer({self.describe()})"

    def __reduce__(self) -> str:
        raise TypeError("Signer cannot be serialized")

    def describe(self) -> str:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return f"ECDSA {key.curve.name}"
        if isinstance(key, rsa.RSAPrivateKey):
            return f"RSA {key.key_size}{' PSS' if self._rsa_pss else ''}"
        return "Ed25519"

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def _pick_scheme(self, peer_hashes: Collection[int]) -> SignatureScheme:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            candidates = [SCHEMES_BY_NAME["ed25519"]]
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            preferred = _EC_PREFERRED_HASH.get(key.curve.name, HashAlgorithm.SHA2_512)
            ec_schemes = [s for s in SCHEMES if s.key_kind == "ec"]
            candidates = sorted(ec_schemes, key=lambda s: s.hash_id != preferred)
        elif self._rsa_pss:
            candidates = [s for s in SCHEMES if s.pss]
        else:
            candidates = [s for s in SCHEMES if s.key_kind == "rsa" and not s.pss]
        for scheme in candidates:
            if scheme.hash_id in peer_hashes:
                return scheme
        raise AuthenticationError(AuthReason.HASH_NOT_NEGOTIATED, f"peer offers no hash usable with {self}")

    def auth_payload(self, octets: bytes, peer_hashes: Collection[int] | None) -> AuthPayload:
        """Method 14 when the peer sent SIGNATURE_HASH_ALGORITHMS (`peer_hashes`), else legacy 1/9/10/11."""
        key = self._key
        if peer_hashes:
            scheme = self._pick_scheme(peer_hashes)
            data = bytes([len(scheme.algorithm_identifier)]) + scheme.algorithm_identifier
            return AuthPayload(AuthMethod.DIGITAL_SIGNATURE, data + self._sign(scheme, octets))
        if isinstance(key, rsa.RSAPrivateKey):
            return AuthPayload(AuthMethod.RSA_SIGNATURE, key.sign(octets, padding.PKCS1v15(), hashes.SHA1()))
        if isinstance(key, ec.EllipticCurvePrivateKey):
            for method, (curve, hash_alg, size) in _LEGACY_EC.items():
                if key.curve.name == curve:
                    r, s = decode_dss_signature(key.sign(octets, ec.ECDSA(hash_alg)))
                    return AuthPayload(method, r.to_bytes(size, "big") + s.to_bytes(size, "big"))
        raise AuthenticationError(AuthReason.HASH_NOT_NEGOTIATED, f"{self} needs RFC 7427 signature auth")

    def _sign(self, scheme: SignatureScheme, octets: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(octets)
        hash_alg = _hash_of(scheme)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(octets, ec.ECDSA(hash_alg))  # DER (r, s), as RFC 7427 wants
        return key.sign(octets, _rsa_padding(scheme), hash_alg)


def _hash_of(scheme: SignatureScheme) -> hashes.HashAlgorithm:
    hash_alg = scheme.hash
    if hash_alg is None:
        raise AuthenticationError(AuthReason.UNSUPPORTED_METHOD, f"{scheme.name} has no hash for this key")
    return hash_alg


def _rsa_padding(scheme: SignatureScheme) -> padding.AsymmetricPadding:
    if scheme.pss:
        hash_alg = _hash_of(scheme)
        return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
    return padding.PKCS1v15()


def verify_signature(
    public_key: PublicKey, auth: AuthPayload, octets: bytes, *, our_hashes: Collection[int] = SUPPORTED_HASHES
) -> None:
    """Check a signature AUTH payload against the peer's key; AuthenticationError says why not."""
    try:
        _verify(public_key, auth, octets, our_hashes)
    except InvalidSignature:
        raise AuthenticationError(AuthReason.WRONG_AUTH_DATA, f"method {auth.method}: bad sig") from None


def _verify(public_key: PublicKey, auth: AuthPayload, octets: bytes, our_hashes: Collection[int]) -> None:
    kind = _key_kind(public_key)
    method, data = auth.method, auth.data
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if not data:
            raise AuthenticationError(AuthReason.BAD_AUTH_DATA, "empty RFC 7427 authentication data")
        length = data[0]
        scheme = scheme_for_identifier(data[1 : 1 + length])
        if scheme is None:
            raise AuthenticationError(AuthReason.UNSUPPORTED_METHOD, "unknown RFC 7427 AlgorithmIdentifier")
        if scheme.hash_id not in our_hashes:
            raise AuthenticationError(AuthReason.HASH_NOT_NEGOTIATED, f"{scheme.name}: hash not offered")
        if scheme.key_kind != kind:
            raise AuthenticationError(AuthReason.KEY_MISMATCH, f"{scheme.name} signature for a {kind} key")
        signature = data[1 + length :]
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, octets)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, octets, ec.ECDSA(_hash_of(scheme)))
        else:
            public_key.verify(signature, octets, _rsa_padding(scheme), _hash_of(scheme))
        return
    if method == AuthMethod.RSA_SIGNATURE:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise AuthenticationError(AuthReason.KEY_MISMATCH, f"RSA signature for a {kind} key")
        public_key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())
        return
    if method in _LEGACY_EC:
        curve, hash_alg, size = _LEGACY_EC[AuthMethod(method)]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve:
            raise AuthenticationError(AuthReason.KEY_MISMATCH, f"method {method} needs a {curve} key")
        if len(data) != 2 * size:
            raise AuthenticationError(AuthReason.BAD_AUTH_DATA, f"method {method} signature of {len(data)}")
        r, s = int.from_bytes(data[:size], "big"), int.from_bytes(data[size:], "big")
        public_key.verify(encode_dss_signature(r, s), octets, ec.ECDSA(hash_alg))
        return
    raise AuthenticationError(AuthReason.UNSUPPORTED_METHOD, f"auth method {method}")


# --- Tying AUTH to the IKE SA ----------------------------------------------------------------------


def create_auth(
    keymat: IKEKeymat,
    credential: PreSharedKey | Signer,
    *,
    message: bytes,
    nonce: bytes,
    id_payload: IDiPayload | IDrPayload,
    peer_hashes: Collection[int] | None = None,
) -> AuthPayload:
    """Our AUTH for IKE_AUTH: we sign our IKE_SA_INIT `message`, the peer's `nonce` and our ID."""
    octets = keymat.auth_octets(
        signer_is_initiator=keymat.initiator, message=message, nonce=nonce, rest_of_id=id_payload.rest_of_id
    )
    if isinstance(credential, PreSharedKey):
        return credential.auth_payload(keymat.suite.prf, octets)
    return credential.auth_payload(octets, peer_hashes)


def verify_auth(
    keymat: IKEKeymat,
    credential: PreSharedKey | PublicKey,
    auth: AuthPayload,
    *,
    message: bytes,
    nonce: bytes,
    id_payload: IDiPayload | IDrPayload,
    our_hashes: Collection[int] = SUPPORTED_HASHES,
) -> None:
    """Check the peer's AUTH: over the peer's IKE_SA_INIT `message`, OUR `nonce` and the peer's ID."""
    peer_is_initiator = not keymat.initiator
    octets = keymat.auth_octets(
        signer_is_initiator=peer_is_initiator, message=message, nonce=nonce, rest_of_id=id_payload.rest_of_id
    )
    if isinstance(credential, PreSharedKey):
        credential.verify(keymat.suite.prf, auth, octets)
    else:
        verify_signature(credential, auth, octets, our_hashes=our_hashes)
