"""Fuzz target for the TWAMP-Test packet parsers and the reflector's per-packet path.

The documented error is TestPacketError; anything else escaping is a finding. Every security mode and the
Symmetrical Size layouts are tried on each input, and whatever decodes must encode back to the same packet.
"""

from __future__ import annotations

from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import TestPacketCodec, TestPacketError
from nf.twamp.test_reflector import SessionReflector
from nf.twamp.test_session import TestSessionParams

_KEYS = TestSessionKeys(bytes(range(16)), bytes(range(32)))


def _params(mode: SecurityMode, symmetric: bool, reflect_octets: int) -> TestSessionParams:
    keys = _KEYS if mode.test_is_protected else None
    return TestSessionParams(
        bytes(16),
        mode,
        "127.0.0.1",
        1,
        "127.0.0.1",
        2,
        0,
        0.0,
        1.0,
        0,
        reflect_octets,
        b"\0\0",
        symmetric,
        keys,
    )


_CASES = [
    (
        TestPacketCodec(mode, _KEYS if mode.test_is_protected else None, symmetric),
        _params(mode, symmetric, octets),
    )
    for mode in SecurityMode
    for symmetric in (False, True)
    for octets in (0, 3)
]
_REFLECTORS = [SessionReflector(params, 0x8001) for _, params in _CASES]
_BUFFER = bytearray(65536)


def fuzz_one(data: bytes) -> None:
    data = data[:4096]
    for (codec, _), reflector in zip(_CASES, _REFLECTORS, strict=True):
        try:
            sender = codec.decode_sender(data)
        except TestPacketError:
            pass
        else:
            if codec.decode_sender(codec.encode_sender(sender)) != sender:
                raise AssertionError("sender packet does not survive a re-encode")
        try:
            reply = codec.decode_reflector(data)
        except TestPacketError:
            pass
        else:
            if codec.decode_reflector(codec.encode_reflector(reply)) != reply:
                raise AssertionError("reflector packet does not survive a re-encode")
        _BUFFER[: len(data)] = data
        try:
            out = reflector.reflect(memoryview(_BUFFER), len(data), 1, 255, lambda: 2)
        except TestPacketError:
            continue
        if codec.decode_reflector(bytes(out)).receive_timestamp != 1:
            raise AssertionError("reflected packet does not decode")
