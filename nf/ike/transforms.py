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
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519
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
    MODP_3072 = 15
    MODP_4096 = 16
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31
    CURVE448 = 32


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
)  # RFC 3526 s3, generator 2 (as are the two below)
MODP_3072_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526 s4
MODP_4096_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526 s5

# Group orders (SEC 2 / FIPS 186-4), used to map injected random octets onto a valid private scalar.
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)
_P521_ORDER = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03B"
    "B5C9B8899C47AEBB6FB71E91386409",
    16,
)

# Octets of random input behind a MODP private exponent: 512 bits, at least twice the security strength
# of every MODP group here (SP 800-57: 112/128/152 bits for 2048/3072/4096), as RFC 3526 s8 advises.
_MODP_EXPONENT_OCTETS = 64


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
    """A RFC 3526 MODP group with generator 2; KE data and g^ir are both big-endian, padded to the prime."""

    def __init__(self, group: DhGroup, rng: Rng, prime: int) -> None:
        self.group = group
        self._prime = prime
        size = group.public_size
        exponent = int.from_bytes(rng(_MODP_EXPONENT_OCTETS), "big") % (prime - 3) + 2
        with warnings.catch_warnings():  # FFDH is deprecated in cryptography but MUST for IKEv2 (RFC 8247)
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            self._numbers = dh.DHParameterNumbers(prime, 2)
            generator = dh.DHPublicNumbers(2, self._numbers)
            # cryptography builds DH keys only from (x, g^x); g^x is obtained as the DH function of x
            # applied to g itself, so every exponentiation runs in OpenSSL.
            bootstrap = dh.DHPrivateNumbers(exponent, generator).private_key()
            public = bootstrap.exchange(generator.public_key()).rjust(size, b"\0")
            numbers = dh.DHPublicNumbers(int.from_bytes(public, "big"), self._numbers)
            self._key = dh.DHPrivateNumbers(exponent, numbers).private_key()
        self._public = public

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_value: bytes) -> bytes:
        size = self.group.public_size
        if len(peer_value) != size:
            raise KeyExchangeError(
                KeyExchangeReason.BAD_PUBLIC_VALUE, f"{self.group.name} value of {len(peer_value)}"
            )
        peer = int.from_bytes(peer_value, "big")
        if not 1 < peer < self._prime - 1:
            raise KeyExchangeError(
                KeyExchangeReason.BAD_PUBLIC_VALUE, f"{self.group.name} value out of range"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            public = dh.DHPublicNumbers(peer, self._numbers).public_key()
            secret = self._key.exchange(public)
        return secret.rjust(size, b"\0")


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
        # OpenSSL returns the x coordinate padded to the field size: the RFC 5903 g^ir as it stands.
        return self._key.exchange(ec.ECDH(), peer)


class _MontgomeryExchange(KeyExchange):
    """X25519 or X448 (RFC 8031): KE data and g^ir are raw little-endian u-coordinates of one size."""

    def __init__(self, group: DhGroup, public: bytes) -> None:
        self.group = group
        self._public = public

    @property
    def public_value(self) -> bytes:
        return self._public

    @abc.abstractmethod
    def _exchange(self, peer_value: bytes) -> bytes:
        """The raw function result; ValueError when OpenSSL finds it all zero."""

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != self.group.public_size:
            raise KeyExchangeError(
                KeyExchangeReason.BAD_PUBLIC_VALUE, f"{self.group.name} value of {len(peer_value)}"
            )
        try:
            secret = self._exchange(peer_value)
        except ValueError:
            raise KeyExchangeError(
                KeyExchangeReason.ZERO_SHARED_SECRET, f"{self.group.name} result is zero"
            ) from None
        if not any(secret):  # RFC 8031 / RFC 7748 s6: peers do not check for us
            raise KeyExchangeError(KeyExchangeReason.ZERO_SHARED_SECRET, f"{self.group.name} result is zero")
        return secret


class _X25519Exchange(_MontgomeryExchange):
    def __init__(self, group: DhGroup, rng: Rng) -> None:
        self._key = x25519.X25519PrivateKey.from_private_bytes(rng(32))
        super().__init__(group, self._key.public_key().public_bytes_raw())

    def _exchange(self, peer_value: bytes) -> bytes:
        return self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_value))


class _X448Exchange(_MontgomeryExchange):
    def __init__(self, group: DhGroup, rng: Rng) -> None:
        self._key = x448.X448PrivateKey.from_private_bytes(rng(56))
        super().__init__(group, self._key.public_key().public_bytes_raw())

    def _exchange(self, peer_value: bytes) -> bytes:
        return self._key.exchange(x448.X448PublicKey.from_public_bytes(peer_value))


@dataclass(frozen=True)
class DhGroup:
    """A key exchange method: sizes of the KE data and of g^ir, and a factory for our side."""

    transform_id: int
    name: str
    public_size: int
    secret_size: int

    def generate(self, rng: Rng) -> KeyExchange:
        return _EXCHANGES[self.transform_id](self, rng)


_EXCHANGES: dict[int, Callable[[DhGroup, Rng], KeyExchange]] = {
    DhId.MODP_2048: lambda group, rng: _ModpExchange(group, rng, MODP_2048_PRIME),
    DhId.MODP_3072: lambda group, rng: _ModpExchange(group, rng, MODP_3072_PRIME),
    DhId.MODP_4096: lambda group, rng: _ModpExchange(group, rng, MODP_4096_PRIME),
    DhId.ECP_256: lambda group, rng: _EcpExchange(group, rng, ec.SECP256R1(), _P256_ORDER),
    DhId.ECP_384: lambda group, rng: _EcpExchange(group, rng, ec.SECP384R1(), _P384_ORDER),
    DhId.ECP_521: lambda group, rng: _EcpExchange(group, rng, ec.SECP521R1(), _P521_ORDER),
    DhId.CURVE25519: _X25519Exchange,
    DhId.CURVE448: _X448Exchange,
}

DH_GROUPS: dict[int, DhGroup] = {
    group.transform_id: group
    for group in (
        DhGroup(DhId.MODP_2048, "modp2048", 256, 256),
        DhGroup(DhId.MODP_3072, "modp3072", 384, 384),
        DhGroup(DhId.MODP_4096, "modp4096", 512, 512),
        DhGroup(DhId.ECP_256, "ecp256", 64, 32),
        DhGroup(DhId.ECP_384, "ecp384", 96, 48),
        DhGroup(DhId.ECP_521, "ecp521", 132, 66),
        DhGroup(DhId.CURVE25519, "x25519", 32, 32),
        DhGroup(DhId.CURVE448, "curve448", 56, 56),
    )
}
