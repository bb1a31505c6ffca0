"""The reflector's C fast path (nf/net/_fast_reflector.c): the same replies as the Python reference, byte for
byte, and its socket loop on real loopback sockets."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nf.net import _fast_reflector as native
from nf.net.reflector import native_session
from nf.net.socket_options import enable_receive_timestamps, enable_receive_ttl
from nf.twamp.control_crypto import ControlKeys
from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import (
    MAX_UDP_PAYLOAD,
    SenderPacket,
    TestPacketCodec,
    TestPacketError,
    ntp_from_unix,
)
from nf.twamp.test_reflector import SessionReflector
from nf.twamp.test_session import TestSessionParams

WAIT = 10.0
_CODES = {native.SHORT: "short", native.BAD_HMAC: "bad-hmac", native.TOO_LONG: "too-long"}


def _params(
    mode: SecurityMode,
    symmetric: bool = False,
    reflect_octets: int = 0,
    keys: TestSessionKeys | None = None,
    sender: tuple[str, int] = ("127.0.0.1", 1),
) -> TestSessionParams:
    if keys is None and mode.test_is_protected:
        keys = TestSessionKeys(os.urandom(16), os.urandom(32))
    return TestSessionParams(
        os.urandom(16), mode, sender[0], sender[1], "127.0.0.1", 2, 0, 0.0, 1.0, 0, reflect_octets, b"\0\0",
        symmetric, keys,
    )  # fmt: skip


def _python_reply(engine: SessionReflector, data: bytes, t2: int, ttl: int, t3: int) -> bytes | str:
    try:
        return bytes(engine.reflect(bytearray(data), len(data), t2, ttl, lambda: t3))
    except TestPacketError as exc:
        return str(exc.reason.value)


def _native_reply(engine: native.Session, data: bytes, t2: int, ttl: int, t3: int) -> bytes | str:
    reply = engine.reflect(data, t2, ttl, t3)
    if isinstance(reply, int):
        return _CODES.get(reply, f"code {reply}")
    return reply


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(list(SecurityMode)),
    symmetric=st.booleans(),
    reflect_octets=st.sampled_from([0, 1, 2, 27, 64, 300, MAX_UDP_PAYLOAD - 100]),
    padding=st.binary(max_size=300),
    header=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1)),
    times=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255)),
    damage=st.one_of(st.none(), st.integers(0, 400), st.tuples(st.integers(0, 400), st.integers(1, 255))),
)
def test_c_replies_equal_the_python_reference(
    mode: SecurityMode,
    symmetric: bool,
    reflect_octets: int,
    padding: bytes,
    header: tuple[int, int, int],
    times: tuple[int, int, int],
    damage: int | tuple[int, int] | None,
) -> None:
    """Same reply or same refusal for intact, truncated and bit-flipped packets, in every mode and layout."""
    params = _params(mode, symmetric, reflect_octets)
    python = SessionReflector(params, 0x8001)
    fast = native_session(params, None, 1.0)
    fast.error_estimate = 0x8001
    codec = TestPacketCodec(mode, params.keys, symmetric)
    packet = bytearray(codec.encode_sender(SenderPacket(*header, padding)))
    if isinstance(damage, int):
        del packet[damage:]  # truncated (or intact when past the end)
    elif damage is not None and damage[0] < len(packet):
        packet[damage[0]] ^= damage[1]
    t2, t3, ttl = times
    for _ in range(2):  # and the sequence numbers advance alike
        expected = _python_reply(python, bytes(packet), t2, ttl, t3)
        assert _native_reply(fast, bytes(packet), t2, ttl, t3) == expected
    assert fast.seq == python.seq


def test_a_reply_that_cannot_fit_a_datagram_is_refused_as_too_long() -> None:
    """Keeping the reflected octets makes the reply longer than the request; at the UDP limit it cannot be."""
    params = _params(SecurityMode.UNAUTHENTICATED, reflect_octets=0xFFFF)
    codec = TestPacketCodec(params.mode, None)
    largest = codec.encode_sender(SenderPacket(1, 2, 3, bytes(MAX_UDP_PAYLOAD - 14)))
    assert native_session(params, None, 1.0).reflect(largest, 1, 255, 2) == native.TOO_LONG
    with pytest.raises(TestPacketError, match="too-long"):
        SessionReflector(params, 0).reflect(bytearray(largest), len(largest), 1, 255, lambda: 2)


@pytest.mark.parametrize("mode", [SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED])
def test_reflected_octets_are_kept_but_never_padded_out(mode: SecurityMode) -> None:
    """RFC 6038: the octets to reflect survive the truncation; a sender that asked for 60000 of them and
    sent 10 gets its 10 back, not a 60 kB reply (the reflector is no amplifier)."""
    params = _params(mode, reflect_octets=60000)
    codec = TestPacketCodec(mode, params.keys)
    header = codec.reflector_layout.size
    for padding in (b"", b"0123456789", bytes(range(200))):
        packet = codec.encode_sender(SenderPacket(1, 2, 3, padding))
        for engine in (native_session(params, None, 1.0), SessionReflector(params, 0)):
            if isinstance(engine, SessionReflector):
                reply = bytes(engine.reflect(bytearray(packet), len(packet), 1, 255, lambda: 2))
            else:
                built = engine.reflect(packet, 1, 255, 2)
                assert isinstance(built, bytes)
                reply = built
            assert len(reply) == header + len(padding) <= len(packet) + header - codec.sender_layout.size
            assert codec.decode_reflector(reply).padding == padding


def test_keys_do_not_come_back_out() -> None:
    keys = native.Keys(b"k" * 16, b"h" * 32)
    assert repr(keys) == "Keys(<hidden>)"
    assert [name for name in dir(keys) if not name.startswith("__")] == []
    with pytest.raises(TypeError):
        pickle.dumps(keys)
    with pytest.raises(ValueError, match="16 \\(AES\\) and 32 \\(HMAC\\)"):
        native.Keys(b"short", b"h" * 32)
    session_keys = TestSessionKeys(os.urandom(16), os.urandom(32))
    assert repr(session_keys) == "TestSessionKeys(<hidden>)"
    assert repr(session_keys.native()) == "Keys(<hidden>)"


def test_a_senders_keys_have_no_c_copy_and_cannot_reflect() -> None:
    """The control client derives its session keys with reflector=False: no second copy in C memory."""
    sid = os.urandom(16)
    control = ControlKeys(os.urandom(16), os.urandom(32))
    assert control.test_session_keys(sid, reflector=False).native() is None
    assert control.test_session_keys(sid, reflector=True).native() is not None
    params = _params(SecurityMode.AUTHENTICATED, keys=control.test_session_keys(sid, reflector=False))
    with pytest.raises(ValueError, match="made for a sender"):
        native_session(params, None, 1.0)


def test_layouts_that_do_not_fit_are_refused() -> None:
    open_sender, open_reply = (14, 0, 4, 12, -1, 0), (41, 0, 4, 12, 16, 24, 28, 36, 40, -1, 0)
    native.Session(open_sender, open_reply)  # the real unauthenticated layouts
    with pytest.raises(ValueError, match="layouts"):
        native.Session((14, 0, 10, 12, -1, 0), open_reply)  # a timestamp running past the header
    with pytest.raises(ValueError, match="layouts"):
        keys = native.Keys(bytes(16), bytes(32))
        native.Session((48, 0, 16, 24, 32, 16), open_reply, keys)  # protected in, but no reply HMAC
    with pytest.raises(ValueError, match="layouts"):
        native.Session((48, 0, 16, 24, 32, 16), (112, 0, 16, 24, 32, 48, 64, 72, 80, 96, 16))  # keys missing
    with pytest.raises(ValueError, match="out of range"):
        native.Session(open_sender, open_reply, None, -1)
    with pytest.raises(ValueError, match="out of range"):
        native.Session(open_sender, open_reply, None, 0, float("nan"))
    huge = 2**31 - 1  # offset + width would wrap a C int
    with pytest.raises(ValueError, match="layouts"):
        native.Session(open_sender, (41, 0, 4, 12, 16, 24, 28, 36, huge, -1, 0))
    with pytest.raises(ValueError, match="layouts"):
        native.Session((48, 0, 16, 24, huge, 16), (112, 0, 16, 24, 32, 48, 64, 72, 80, 96, 16), keys)


def test_sessions_and_ports_are_set_up_once_and_used_once() -> None:
    """Re-initialising or sharing what a port thread may be using without the GIL is refused."""
    open_sender, open_reply = (14, 0, 4, 12, -1, 0), (41, 0, 4, 12, 16, 24, 28, 36, 40, -1, 0)
    session = native.Session(open_sender, open_reply)
    with pytest.raises(RuntimeError, match="once"):
        session.__init__(open_sender, open_reply)  # type: ignore[misc]
    blank = native.Session.__new__(native.Session)
    with pytest.raises(RuntimeError, match="not initialised"):
        blank.reflect(bytes(14), 1, 64, 2)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        first, second = native.Port(a.fileno()), native.Port(b.fileno())
        first.add(session, b"", 0, 0)
        with pytest.raises(RuntimeError, match="already belongs"):
            second.add(session, b"", 0, 0)
        assert first.remove(session)
        second.add(session, b"", 0, 0)  # free again once removed
        with pytest.raises(RuntimeError, match="not initialised"):
            native.Port.__new__(native.Port).serve(0, 0)


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    reflecting = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reflecting.bind(("127.0.0.1", 0))
    sending.bind(("127.0.0.1", 0))
    reflecting.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", 0, 200_000))
    sending.settimeout(WAIT)
    sending.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 200)  # the reflector reports what arrived
    assert enable_receive_timestamps(reflecting) and enable_receive_ttl(reflecting)
    return reflecting, sending


def _serve_until(port: native.Port, want: int) -> list[native.Deferred]:
    """serve() until `want` items were handed back and the socket has gone quiet (its receive timeout)."""
    items: list[native.Deferred] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        idle, deferred = port.serve(time.monotonic_ns() + 50_000_000, 0)
        items.extend(deferred)
        if idle and len(items) >= want:
            break
    return items


@pytest.mark.parametrize("mode", [SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED])
def test_port_reflects_for_an_active_session_and_hands_back_the_rest(mode: SecurityMode) -> None:
    reflecting, sending = _socket_pair()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with reflecting, sending, stranger:
        params = _params(mode, sender=sending.getsockname())
        codec = TestPacketCodec(mode, params.keys)
        fast = native_session(params, None, 1.0)
        port = native.Port(reflecting.fileno(), 8)
        port.add(fast, socket.inet_aton("127.0.0.1"), sending.getsockname()[1], 10)
        target = reflecting.getsockname()
        packet = codec.encode_sender(SenderPacket(7, ntp_from_unix(time.time()), 0x8001, bytes(20)))

        sending.sendto(packet, target)  # not activated yet: Python decides
        (item,) = _serve_until(port, 1)
        assert item[0] == native.UNHANDLED and item[1] == packet and item[2] == sending.getsockname()

        fast.activate((1 << 63) - 1)
        before = ntp_from_unix(time.time())
        sending.sendto(packet, target)
        assert _serve_until(port, 1) == []
        reply = codec.decode_reflector(sending.recv(2048))
        assert (reply.seq, reply.sender_seq, reply.sender_ttl) == (0, 7, 200)
        assert before <= reply.receive_timestamp <= reply.timestamp <= ntp_from_unix(time.time())
        assert fast.reflected == 1 and port.dscp == 10 and port.send_calls == 1

        damaged = bytearray(packet)
        damaged[0] ^= 1
        stranger.sendto(packet, target)
        sending.sendto(bytes(damaged), target)
        sending.sendto(packet[:10], target)
        codes = sorted(item[0] for item in _serve_until(port, 3))
        expected = [native.UNHANDLED, native.SHORT]
        if mode.test_is_protected:
            expected.insert(1, native.BAD_HMAC)
        else:  # a flipped bit in the clear is just another sequence number
            assert codec.decode_reflector(sending.recv(2048)).sender_seq == 7 ^ (1 << 24)
        assert codes == sorted(expected)
        assert port.remove(fast) and not port.remove(fast)


def test_port_enforces_the_session_rate_limit() -> None:
    reflecting, sending = _socket_pair()
    with reflecting, sending:
        params = _params(SecurityMode.UNAUTHENTICATED, sender=sending.getsockname())
        fast = native_session(params, 1.0, 2.0)  # a burst of two, then one a second
        fast.activate((1 << 63) - 1)
        port = native.Port(reflecting.fileno(), 16)
        port.add(fast, b"", 0, 0)  # a wildcard sender
        packet = TestPacketCodec(params.mode, None).encode_sender(SenderPacket(1, 2, 3))
        for _ in range(5):
            sending.sendto(packet, reflecting.getsockname())
        items = _serve_until(port, 3)
        assert [item[0] for item in items] == [native.RATE_LIMITED] * 3
        assert fast.reflected == 2


def test_port_refuses_an_address_of_the_other_family() -> None:
    reflecting, sending = _socket_pair()
    with reflecting, sending:
        port = native.Port(reflecting.fileno())
        fast = native_session(_params(SecurityMode.UNAUTHENTICATED), None, 1.0)
        with pytest.raises(ValueError, match="packed address"):
            port.add(fast, socket.inet_pton(socket.AF_INET6, "::1"), 1, 0)
        with pytest.raises(ValueError, match="batch"):
            native.Port(reflecting.fileno(), 0)
