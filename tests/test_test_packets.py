"""TWAMP-Test packet codecs: layouts against the RFC tables, crypto against independent AES/HMAC."""

from __future__ import annotations

import hmac
from hashlib import sha1

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import (
    REFLECTOR_AUTH,
    REFLECTOR_OPEN,
    SENDER_AUTH,
    SENDER_AUTH_SYMMETRIC,
    SENDER_OPEN,
    SENDER_OPEN_SYMMETRIC,
    ReflectorPacket,
    SenderPacket,
    TestPacketCodec,
    TestPacketError,
    TestPacketErrorReason,
    ntp_from_ns,
    ntp_from_unix,
    ntp_now,
    unix_from_ntp,
)
from nf.twamp.timestamps import decode_timestamp, encode_timestamp

AES_KEY = bytes(range(16))
HMAC_KEY = bytes(range(100, 132))
ALL_MODES = list(SecurityMode)

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
padding = st.binary(max_size=300)


def _keys() -> TestSessionKeys:
    return TestSessionKeys(AES_KEY, HMAC_KEY)


def _codec(mode: SecurityMode, symmetric: bool = False) -> TestPacketCodec:
    return TestPacketCodec(mode, _keys() if mode.test_is_protected else None, symmetric)


def _ecb(data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(AES_KEY), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def _cbc_decrypt(data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(AES_KEY), modes.CBC(bytes(16))).decryptor()
    return dec.update(data) + dec.finalize()


def _hmac16(data: bytes) -> bytes:
    return hmac.new(HMAC_KEY, data, sha1).digest()[:16]


def test_layout_sizes_and_offsets_follow_the_rfc_tables() -> None:
    assert (SENDER_OPEN.size, SENDER_OPEN_SYMMETRIC.size, SENDER_AUTH.size, SENDER_AUTH_SYMMETRIC.size) == (
        14,
        41,
        48,
        112,
    )
    assert (REFLECTOR_OPEN.size, REFLECTOR_AUTH.size) == (41, 112)
    assert SENDER_OPEN.offsets == {"seq": 0, "timestamp": 4, "error_estimate": 12}
    assert {k: SENDER_AUTH.offsets[k] for k in ("timestamp", "error_estimate", "hmac")} == {
        "timestamp": 16,
        "error_estimate": 24,
        "hmac": 32,
    }
    assert {k: REFLECTOR_OPEN.offsets[k] for k in REFLECTOR_OPEN.names} == {
        "seq": 0,
        "timestamp": 4,
        "error_estimate": 12,
        "receive_timestamp": 16,
        "sender_seq": 24,
        "sender_timestamp": 28,
        "sender_error_estimate": 36,
        "sender_ttl": 40,
    }
    assert {k: REFLECTOR_AUTH.offsets[k] for k in REFLECTOR_AUTH.names} == {
        "seq": 0,
        "timestamp": 16,
        "error_estimate": 24,
        "receive_timestamp": 32,
        "sender_seq": 48,
        "sender_timestamp": 64,
        "sender_error_estimate": 72,
        "sender_ttl": 80,
        "hmac": 96,
    }
    assert SENDER_AUTH_SYMMETRIC.offsets["hmac"] == 32  # the ordinary header, then 64 MBZ octets


def test_unauthenticated_sender_bytes_are_plain_fields() -> None:
    codec = _codec(SecurityMode.UNAUTHENTICATED)
    ts = ntp_from_unix(1_700_000_000.5)
    wire = codec.encode_sender(SenderPacket(7, ts, 0x8001, b"\xaa\xbb"))
    assert wire == (7).to_bytes(4, "big") + ts.to_bytes(8, "big") + b"\x80\x01" + b"\xaa\xbb"
    assert decode_timestamp(wire, 4) == pytest.approx(1_700_000_000.5)


def test_symmetric_unauthenticated_sender_has_27_zero_octets_before_padding() -> None:
    wire = _codec(SecurityMode.MIXED, symmetric=True).encode_sender(SenderPacket(1, 2, 3, b"\xff" * 5))
    assert len(wire) == 41 + 5
    assert wire[14:41] == bytes(27)
    assert wire[41:] == b"\xff" * 5


def test_authenticated_sender_encrypts_first_block_and_hmacs_its_plaintext() -> None:
    codec = _codec(SecurityMode.AUTHENTICATED)
    wire = codec.encode_sender(SenderPacket(0x01020304, 0x1122334455667788, 0x8001, b"pad"))
    plain_block = bytes.fromhex("01020304") + bytes(12)
    assert wire[:16] == _ecb(plain_block)
    assert wire[16:24] == bytes.fromhex("1122334455667788")  # timestamp in clear
    assert wire[24:26] == b"\x80\x01"
    assert wire[26:32] == bytes(6)
    assert wire[32:48] == _hmac16(plain_block)
    assert wire[48:] == b"pad"


def test_encrypted_sender_cbc_encrypts_two_blocks_with_zero_iv() -> None:
    codec = _codec(SecurityMode.ENCRYPTED)
    wire = codec.encode_sender(SenderPacket(5, 6, 7, b""))
    plain = _cbc_decrypt(wire[:32])
    assert plain == (5).to_bytes(4, "big") + bytes(12) + (6).to_bytes(8, "big") + (7).to_bytes(
        2, "big"
    ) + bytes(6)
    assert wire[32:48] == _hmac16(plain)


def test_encrypted_reflector_covers_six_blocks() -> None:
    codec = _codec(SecurityMode.ENCRYPTED)
    wire = codec.encode_reflector(ReflectorPacket(1, 2, 3, 4, 5, 6, 7, 64, b"\x01" * 10))
    plain = _cbc_decrypt(wire[:96])
    assert plain[80] == 64 and plain[48:52] == (5).to_bytes(4, "big")
    assert wire[96:112] == _hmac16(plain)
    assert wire[112:] == b"\x01" * 10


def test_authenticated_reflector_leaves_timestamps_in_clear() -> None:
    codec = _codec(SecurityMode.AUTHENTICATED)
    wire = codec.encode_reflector(ReflectorPacket(9, 0xAAAA, 3, 0xBBBB, 5, 0xCCCC, 7, 200))
    assert wire[:16] == _ecb((9).to_bytes(4, "big") + bytes(12))
    assert wire[16:24] == (0xAAAA).to_bytes(8, "big")
    assert wire[32:40] == (0xBBBB).to_bytes(8, "big")
    assert wire[80] == 200
    assert wire[96:112] == _hmac16(_ecb_decrypt(wire[:16]))


def _ecb_decrypt(data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(AES_KEY), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


@pytest.mark.parametrize("mode", [SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED])
@pytest.mark.parametrize("symmetric", [False, True])
def test_any_flipped_bit_in_the_protected_part_is_a_bad_hmac(mode: SecurityMode, symmetric: bool) -> None:
    codec = _codec(mode, symmetric)
    wire = codec.encode_sender(SenderPacket(1, 2, 3, b"xyz"))
    protected = codec.sender_layout.offsets["hmac"] + 16
    covered = 16 if mode is SecurityMode.AUTHENTICATED else codec.sender_layout.offsets["hmac"]
    for index in [*range(0, covered, 5), *range(protected - 16, protected)]:
        damaged = bytearray(wire)
        damaged[index] ^= 0x01
        with pytest.raises(TestPacketError) as caught:
            codec.decode_sender(bytes(damaged))
        assert caught.value.reason is TestPacketErrorReason.BAD_HMAC
    # Padding is not covered by the HMAC (RFC 4656 s4.1.2).
    damaged = bytearray(wire)
    damaged[-1] ^= 0x01
    assert codec.decode_sender(bytes(damaged)).padding == b"xy" + bytes([ord("z") ^ 1])


def test_wrong_keys_are_a_bad_hmac() -> None:
    wire = _codec(SecurityMode.ENCRYPTED).encode_reflector(ReflectorPacket(1, 2, 3, 4, 5, 6, 7, 8))
    other = TestPacketCodec(SecurityMode.ENCRYPTED, TestSessionKeys(bytes(16), bytes(32)))
    with pytest.raises(TestPacketError, match="bad-hmac"):
        other.decode_reflector(wire)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_short_packets_are_rejected_with_reason(mode: SecurityMode, symmetric: bool) -> None:
    codec = _codec(mode, symmetric)
    for size in (0, codec.sender_layout.size - 1):
        with pytest.raises(TestPacketError) as caught:
            codec.decode_sender(bytes(size))
        assert caught.value.reason is TestPacketErrorReason.SHORT
    with pytest.raises(TestPacketError) as caught:
        codec.decode_reflector(bytes(codec.reflector_layout.size - 1))
    assert caught.value.reason is TestPacketErrorReason.SHORT


def test_oversized_padding_is_refused_on_encode() -> None:
    with pytest.raises(TestPacketError, match="too-long"):
        _codec(SecurityMode.UNAUTHENTICATED).encode_sender(SenderPacket(0, 0, 0, bytes(65507)))


def test_mode_and_keys_must_agree_and_repr_hides_keys() -> None:
    with pytest.raises(ValueError):
        TestPacketCodec(SecurityMode.AUTHENTICATED, None)
    with pytest.raises(ValueError):
        TestPacketCodec(SecurityMode.MIXED, _keys())
    codec = _codec(SecurityMode.ENCRYPTED)
    text = repr(codec) + repr(codec.sender_crypto) + str(codec.__slots__)
    assert AES_KEY.hex() not in text and HMAC_KEY.hex() not in text
    assert "encrypted" in repr(codec)


def test_mbz_octets_are_ignored_on_receipt() -> None:
    """RFC 7750/8186 reuse reflector MBZ octets, so a receiver must not reject them."""
    codec = _codec(SecurityMode.UNAUTHENTICATED)
    wire = bytearray(codec.encode_reflector(ReflectorPacket(1, 2, 3, 4, 5, 6, 7, 8)))
    wire[14] = wire[38] = 0xFF
    assert codec.decode_reflector(bytes(wire)).sender_ttl == 8


@given(st.sampled_from(ALL_MODES), st.booleans(), u32, u64, u16, padding)
def test_sender_round_trip(
    mode: SecurityMode, symmetric: bool, seq: int, ts: int, ee: int, pad: bytes
) -> None:
    codec = _codec(mode, symmetric)
    packet = SenderPacket(seq, ts, ee, pad)
    wire = codec.encode_sender(packet)
    assert len(wire) == codec.sender_layout.size + len(pad)
    assert codec.decode_sender(wire) == packet


@given(st.sampled_from(ALL_MODES), u32, u64, u16, u64, u32, u64, u16, st.integers(0, 255), padding)
def test_reflector_round_trip(
    mode: SecurityMode,
    seq: int,
    ts: int,
    ee: int,
    rts: int,
    sseq: int,
    sts: int,
    see: int,
    ttl: int,
    pad: bytes,
) -> None:
    codec = _codec(mode)
    packet = ReflectorPacket(seq, ts, ee, rts, sseq, sts, see, ttl, pad)
    wire = codec.encode_reflector(packet)
    assert len(wire) == codec.reflector_layout.size + len(pad)
    assert codec.decode_reflector(wire) == packet


@given(
    st.sampled_from([SecurityMode.UNAUTHENTICATED, SecurityMode.MIXED]), st.binary(min_size=41, max_size=200)
)
def test_open_reflector_bytes_survive_decode_encode_when_mbz_is_zero(mode: SecurityMode, raw: bytes) -> None:
    wire = bytearray(raw)
    wire[14:16] = bytes(2)
    wire[38:40] = bytes(2)
    codec = _codec(mode)
    assert codec.encode_reflector(codec.decode_reflector(bytes(wire))) == bytes(wire)


@given(st.binary(min_size=14, max_size=100))
def test_open_sender_bytes_survive_decode_encode(raw: bytes) -> None:
    codec = _codec(SecurityMode.UNAUTHENTICATED)
    assert codec.encode_sender(codec.decode_sender(raw)) == raw


@given(st.integers(0, 2**40 * 1_000_000_000))
def test_ntp_from_ns_is_exact_and_agrees_with_the_shared_codec(ns: int) -> None:
    ntp = ntp_from_ns(ns)
    assert ntp >> 32 == (ns // 1_000_000_000 + 2_208_988_800) & 0xFFFFFFFF
    # The fraction is the largest 2^-32 step not after the nanosecond value.
    frac = ntp & 0xFFFFFFFF
    assert frac * 1_000_000_000 >> 32 <= ns % 1_000_000_000 < ((frac + 1) * 1_000_000_000 >> 32) + 1
    unix = ns / 1e9
    if ns < 2**31 * 1_000_000_000 and unix < 2_085_978_496:  # the shared codec stops at the 2036 era wrap
        assert abs(unix_from_ntp(ntp) - decode_timestamp(encode_timestamp(unix))) < 1e-6


@given(st.floats(0, 2**31, allow_nan=False))
def test_ntp_from_unix_round_trip(unix: float) -> None:
    assert unix_from_ntp(ntp_from_unix(unix)) == pytest.approx(unix, abs=1e-6)


@given(st.integers(0, 2**40), st.integers(0, 999_999_999))
def test_ntp_now_agrees_with_ntp_from_ns(seconds: int, nanos: int) -> None:
    ns = seconds * 1_000_000_000 + nanos
    assert ntp_from_ns(ns) == ntp_now(lambda: ns)
