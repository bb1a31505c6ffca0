from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from nf.twamp.test_keys import TestSessionKeys

b16 = st.binary(min_size=16, max_size=16)
b32 = st.binary(min_size=32, max_size=32)


def _ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


@given(b16, b32, b16, st.binary(min_size=1, max_size=64))
def test_derivation_matches_rfc4656_block_by_block(aes: bytes, hk: bytes, sid: bytes, msg: bytes) -> None:
    """SID keys AES; the control keys are the plaintext (ECB for AES, CBC with zero IV for HMAC)."""
    keys = TestSessionKeys.derive(aes, hk, sid)
    expected_aes = _ecb(sid, aes)
    first = _ecb(sid, hk[:16])
    second = _ecb(sid, bytes(a ^ b for a, b in zip(hk[16:], first, strict=True)))
    expected = TestSessionKeys(expected_aes, first + second)
    assert keys.hmac16(msg) == expected.hmac16(msg)
    assert keys.ecb_encrypt(b"\0" * 16) == _ecb(expected_aes, b"\0" * 16)


@given(b16, b32, b16, st.integers(1, 6))
def test_cbc_round_trip_and_zero_iv(aes: bytes, hk: bytes, sid: bytes, blocks: int) -> None:
    keys = TestSessionKeys.derive(aes, hk, sid)
    data = bytes(range(16)) * blocks
    ct = keys.cbc_encrypt(data)
    assert keys.cbc_decrypt(ct) == data
    assert ct[:16] == keys.ecb_encrypt(data[:16])  # zero IV: first CBC block is plain ECB


def test_repr_hides_keys_and_bad_lengths_rejected() -> None:
    keys = TestSessionKeys.derive(b"a" * 16, b"b" * 32, b"c" * 16)
    assert "hidden" in repr(keys)
    with pytest.raises(ValueError):
        TestSessionKeys.derive(b"a" * 15, b"b" * 32, b"c" * 16)
