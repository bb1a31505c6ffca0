"""Control-connection crypto checked against an independent computation of the RFC 4656 s3.1 layout.

The expected values are rebuilt here from first principles (hashlib PBKDF2, one AES-CBC pass over the whole
direction's plaintext, one HMAC over exactly the octets owamp's io.c/protocol.c feed it), so a mistake in
control_crypto's block bookkeeping cannot cancel itself out.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.twamp.control_crypto import ControlKeys, Inbound, Outbound
from nf.twamp.control_events import ControlFailure, IntegrityError
from nf.twamp.control_messages import AcceptSession, ServerStart, StartAck
from nf.twamp.keysource import SharedSecret
from nf.twamp.modes import Accept
from nf.twamp.test_keys import TestSessionKeys

AES_KEY = bytes(range(16))
HMAC_KEY = bytes(range(100, 132))
CHALLENGE = bytes.fromhex("00112233445566778899aabbccddeeff")
SALT = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")
SECRET = b"shared secret"
COUNT = 1024


def _cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def test_token_matches_independent_pbkdf2_and_cbc() -> None:
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    token = keys.seal_token(SharedSecret(SECRET), SALT, COUNT, CHALLENGE)
    kek = hashlib.pbkdf2_hmac("sha1", SECRET, SALT, COUNT, 16)
    assert token == _cbc(kek, bytes(16), CHALLENGE + AES_KEY + HMAC_KEY)
    # Fixed vectors, cross-checked with the OpenSSL command line: `openssl kdf ... PBKDF2` for the KEK and
    # `openssl enc -aes-128-cbc -iv 0 -nopad` for the Token.
    assert kek.hex() == "87b8bcfa7f80ad8b59b1636f3e6dbd29"
    assert token.hex() == (
        "7aa3e37a30f132edd6d0f0b0214601460291c7f6de43067e52f76bfee60a7af8"
        "e57448cf0ad4eefafe54ea21ea75650d61ed8b7c8a84c378775824e2faf62a0b"
    )


def test_open_token_recovers_keys_and_checks_challenge() -> None:
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    token = keys.seal_token(SharedSecret(SECRET), SALT, COUNT, CHALLENGE)
    opened = ControlKeys.open_token(SharedSecret(SECRET), SALT, COUNT, token, CHALLENGE)
    sid = bytes(range(16))
    assert opened.test_session_keys(sid, reflector=True).hmac16(b"x") == keys.test_session_keys(
        sid, reflector=True
    ).hmac16(b"x")
    with pytest.raises(IntegrityError) as exc:
        ControlKeys.open_token(SharedSecret(b"other"), SALT, COUNT, token, CHALLENGE)
    assert exc.value.reason is ControlFailure.BAD_TOKEN
    with pytest.raises(IntegrityError):
        ControlKeys.open_token(SharedSecret(SECRET), SALT, COUNT, token, bytes(16))
    with pytest.raises(IntegrityError):
        ControlKeys.open_token(SharedSecret(SECRET), SALT, COUNT * 2, token, CHALLENGE)


def test_server_stream_matches_owamp_layout() -> None:
    """Server-Start 32-47 starts the CBC stream and is covered by the first Accept-Session's HMAC."""
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    server_iv = bytes(range(50, 66))
    start = ServerStart(Accept.OK, server_iv, 0x1122334455667788).encode()
    first = AcceptSession(Accept.OK, 4000, bytes(range(16)), 0, 0).encode()
    second = StartAck(Accept.OK).encode()

    out = Outbound()
    out.send_clear(start[:32])
    out.protect(keys, server_iv)
    out.send_carried(start[32:])
    out.send_message(first)
    out.send_message(second)
    wire = out.take()

    mac1 = hmac.new(HMAC_KEY, start[32:] + first[:32], hashlib.sha1).digest()[:16]
    mac2 = hmac.new(HMAC_KEY, second[:16], hashlib.sha1).digest()[:16]
    plain_stream = start[32:] + first[:32] + mac1 + second[:16] + mac2
    assert wire == start[:32] + _cbc(AES_KEY, server_iv, plain_stream)

    inbound = Inbound()
    inbound.feed(wire[:40])  # arrives in pieces that do not line up with blocks
    assert inbound.take_clear(32) == start[:32]
    inbound.protect(keys, server_iv)
    inbound.feed(wire[40:])
    carried = inbound.take(16)
    assert carried == start[32:]
    inbound.carry(carried)
    got_first = inbound.take(48)
    assert got_first is not None and got_first[:32] == first[:32]
    inbound.verify(got_first)
    got_second = inbound.take(32)
    assert got_second is not None
    inbound.verify(got_second)
    assert inbound.take(1) is None


def test_tampering_or_missing_carry_fails_hmac() -> None:
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    iv = bytes(16)
    out = Outbound()
    out.protect(keys, iv)
    out.send_carried(bytes(16))
    out.send_message(StartAck(Accept.OK).encode())
    wire = out.take()

    forgetful = Inbound()
    forgetful.protect(keys, iv)
    forgetful.feed(wire)
    forgetful.take(16)  # not carried into the HMAC
    message = forgetful.take(32)
    assert message is not None
    with pytest.raises(IntegrityError) as exc:
        forgetful.verify(message)
    assert exc.value.reason is ControlFailure.BAD_HMAC

    tampered = bytearray(wire)
    tampered[20] ^= 1
    inbound = Inbound()
    inbound.protect(keys, iv)
    inbound.feed(bytes(tampered))
    block = inbound.take(16)
    assert block is not None
    inbound.carry(block)
    message = inbound.take(32)
    assert message is not None
    with pytest.raises(IntegrityError):
        inbound.verify(message)


@settings(deadline=None, max_examples=50)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.binary(min_size=1, max_size=200))
def test_stream_survives_any_chunking(blocks: list[int], cuts: bytes) -> None:
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    iv = bytes(range(16))
    out = Outbound()
    out.protect(keys, iv)
    messages = [bytes([n]) * (16 * n) + bytes(16) for n in blocks]
    for message in messages:
        out.send_message(message)
    wire = out.take()
    inbound = Inbound()
    inbound.protect(keys, iv)
    position = 0
    for cut in cuts:
        inbound.feed(wire[position : position + cut])
        position += cut
    inbound.feed(wire[position:])
    for message in messages:
        got = inbound.take(len(message))
        assert got is not None and got[:-16] == message[:-16]
        inbound.verify(got)


def test_open_mode_zeroes_and_ignores_hmac() -> None:
    out = Outbound()
    out.send_message(StartAck(Accept.OK, hmac=b"\xff" * 16).encode())
    wire = out.take()
    assert wire == StartAck(Accept.OK).encode()
    inbound = Inbound()
    inbound.unprotected()
    inbound.feed(wire[:-1] + b"\x01")
    message = inbound.take(32)
    assert message is not None
    inbound.verify(message)


def test_test_session_keys_follow_rfc4656_s4_1() -> None:
    sid = bytes(range(16, 32))
    derived = ControlKeys(AES_KEY, HMAC_KEY).test_session_keys(sid, reflector=True)
    ecb = Cipher(algorithms.AES(sid), modes.ECB()).encryptor()
    expected = TestSessionKeys(ecb.update(AES_KEY) + ecb.finalize(), _cbc(sid, bytes(16), HMAC_KEY))
    assert derived.hmac16(b"probe") == expected.hmac16(b"probe")
    assert derived.ecb_encrypt(bytes(16)) == expected.ecb_encrypt(bytes(16))


def test_keys_never_show_in_repr_or_str() -> None:
    keys = ControlKeys(AES_KEY, HMAC_KEY)
    out, inbound = Outbound(), Inbound()
    out.protect(keys, bytes(16))
    inbound.protect(keys, bytes(16))
    for text in (repr(keys), str(keys), repr(out), repr(inbound)):
        for secret in (AES_KEY, HMAC_KEY):
            assert secret.hex() not in text and repr(secret) not in text
    assert "hidden" in repr(keys)
    public = {name for name in dir(keys) if not name.startswith("_")}
    assert public == {"generate", "open_token", "seal_token", "test_session_keys"}
