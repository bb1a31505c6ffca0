"""The sans-IO Session-Reflector: reply contents, sizes (RFC 5357 s4.2.1, RFC 6038), crypto, token bucket."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, TestPacketError, TestPacketErrorReason
from nf.twamp.test_reflector import DropReason, SessionReflector, TokenBucket
from nf.twamp.test_session import TestSessionParams

KEYS = TestSessionKeys(os.urandom(16), os.urandom(32))


def _params(
    mode: SecurityMode, symmetric: bool = False, reflect_octets: int = 0, keys: TestSessionKeys | None = KEYS
) -> TestSessionParams:
    return TestSessionParams(
        sid=bytes(16),
        mode=mode,
        sender_address="127.0.0.1",
        sender_port=1,
        reflector_address="127.0.0.1",
        reflector_port=2,
        padding_length=0,
        start_time=0.0,
        timeout=1.0,
        dscp=0,
        reflect_octets=reflect_octets,
        server_octets=b"\0\0",
        symmetric=symmetric,
        keys=keys if mode.test_is_protected else None,
    )


class _Clock:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return 0x0102030405060708 + self.calls


def _reflect(
    engine: SessionReflector, wire: bytes, receive: int = 0x55, ttl: int = 61, clock: _Clock | None = None
) -> bytes:
    buf = bytearray(65536)
    buf[: len(wire)] = wire
    return bytes(engine.reflect(memoryview(buf), len(wire), receive, ttl, clock or _Clock()))


@pytest.mark.parametrize("mode", list(SecurityMode))
@pytest.mark.parametrize("symmetric", [False, True])
def test_reply_carries_copied_sender_fields_and_own_counter(mode: SecurityMode, symmetric: bool) -> None:
    params = _params(mode, symmetric)
    codec = TestPacketCodec(mode, params.keys, symmetric)
    engine = SessionReflector(params, error_estimate=0x8105)
    clock = _Clock()
    for n, sender_seq in enumerate((100, 7, 7)):
        wire = codec.encode_sender(SenderPacket(sender_seq, 0xDEADBEEF00000001, 0x4001, os.urandom(80)))
        reply = codec.decode_reflector(_reflect(engine, wire, receive=0x1234, ttl=61, clock=clock))
        assert reply.seq == n  # the reflector's own counter, not the sender's
        assert (reply.sender_seq, reply.sender_timestamp, reply.sender_error_estimate) == (
            sender_seq,
            0xDEADBEEF00000001,
            0x4001,
        )
        assert reply.receive_timestamp == 0x1234
        assert reply.timestamp == 0x0102030405060708 + clock.calls  # T3 read from the clock, last
        assert reply.sender_ttl == 61
        assert reply.error_estimate == 0x8105
    assert clock.calls == 3


@pytest.mark.parametrize(
    ("mode", "symmetric", "sent_padding", "reply_length"),
    [
        (SecurityMode.UNAUTHENTICATED, False, 100, 14 + 100),  # truncated by 27: same size both ways
        (SecurityMode.UNAUTHENTICATED, False, 10, 41),  # never below the reflector minimum
        (SecurityMode.MIXED, False, 27, 41),
        (SecurityMode.AUTHENTICATED, False, 100, 48 + 100),  # truncated by 64
        (SecurityMode.ENCRYPTED, False, 0, 112),
        (SecurityMode.UNAUTHENTICATED, True, 30, 41 + 30),  # symmetrical: nothing to truncate
        (SecurityMode.ENCRYPTED, True, 30, 112 + 30),
    ],
)
def test_reply_size(mode: SecurityMode, symmetric: bool, sent_padding: int, reply_length: int) -> None:
    params = _params(mode, symmetric)
    codec = TestPacketCodec(mode, params.keys, symmetric)
    wire = codec.encode_sender(SenderPacket(1, 2, 3, bytes(sent_padding)))
    assert len(_reflect(SessionReflector(params, 0), wire)) == reply_length


@pytest.mark.parametrize("mode", [SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED])
@pytest.mark.parametrize("symmetric", [False, True])
def test_reflect_octets_lead_the_reply_padding(mode: SecurityMode, symmetric: bool) -> None:
    """RFC 6038: the first Reflected-Octets octets of the sender's padding start the reply's padding."""
    params = _params(mode, symmetric, reflect_octets=4)
    codec = TestPacketCodec(mode, params.keys, symmetric)
    engine = SessionReflector(params, 0)
    # Padding shorter than the truncation: the reply still grows to carry the reflected octets.
    wire = codec.encode_sender(SenderPacket(1, 2, 3, b"\xab\xcd\x01\x02\x03"))
    reply = codec.decode_reflector(_reflect(engine, wire))
    assert reply.padding[:4] == b"\xab\xcd\x01\x02"
    # Long padding: the octets are still the first ones.
    wire = codec.encode_sender(SenderPacket(2, 2, 3, b"\x11\x22\x33\x44" + bytes(200)))
    assert codec.decode_reflector(_reflect(engine, wire)).padding[:4] == b"\x11\x22\x33\x44"


def test_reflect_octets_the_sender_did_not_send_are_not_made_up() -> None:
    """Fewer padding octets than the session reflects: those come back, and no zeros after them (no fill
    that would let a request for many reflected octets turn short packets into long replies)."""
    params = _params(SecurityMode.UNAUTHENTICATED, reflect_octets=6)
    codec = TestPacketCodec(params.mode, None)
    engine = SessionReflector(params, 0)
    _reflect(engine, codec.encode_sender(SenderPacket(1, 2, 3, b"\xff" * 100)))  # dirties the buffer
    reply = codec.decode_reflector(_reflect(engine, codec.encode_sender(SenderPacket(1, 2, 3, b"\x07\x08"))))
    assert reply.padding == b"\x07\x08"


def test_length_of_padding_to_reflect_survives_the_truncation() -> None:
    """RFC 6038 s5.1.3: the sender pads by the truncation plus this length; that many octets come back."""
    asked = _params(SecurityMode.UNAUTHENTICATED, reflect_octets=2)
    params = dataclasses.replace(asked, padding_to_reflect=10)
    codec = TestPacketCodec(params.mode, None)
    engine = SessionReflector(params, 0)
    padding = bytes(range(27 + 10))
    reply = codec.decode_reflector(_reflect(engine, codec.encode_sender(SenderPacket(1, 2, 3, padding))))
    assert reply.padding == padding[:10]  # 14 + 37 octets in, 41 + 10 out: the same length


@pytest.mark.parametrize("mode", [SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED])
def test_bad_hmac_and_short_packets_raise_with_reason(mode: SecurityMode) -> None:
    params = _params(mode)
    engine = SessionReflector(params, 0)
    wrong = TestPacketCodec(mode, TestSessionKeys(bytes(16), bytes(32)))
    with pytest.raises(TestPacketError) as caught:
        _reflect(engine, wrong.encode_sender(SenderPacket(1, 2, 3, b"")))
    assert DropReason.of(caught.value) is DropReason.BAD_HMAC
    with pytest.raises(TestPacketError) as caught:
        _reflect(engine, bytes(47))
    assert caught.value.reason is TestPacketErrorReason.SHORT
    assert engine.seq == 0  # nothing was reflected


@given(st.binary(max_size=200), st.sampled_from(list(SecurityMode)), st.booleans())
def test_arbitrary_input_either_reflects_or_raises_the_documented_error(
    data: bytes, mode: SecurityMode, symmetric: bool
) -> None:
    engine = SessionReflector(_params(mode, symmetric), 0)
    try:
        reply = _reflect(engine, data)
    except TestPacketError:
        return
    assert len(reply) >= TestPacketCodec(mode, KEYS if mode.test_is_protected else None).reflector_layout.size


def test_token_bucket_enforces_rate_and_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # a full token after 0.1 s at 10/s
    assert bucket.take(0.1) is False
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # refills only to the burst
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)


def test_repr_does_not_leak_keys() -> None:
    engine = SessionReflector(_params(SecurityMode.ENCRYPTED), 0)
    assert "hidden" not in repr(engine) and "encrypted" in repr(engine)
