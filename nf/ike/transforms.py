"""IKEv2 transform identifiers (RFC 7296 s3.3.2, IANA) and the algorithm objects behind them.

Each table maps a Transform ID to an immutable algorithm object that knows its sizes and performs its
operation with `cryptography` (HMAC via the stdlib `hmac` module). Algorithm objects hold no keys: the
keymat passes its keys in, so only nf.ike.keymat ever holds SK_*. Key exchanges take an injected
`rng(n) -> bytes` so protocol code stays deterministic under test.
"""

from __future__ import annotations

import abc
import enum
import hmac
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.utils import CryptographyDeprecationWarning

from nf.ike.errors import (
    IKEParseError,
    KeyExchangeError,
    KeyExchangeReason,
    ParseReason,
)

Rng = Callable[[int], bytes]


class TransformType(enum.IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


class EncrId(enum.IntEnum):
    AES_CBC = 12
    AES_GCM_16 = 20


class PrfId(enum.IntEnum):
    HMAC_SHA1 = 2
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class IntegId(enum.IntEnum):
    NONE = 0
    HMAC_SHA1_96 = 2
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DhId(enum.IntEnum):
    MODP_2048 = 14
    ECP_256 = 19
    ECP_384 = 20
    CURVE25519 = 31


KEY_LENGTH_ATTRIBUTE = 14  # RFC 7296 s3.3.5, always TV, value in bits


# --- PRF -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrfAlgorithm:
    """An HMAC PRF; its preferred key size is its output size (RFC 7296 s2.13)."""

    transform_id: int
    name: str
    hash_name: str
    size: int

    def prf(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash_name).digest()

    def prf_plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ of RFC 7296 s2.13: T1 = prf(K, S|0x01), Tn = prf(K, Tn-1|S|n), at most 255 blocks."""
        blocks = -(-length // self.size)
        if blocks > 255:
            raise ValueError(f"prf+ cannot produce {length} octets with {self.name}")
        out = bytearray()
        block = b""
        for counter in range(1, blocks + 1):
            block = self.prf(key, block + seed + bytes([counter]))
            out += block
        return bytes(out[:length])


PRFS: dict[int, PrfAlgorithm] = {
    alg.transform_id: alg
    for alg in (
        PrfAlgorithm(PrfId.HMAC_SHA1, "prfsha1", "sha1", 20),
        PrfAlgorithm(PrfId.HMAC_SHA2_256, "prfsha256", "sha256", 32),
        PrfAlgorithm(PrfId.HMAC_SHA2_384, "prfsha384", "sha384", 48),
        PrfAlgorithm(PrfId.HMAC_SHA2_512, "prfsha512", "sha512", 64),
    )
}


# --- Integrity -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntegAlgorithm:
    """Truncated HMAC (RFC 4868 / RFC 2404): key size = hash size, ICV = first `icv_size` octets."""

    transform_id: int
    name: str
    hash_name: str
    key_size: int
    icv_size: int

    def mac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash_name).digest()[: self.icv_size]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool:
        return hmac.compare_digest(self.mac(key, data), icv)


INTEGS: dict[int, IntegAlgorithm] = {
    alg.transform_id: alg
    for alg in (
        IntegAlgorithm(IntegId.HMAC_SHA1_96, "sha1", "sha1", 20, 12),
        IntegAlgorithm(IntegId.HMAC_SHA2_256_128, "sha256", "sha256", 32, 16),
        IntegAlgorithm(IntegId.HMAC_SHA2_384_192, "sha384", "sha384", 48, 24),
        IntegAlgorithm(IntegId.HMAC_SHA2_512_256, "sha512", "sha512", 64, 32),
    )
}


# --- Encryption ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncrAlgorithm:
    """AES-CBC (RFC 3602, with separate INTEG) or AES-GCM with a 16-octet ICV (RFC 5282, AEAD).

    For GCM the keymat key is the AES key followed by a 4-octet salt (RFC 5282 s7.1); the nonce is
    salt | 8-octet IV. CBC needs block-aligned plaintext (the SK codec pads); GCM needs none.
    """

    transform_id: int
    key_bits: int
    name: str
    aead: bool

    @property
    def key_size(self) -> int:
        """Octets of keying material taken from prf+ for SK_e (AES key plus GCM salt)."""
        return self.key_bits // 8 + (4 if self.aead else 0)

    @property
    def iv_size(self) -> int:
        return 8 if self.aead else 16

    @property
    def icv_size(self) -> int:
        """ICV octets the cipher itself appends (0 for CBC, whose ICV comes from INTEG)."""
        return 16 if self.aead else 0

    @property
    def block_size(self) -> int:
        return 1 if self.aead else 16

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Ciphertext (with the GCM tag appended for AEAD); `aad` is ignored by CBC."""
        if self.aead:
            return AESGCM(key[:-4]).encrypt(key[-4:] + iv, plaintext, aad)
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Plaintext; raises IKEParseError(INTEGRITY_CHECK_FAILED) on a bad GCM tag."""
        if self.aead:
            try:
                return AESGCM(key[:-4]).decrypt(key[-4:] + iv, ciphertext, aad)
            except InvalidTag:
                raise IKEParseError(ParseReason.INTEGRITY_CHECK_FAILED, "AES-GCM tag mismatch") from None
        if not ciphertext or len(ciphertext) % 16:
            raise IKEParseError(ParseReason.BAD_LENGTH, f"CBC ciphertext of {len(ciphertext)} octets")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


ENCRS: dict[tuple[int, int], EncrAlgorithm] = {
    (alg.transform_id, alg.key_bits): alg
    for alg in (
        EncrAlgorithm(EncrId.AES_CBC, 128, "aes128", False),
        EncrAlgorithm(EncrId.AES_CBC, 192, "aes192", False),
        EncrAlgorithm(EncrId.AES_CBC, 256, "aes256", False),
        EncrAlgorithm(EncrId.AES_GCM_16, 128, "aes128gcm16", True),
        EncrAlgorithm(EncrId.AES_GCM_16, 192, "aes192gcm16", True),
        EncrAlgorithm(EncrId.AES_GCM_16, 256, "aes256gcm16", True),
    )
}


# --- Key exchange ----------------------------------------------------------------------------------

MODP_2048_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526 s3, generator 2

# Group orders (SEC 2 / FIPS 186-4), used to map injected random octets onto a valid private scalar.
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)


class KeyExchange(abc.ABC):
    """One side of a key exchange: our public value and, given the peer's, the shared secret g^ir.

    repr never shows the private value; the shared secret is returned once to feed the keymat.
    """

    group: DhGroup

    @property
    @abc.abstractmethod
    def public_value(self) -> bytes:
        """Our KE payload data in the group's IKE encoding."""

    @abc.abstractmethod
    def shared_secret(self, peer_value: bytes) -> bytes:
        """g^ir from the peer's KE data; KeyExchangeError for malformed or weak values."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(group={self.group.name})"


class _ModpExchange(KeyExchange):
    def __init__(self, group: DhGroup, rng: Rng) -> None:
        self.group = group
        prime = MODP_2048_PRIME
        # 512-bit private exponent: far above the 2x security-level rule for a 2048-bit group.
        exponent = int.from_bytes(rng(64), "big") % (prime - 3) + 2
        with warnings.catch_warnings():  # FFDH is deprecated in cryptography but MUST for IKEv2 (RFC 8247)
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            self._numbers = dh.DHParameterNumbers(prime, 2)
            generator = dh.DHPublicNumbers(2, self._numbers)
            # cryptography builds DH keys only from (x, g^x); g^x is obtained as the DH function of x
            # applied to g itself, so every exponentiation runs in OpenSSL.
            bootstrap = dh.DHPrivateNumbers(exponent, generator).private_key()
            public = bootstrap.exchange(generator.public_key()).rjust(256, b"\0")
            numbers = dh.DHPublicNumbers(int.from_bytes(public, "big"), self._numbers)
            self._key = dh.DHPrivateNumbers(exponent, numbers).private_key()
        self._public = public

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != 256:
            raise KeyExchangeError(KeyExchangeReason.BAD_PUBLIC_VALUE, f"MODP-2048 length {len(peer_value)}")
        peer = int.from_bytes(peer_value, "big")
        if not 1 < peer < MODP_2048_PRIME - 1:
            raise KeyExchangeError(KeyExchangeReason.BAD_PUBLIC_VALUE, "MODP-2048 value out of range")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            public = dh.DHPublicNumbers(peer, self._numbers).public_key()
            secret = self._key.exchange(public)
        return secret.rjust(256, b"\0")


class _EcpExchange(KeyExchange):
    def __init__(self, group: DhGroup, rng: Rng, curve: ec.EllipticCurve, order: int) -> None:
        self.group = group
        self._curve = curve
        size = group.secret_size
        scalar = int.from_bytes(rng(size + 8), "big") % (order - 1) + 1
        self._key = ec.derive_private_key(scalar, curve)
        point = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._public = point[1:]  # IKE carries x | y without the 0x04 prefix (RFC 5903)

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != self.group.public_size:
            raise KeyExchangeError(
                KeyExchangeReason.BAD_PUBLIC_VALUE, f"{self.group.name} value of {len(peer_value)}"
            )
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_value)
        except ValueError:
            raise KeyExchangeError(KeyExchangeReason.BAD_PUBLIC_VALUE, f"{self.group.name} point") from None
        return self._key.exchange(ec.ECDH(), peer)


class _X25519Exchange(KeyExchange):
    def __init__(self, group: DhGroup, rng: Rng) -> None:
        self.group = group
        self._key = x25519.X25519PrivateKey.from_private_bytes(rng(32))
        self._public = self._key.public_key().public_bytes_raw()

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != 32:
            raise KeyExchangeError(KeyExchangeReason.BAD_PUBLIC_VALUE, f"X25519 value of {len(peer_value)}")
        try:
            secret = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_value))
        except ValueError:
            raise KeyExchangeError(KeyExchangeReason.ZERO_SHARED_SECRET, "X25519 result is zero") from None
        if not any(secret):  # RFC 8031 / RFC 7748 s6: peers do not check for us
            raise KeyExchangeError(KeyExchangeReason.ZERO_SHARED_SECRET, "X25519 result is zero")
        return secret


@dataclass(frozen=True)
class DhGroup:
    """A key exchange method: sizes of the KE data and of g^ir, and a factory for our side."""

    transform_id: int
    name: str
    public_size: int
    secret_size: int

    def generate(self, rng: Rng) -> KeyExchange:
        if self.transform_id == DhId.MODP_2048:
            return _ModpExchange(self, rng)
        if self.transform_id == DhId.ECP_256:
            return _EcpExchange(self, rng, ec.SECP256R1(), _P256_ORDER)
        if self.transform_id == DhId.ECP_384:
            return _EcpExchange(self, rng, ec.SECP384R1(), _P384_ORDER)
        return _X25519Exchange(self, rng)


DH_GROUPS: dict[int, DhGroup] = {
    group.transform_id: group
    for group in (
        DhGroup(DhId.MODP_2048, "modp2048", 256, 256),
        DhGroup(DhId.ECP_256, "ecp256", 64, 32),
        DhGroup(DhId.ECP_384, "ecp384", 96, 48),
        DhGroup(DhId.CURVE25519, "x25519", 32, 32),
    )
}

