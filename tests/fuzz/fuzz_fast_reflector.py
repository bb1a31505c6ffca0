"""Fuzz target for the reflector's C fast path: it must answer every datagram as the Python reference does.

The C code parses attacker-controlled datagrams, so besides not crashing it must agree with
nf/twamp/test_reflector.py byte for byte (reply) or reason for reason (refusal). Inputs either go in raw or,
so that the protected modes get past their HMAC, become a valid sender packet (fields and padding from the
input) that may then be truncated or have one octet flipped.
"""

from __future__ import annotations

from nf.net import _fast_reflector as native
from nf.net.reflector import native_session
from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, TestPacketError
from nf.twamp.test_reflector import SessionReflector
from nf.twamp.test_session import TestSessionParams

_KEYS = TestSessionKeys(bytes(range(16)), bytes(range(32)))
_CODES = {native.SHORT: "short", native.BAD_HMAC: "bad-hmac", native.TOO_LONG: "too-long"}


def _case(mode: SecurityMode, symmetric: bool, reflect_octets: int) -> tuple[object, ...]:
    keys = _KEYS if mode.test_is_protected else None
    address = "127.0.0.1"
    params = TestSessionParams(
        bytes(16), mode, address, 1, address, 2, 0, 0.0, 1.0, 0, reflect_octets, b"\0\0", symmetric, keys
    )  # fmt: skip
    fast = native_session(params, None, 1.0)
    fast.error_estimate = 0x8001
    return TestPacketCodec(mode, keys, symmetric), SessionReflector(params, 0x8001), fast


_CASES = [
    _case(mode, symmetric, octets)
    for mode in SecurityMode
    for symmetric in (False, True)
    for octets in (0, 5, 65500)
]


def fuzz_one(data: bytes) -> None:
    if len(data) < 16:
        return
    codec, python, fast = _CASES[data[0] % len(_CASES)]
    assert isinstance(codec, TestPacketCodec) and isinstance(python, SessionReflector)
    assert isinstance(fast, native.Session)
    how = data[1]
    if how & 1:
        packet = bytearray(data[2:4096])
    else:
        seq = int.from_bytes(data[2:6], "big")
        timestamp = int.from_bytes(data[6:14], "big")
        error_estimate = int.from_bytes(data[14:16], "big")
        packet = bytearray(codec.encode_sender(SenderPacket(seq, timestamp, error_estimate, data[16:2048])))
        if how & 2 and packet:
            packet[(how >> 2) % len(packet)] ^= 0x5A
        elif how & 4:
            del packet[how >> 3 :]
    ttl = data[1]
    try:
        expected: bytes | str = bytes(python.reflect(packet, len(packet), 1 << 40, ttl, lambda: 7 << 32))
    except TestPacketError as exc:
        expected = exc.reason.value
    got = fast.reflect(bytes(packet), 1 << 40, ttl, 7 << 32)
    found = _CODES.get(got, f"code {got}") if isinstance(got, int) else got
    if found != expected:
        raise AssertionError(f"C and Python disagree: {found!r} != {expected!r}")
    if fast.seq != python.seq:
        raise AssertionError("C and Python sequence numbers drifted apart")
