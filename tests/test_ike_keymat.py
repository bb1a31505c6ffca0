"""IKE key derivation and key exchange: known answers (strongSwan prf+, libreswan/NIST-style IKEv2 KDF,
RFC 7748), every SK_* checked through the keymat's operations only, rekey, and key hygiene."""

from __future__ import annotations

import hmac
import os
import pickle
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nf.ike.errors import IKEParseError, KeyExchangeError, KeyExchangeReason, ParseReason
from nf.ike.keymat import IKEKeymat
from nf.ike.message import decode_message, encode_message, protected
from nf.ike.payloads import DeletePayload, NotifyPayload, NotifyType, PayloadType
from nf.ike.proposals import CipherSuite
from nf.ike.transforms import (
    DH_GROUPS,
    ENCRS,
    INTEGS,
    MODP_2048_PRIME,
    MODP_3072_PRIME,
    MODP_4096_PRIME,
    PRFS,
    DhId,
    EncrId,
    IntegId,
    PrfId,
)
from nf.twamp.keysource import SharedSecret

# --- prf+ (strongSwan src/libstrongswan/tests/suites/test_prf_plus.c, counter variant) --------------

STRONGSWAN_PRF_PLUS = bytes.fromhex(
    "b9bdc0"
    "8988b4c2b75a"
    "a93e596ac84205"
    "fa2ddde1bf7a2572067b00e14b237732"
    "830509981ad2f94a"
    "8c32a47daa2255b6"
    "60c436347ae756a6edc023477d80"
    "9590e682f61d9c04b06b4ad971a34c8147fa6679"
    "2ff1434b93c722b32e12f48832ebc15ce2369ce71fe9b7b81e5704c14d0f5280a6ec626e992d7a9f"
)


def test_prf_plus_strongswan_vector() -> None:
    prf = PRFS[PrfId.HMAC_SHA2_256]
    out = prf.prf_plus(b"\x0b" * 20, b"Hi There", len(STRONGSWAN_PRF_PLUS))
    assert out == STRONGSWAN_PRF_PLUS
    assert out[:32] == hmac.new(b"\x0b" * 20, b"Hi There\x01", "sha256").digest()


def test_prf_plus_stops_after_255_blocks() -> None:
    prf = PRFS[PrfId.HMAC_SHA2_256]
    assert len(prf.prf_plus(b"k", b"s", 255 * 32)) == 255 * 32
    with pytest.raises(ValueError):
        prf.prf_plus(b"k", b"s", 255 * 32 + 1)


# --- IKEv2 KDF worked vector (libreswan's NSS CAVS helper comment, PRF-HMAC-SHA1; interop.md s8.1) ------

GIR = bytes.fromhex("4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52")
GIR_NEW = bytes.fromhex("863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330")
NI, NR = bytes.fromhex("32b50d5f4a3763f3"), bytes.fromhex("9206a04b26564cb1")
SPII, SPIR = bytes.fromhex("34c9e7c188868785"), bytes.fromhex("3ff77d760d2b2199")
SKEYSEED = bytes.fromhex("a9a7b222b59f8f48645f28a1db5b5f5d7479cba7")
DKM = bytes.fromhex(
    "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002a2a63080e514a062768b76606f9fa5e9"
    "92204fc5a670bde3f10d6b027113936a5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
    "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435a7a56cc4"
)
SKEYSEED_REKEY = bytes.fromhex("63e81194946ebd05df7df5ebf5d8750056bf1f1d")
DKM_CHILD = bytes.fromhex(
    "8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c5811a8e7b5d1cdabd9560b2d5e092d1f24e"
    "2d4b85eccdf0ad0dc9abd94b51ee71814ca6dbc8bb51b6309f5b9545c7eb35cf5580b1e521a8fe20754a2d883ba0c2cf"
    "285f524aea6545b33106bc03e614296d319d41d4b50b3f510b1c0a22f3e664994d234cb4"
)
DKM_CHILD_DH = bytes.fromhex(
    "bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d37301628190e38c66232eab4b3ab14c400a519"
    "7dd3730ed4820a8a10394d51e1c0400052f63ebd36b0e7ef53aaed31eba4a5080d7d4b5666023a8bbb5ffb7857240f9a"
    "05884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e27899c7054d56fd74c"
)

# AES-CBC-128 / HMAC-SHA1-96 / PRF-HMAC-SHA1 splits those 132 octets exactly: d ai ar ei er pi pr.
SHA1_SUITE = CipherSuite(
    ENCRS[(EncrId.AES_CBC, 128)],
    PRFS[PrfId.HMAC_SHA1],
    INTEGS[IntegId.HMAC_SHA1_96],
    DH_GROUPS[DhId.MODP_2048],
)
SK_D, SK_AI, SK_AR, SK_EI, SK_ER, SK_PI, SK_PR = (
    DKM[0:20],
    DKM[20:40],
    DKM[40:60],
    DKM[60:76],
    DKM[76:92],
    DKM[92:112],
    DKM[112:132],
)


def _sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "sha1").digest()


def _vector_keymat(initiator: bool) -> IKEKeymat:
    return IKEKeymat.derive(
        SHA1_SUITE,
        shared_secret=GIR,
        nonce_i=NI,
        nonce_r=NR,
        spi_i=SPII,
        spi_r=SPIR,
        initiator=initiator,
        rng=os.urandom,
    )


def test_kdf_vector_skeyseed_and_child_dkm() -> None:
    prf = PRFS[PrfId.HMAC_SHA1]
    assert prf.prf(NI + NR, GIR) == SKEYSEED
    assert prf.prf_plus(SKEYSEED, NI + NR + SPII + SPIR, 132) == DKM
    assert prf.prf_plus(SK_D, NI + NR, 132) == DKM_CHILD
    assert prf.prf_plus(SK_D, GIR_NEW + NI + NR, 132) == DKM_CHILD_DH
    assert prf.prf(SK_D, GIR_NEW + NI + NR) == SKEYSEED_REKEY


def test_kdf_vector_sk_d_via_ippm_secret() -> None:
    keymat = _vector_keymat(True)
    assert keymat.ippm_secret() == SharedSecret(_sha1(SK_D, b"IPPM"))
    assert keymat.ippm_secret() != SharedSecret(_sha1(SK_AI, b"IPPM"))


def test_kdf_vector_sk_p_via_auth_octets() -> None:
    keymat = _vector_keymat(False)
    rest = bytes.fromhex("02000000") + b"peer.example"
    octets_i = keymat.auth_octets(signer_is_initiator=True, message=b"M1", nonce=b"NR", rest_of_id=rest)
    octets_r = keymat.auth_octets(signer_is_initiator=False, message=b"M2", nonce=b"NI", rest_of_id=rest)
    assert octets_i == b"M1NR" + _sha1(SK_PI, rest)
    assert octets_r == b"M2NI" + _sha1(SK_PR, rest)


def test_kdf_vector_initiator_sends_with_sk_ei_and_sk_ai() -> None:
    keymat = _vector_keymat(True)
    msg = protected(SPII, SPIR, 37, 2, is_response=False, from_initiator=True, payloads=[DeletePayload(1)])
    raw = encode_message(msg, keymat)
    aad, iv, ciphertext, icv = raw[:32], raw[32:48], raw[48:-12], raw[-12:]
    assert icv == _sha1(SK_AI, aad + iv + ciphertext)[:12]
    decryptor = Cipher(algorithms.AES(SK_EI), modes.CBC(iv)).decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    assert plaintext[:8] == bytes.fromhex("00 00 00 08 01 00 00 00")
    assert plaintext[-1] == len(plaintext) - 9  # minimal padding, Pad Length last


def _responder_message(padding_length: int) -> bytes:
    """An INFORMATIONAL response built by hand with SK_er/SK_ar and an unusual amount of padding."""
    inner = bytes.fromhex("00 00 00 08 00 00 40 00")  # N(INITIAL_CONTACT)
    plaintext = inner + b"\xaa" * padding_length + bytes([padding_length])
    assert len(plaintext) % 16 == 0
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(SK_ER), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    sk_length = 4 + 16 + len(ciphertext) + 12
    aad = struct.pack("!8s8sBBBBII", SPII, SPIR, PayloadType.SK, 0x20, 37, 0x20, 3, 28 + sk_length)
    aad += struct.pack("!BBH", PayloadType.NOTIFY, 0, sk_length)
    return aad + iv + ciphertext + _sha1(SK_AR, aad + iv + ciphertext)[:12]


@pytest.mark.parametrize("padding_length", [7, 23, 247])
def test_kdf_vector_initiator_opens_sk_er_sk_ar_with_any_padding(padding_length: int) -> None:
    decoded = decode_message(_responder_message(padding_length), _vector_keymat(True))
    assert decoded.payloads == (NotifyPayload(NotifyType.INITIAL_CONTACT),) and decoded.is_response


def test_bad_pad_length_is_rejected_after_integrity() -> None:
    raw = bytearray(_responder_message(7))
    # Re-encrypt with an impossible Pad Length: 200 > plaintext.
    inner = bytes.fromhex("00 00 00 08 00 00 40 00") + bytes(7) + bytes([200])
    iv = bytes(raw[32:48])
    encryptor = Cipher(algorithms.AES(SK_ER), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(inner) + encryptor.finalize()
    raw[48:64] = ciphertext
    raw[-12:] = _sha1(SK_AR, bytes(raw[:48]) + ciphertext)[:12]
    with pytest.raises(IKEParseError) as info:
        decode_message(bytes(raw), _vector_keymat(True))
    assert info.value.reason is ParseReason.BAD_PADDING


def test_kdf_vector_rekey() -> None:
    """SKEYSEED' = prf(SK_d, g^ir(new) | Ni' | Nr'), expanded with prf+ (old PRF, like strongSwan)."""
    old = _vector_keymat(True)
    new_spi_i, new_spi_r = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")
    new = old.derive_rekeyed(
        SHA1_SUITE,
        shared_secret=GIR_NEW,
        nonce_i=NI,
        nonce_r=NR,
        spi_i=new_spi_i,
        spi_r=new_spi_r,
        initiator=False,
    )
    expected = PRFS[PrfId.HMAC_SHA1].prf_plus(SKEYSEED_REKEY, NI + NR + new_spi_i + new_spi_r, 132)
    assert new.ippm_secret() == SharedSecret(_sha1(expected[:20], b"IPPM"))
    assert (new.spi_i, new.spi_r, new.initiator) == (new_spi_i, new_spi_r, False)
    assert new.ippm_secret() != old.ippm_secret()


def test_rekey_with_a_new_prf_keeps_the_old_prf_for_derivation() -> None:
    old = _vector_keymat(True)
    sha256_suite = CipherSuite(SHA1_SUITE.encr, PRFS[PrfId.HMAC_SHA2_256], SHA1_SUITE.integ, SHA1_SUITE.dh)
    new = old.derive_rekeyed(
        sha256_suite, shared_secret=GIR_NEW, nonce_i=NI, nonce_r=NR, spi_i=SPII, spi_r=SPIR, initiator=True
    )
    stream = PRFS[PrfId.HMAC_SHA1].prf_plus(SKEYSEED_REKEY, NI + NR + SPII + SPIR, 32)
    assert new.ippm_secret() == SharedSecret(hmac.new(stream, b"IPPM", "sha256").digest())


# --- AES-GCM key/salt split (RFC 5282) -------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256])
def test_gcm_uses_key_then_salt_from_sk_e(bits: int) -> None:
    prf = PRFS[PrfId.HMAC_SHA2_256]
    suite = CipherSuite(ENCRS[(EncrId.AES_GCM_16, bits)], prf, None, DH_GROUPS[DhId.CURVE25519])
    nonce_i, nonce_r, secret = os.urandom(32), os.urandom(32), os.urandom(32)
    keymat = IKEKeymat.derive(
        suite,
        shared_secret=secret,
        nonce_i=nonce_i,
        nonce_r=nonce_r,
        spi_i=SPII,
        spi_r=SPIR,
        initiator=True,
        rng=os.urandom,
    )
    key_size = bits // 8 + 4
    stream = prf.prf_plus(
        prf.prf(nonce_i + nonce_r, secret), nonce_i + nonce_r + SPII + SPIR, 32 + 2 * key_size
    )
    sk_ei = stream[32 : 32 + key_size]  # no SK_ai/SK_ar for AEAD
    raw = encode_message(
        protected(SPII, SPIR, 37, 4, is_response=False, from_initiator=True, payloads=[]), keymat
    )
    aad, iv, sealed = raw[:32], raw[32:40], raw[40:]
    assert AESGCM(sk_ei[:-4]).decrypt(sk_ei[-4:] + iv, sealed, aad) == b"\x00"  # just Pad Length 0


# --- key exchange ----------------------------------------------------------------------------------


@pytest.mark.parametrize("group", sorted(DH_GROUPS))
def test_key_exchange_agrees_and_has_ike_sizes(group: int) -> None:
    dh = DH_GROUPS[group]
    a, b = dh.generate(os.urandom), dh.generate(os.urandom)
    assert len(a.public_value) == dh.public_size
    secret = a.shared_secret(b.public_value)
    assert secret == b.shared_secret(a.public_value) and len(secret) == dh.secret_size
    assert a.public_value.hex() not in repr(a)


@pytest.mark.parametrize("group", sorted(DH_GROUPS))
def test_key_exchange_is_driven_by_the_injected_rng(group: int) -> None:
    def fixed(n: int) -> bytes:
        return bytes(range(7, 7 + n))

    assert DH_GROUPS[group].generate(fixed).public_value == DH_GROUPS[group].generate(fixed).public_value


def test_x25519_rfc7748_vector() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_public = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    ours = DH_GROUPS[DhId.CURVE25519].generate(lambda n: alice)
    assert ours.public_value.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    expected = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert ours.shared_secret(bob_public).hex() == expected


@pytest.mark.parametrize(
    ("group", "value", "reason"),
    [
        (DhId.CURVE25519, bytes(32), KeyExchangeReason.ZERO_SHARED_SECRET),
        (DhId.CURVE25519, bytes(31), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.ECP_256, b"\x01" * 64, KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.ECP_384, b"\x01" * 64, KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_2048, bytes(256), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_2048, (1).to_bytes(256, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_2048, (MODP_2048_PRIME - 1).to_bytes(256, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_2048, MODP_2048_PRIME.to_bytes(256, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_2048, b"\x02", KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, bytes(384), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, (1).to_bytes(384, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, (MODP_3072_PRIME - 1).to_bytes(384, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, MODP_3072_PRIME.to_bytes(384, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, b"\xff" * 384, KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_3072, (2).to_bytes(256, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),  # a group-14 size
        (DhId.MODP_4096, bytes(512), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_4096, (1).to_bytes(512, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_4096, (MODP_4096_PRIME - 1).to_bytes(512, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_4096, MODP_4096_PRIME.to_bytes(512, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.MODP_4096, (2).to_bytes(513, "big"), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.ECP_521, b"\x01" * 132, KeyExchangeReason.BAD_PUBLIC_VALUE),  # not on the curve
        (DhId.ECP_521, bytes(132), KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.ECP_521, b"\x01" * 96, KeyExchangeReason.BAD_PUBLIC_VALUE),  # a P-384 size
        (DhId.ECP_521, b"\x01" * 133, KeyExchangeReason.BAD_PUBLIC_VALUE),
        (DhId.ECP_521, b"\xff" * 132, KeyExchangeReason.BAD_PUBLIC_VALUE),  # coordinates beyond the field
        (DhId.CURVE448, bytes(56), KeyExchangeReason.ZERO_SHARED_SECRET),
        (DhId.CURVE448, bytes(32), KeyExchangeReason.BAD_PUBLIC_VALUE),  # an X25519 size
        (DhId.CURVE448, bytes(57), KeyExchangeReason.BAD_PUBLIC_VALUE),
    ],
)
def test_weak_or_malformed_peer_values_are_refused(
    group: int, value: bytes, reason: KeyExchangeReason
) -> None:
    with pytest.raises(KeyExchangeError) as info:
        DH_GROUPS[group].generate(os.urandom).shared_secret(value)
    assert info.value.reason is reason


# --- hygiene: keys never leave the keymat -----------------------------------------------------------


def test_keymat_exposes_no_key_material() -> None:
    keymat = _vector_keymat(True)
    text = repr(keymat) + str(keymat)
    for key in (SK_D, SK_AI, SK_AR, SK_EI, SK_ER, SK_PI, SK_PR, SKEYSEED):
        assert key.hex() not in text.lower()
    assert "34c9e7c188868785" in text and "aes128" in text
    public_bytes = {
        name for name in dir(keymat) if not name.startswith("_") and isinstance(getattr(keymat, name), bytes)
    }
    assert public_bytes == {"spi_i", "spi_r"}
    assert not hasattr(keymat, "__dict__")
    with pytest.raises(TypeError):
        pickle.dumps(keymat)
    assert repr(keymat.ippm_secret()) == "SharedSecret(<hidden>)"


def test_ippm_secret_equality_is_by_value() -> None:
    assert _vector_keymat(True).ippm_secret() == _vector_keymat(False).ippm_secret()
    assert SharedSecret(b"a") != SharedSecret(b"b")
    with pytest.raises(TypeError):
        hash(SharedSecret(b"a"))


def test_gcm_body_needs_no_block_alignment() -> None:
    """GCM needs no block alignment: the smallest body is IV + Pad Length + tag (strongSwan does the same)."""
    suite = CipherSuite(
        ENCRS[(EncrId.AES_GCM_16, 128)], PRFS[PrfId.HMAC_SHA2_256], None, DH_GROUPS[DhId.ECP_256]
    )
    keymat = IKEKeymat.derive(
        suite,
        shared_secret=b"s",
        nonce_i=bytes(16),
        nonce_r=bytes(16),
        spi_i=SPII,
        spi_r=SPIR,
        initiator=False,
        rng=os.urandom,
    )
    assert keymat.sk_body_length(0) == 8 + 1 + 16
    assert keymat.sk_body_length(5) == 8 + 6 + 16
    assert _vector_keymat(True).sk_body_length(0) == 16 + 16 + 12


def test_modp_public_value_is_two_to_the_private_exponent() -> None:
    """Independent check of the group-14 public value (RFC 3526: g = 2), computed here with Python ints."""
    seed = bytes(range(1, 65))
    exponent = int.from_bytes(seed, "big") % (MODP_2048_PRIME - 3) + 2
    ours = DH_GROUPS[DhId.MODP_2048].generate(lambda n: seed)
    assert int.from_bytes(ours.public_value, "big") == pow(2, exponent, MODP_2048_PRIME)
