"""Batched receive (recvmmsg) for the reflector: real UDP sockets on loopback, and its control-data parser."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nf.net import batch_io
from nf.net.reflector import Reflector, ReflectorConfig
from nf.net.sender import SessionSender
from nf.net.socket_options import (
    IP_TTL,
    IPV6_HOPLIMIT,
    SCM_TIMESTAMPNS,
    enable_receive_timestamps,
    enable_receive_ttl,
    parse_ancillary,
    set_receive_buffer,
)
from nf.twamp.modes import SecurityMode
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, ntp_from_unix
from nf.twamp.test_session import TestSessionParams

WAIT = 30.0
HOSTS = ["127.0.0.1", "::1"]


def _pair(host: str) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    receiving = socket.socket(family, socket.SOCK_DGRAM)
    sending = socket.socket(family, socket.SOCK_DGRAM)
    receiving.bind((host, 0))
    sending.bind((host, 0))
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", int(WAIT), 0))
    return receiving, sending


@pytest.mark.parametrize("host", HOSTS)
def test_batch_receiver_gives_each_datagram_its_own_length_source_and_control(host: str) -> None:
    receiving, sending = _pair(host)
    with receiving, sending:
        assert enable_receive_timestamps(receiving) and enable_receive_ttl(receiving)
        payloads = [bytes([i]) * (5 + i) for i in range(6)]
        before = time.time_ns()
        for payload in payloads:
            sending.sendto(payload, receiving.getsockname())
        receiver = batch_io.BatchReceiver(receiving, count=4, slot_size=2048)
        got: list[bytes] = []
        while len(got) < len(payloads):
            n = receiver.receive()
            assert 1 <= n <= 4
            for i in range(n):
                namelen, controllen, flags, length = batch_io.RESULT.unpack_from(
                    receiver.headers, receiver.header_offset(i)
                )
                assert flags == 0
                got.append(bytes(receiver.views[i][:length]))
                source = batch_io.decode_name(receiver.names, receiver.name_offset(i), namelen)
                assert source[:2] == sending.getsockname()[:2]
                assert controllen == batch_io.USUAL_CONTROL_LENGTH
                stamp, ttl = parse_ancillary(
                    batch_io.parse_control(receiver.control, receiver.control_offset(i), controllen)
                )
                assert stamp is not None and before <= stamp <= time.time_ns()
                assert ttl == 64  # the sending socket's default TTL / hop limit on loopback
                fields = batch_io.USUAL_CONTROL.unpack_from(receiver.control, receiver.control_offset(i))
                assert fields[1:3] == (socket.SOL_SOCKET, SCM_TIMESTAMPNS)
                assert fields[3] * 1_000_000_000 + fields[4] == stamp
                assert fields[7] in (IP_TTL, IPV6_HOPLIMIT) and fields[8] == ttl
        assert got == payloads


def test_batch_receiver_times_out_like_recv() -> None:
    receiving, sending = _pair("127.0.0.1")
    with receiving, sending:
        receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@qq", 0, 20_000))
        with pytest.raises(BlockingIOError):
            batch_io.BatchReceiver(receiving, count=2, slot_size=64).receive()


def _cmsg(level: int, kind: int, data: bytes) -> bytes:
    header = struct.pack("@Qii", socket.CMSG_LEN(len(data)), level, kind)
    return (header + data).ljust(socket.CMSG_SPACE(len(data)), b"\0")


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 100), st.binary(min_size=0, max_size=16)),
        max_size=3,
    )
)
def test_parse_control_reads_back_what_was_encoded(messages: list[tuple[int, int, bytes]]) -> None:
    encoded = b"".join(_cmsg(level, kind, data) for level, kind, data in messages)
    buffer = memoryview(bytearray(encoded.ljust(64 + len(encoded), b"\xff")))
    fits = []
    used = 0
    for level, kind, data in messages:
        used += socket.CMSG_SPACE(len(data))
        if used - socket.CMSG_SPACE(len(data)) + socket.CMSG_LEN(len(data)) > 64:
            break
        fits.append((level, kind, data))
    assert batch_io.parse_control(buffer, 0, len(encoded)) == fits


@given(st.binary(max_size=80), st.integers(0, 80))
def test_parse_control_never_reads_past_its_length(data: bytes, length: int) -> None:
    for level, kind, body in batch_io.parse_control(memoryview(data), 0, min(length, len(data))):
        assert len(body) <= min(length, len(data))
        assert isinstance(level, int) and isinstance(kind, int)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(("batch", "send_batch"), [(1, 1), (16, 1), (16, 8)])
def test_queued_bursts_are_all_reflected_with_their_own_timestamps(
    host: str, batch: int, send_batch: int
) -> None:
    """A burst queued before the reflector reads it is taken in batches; every reply has its own T2."""
    codec = TestPacketCodec(SecurityMode.UNAUTHENTICATED, None)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        Reflector(
            ReflectorConfig(poll_interval=0.05, receive_batch=batch, send_batch=send_batch)
        ) as reflector,
        socket.socket(family, socket.SOCK_DGRAM) as sender,
    ):
        set_receive_buffer(sender, 4 * 1024 * 1024)  # room for all 300 replies
        sender.bind((host, 0))
        port = reflector.reserve_port(host)
        params = TestSessionParams(
            os.urandom(16),
            SecurityMode.UNAUTHENTICATED,
            host,
            sender.getsockname()[1],
            host,
            port,
            0,
            time.time(),
            1.0,
            0,
            0,
            b"\0\0",
            False,
            None,
        )
        reflector.add_session(params)
        reflector.start_session(params.sid)
        sender.connect((host, port))
        sender.settimeout(WAIT)
        for seq in range(300):
            sender.send(codec.encode_sender(SenderPacket(seq, ntp_from_unix(time.time()), 0)))
        replies = [codec.decode_reflector(sender.recv(2048)) for _ in range(300)]
    assert sorted(r.sender_seq for r in replies) == list(range(300))
    assert sorted(r.seq for r in replies) == list(range(300))
    stamps = [r.receive_timestamp for r in sorted(replies, key=lambda r: r.sender_seq)]
    assert stamps == sorted(stamps) and all(r.timestamp >= r.receive_timestamp for r in replies)
    assert reflector.totals().reflected == 300


@pytest.mark.parametrize("mode", list(SecurityMode))
def test_single_datagram_receive_still_reflects_every_mode(mode: SecurityMode) -> None:
    with (
        Reflector(ReflectorConfig(poll_interval=0.05, receive_batch=1)) as reflector,
        SessionSender("::1") as sender,
    ):
        from tests.test_reflector import _params

        params = _params(sender, reflector.reserve_port("::1"), mode)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        result = sender.run(params, count=10, interval=0.0, reply_timeout=WAIT)
        assert result.received == 10 and reflector.totals().reflected == 10


@pytest.mark.parametrize("host", HOSTS)
def test_batch_sender_sends_each_queued_datagram_to_its_own_address(host: str) -> None:
    receiving, sending = _pair(host)
    other, _unused = _pair(host)
    with receiving, sending, other, _unused:
        receiver = batch_io.BatchReceiver(receiving, count=1, slot_size=64)
        receiving.sendto(b"learn", sending.getsockname())  # raw sockaddrs as recvmmsg reports them
        learn = batch_io.BatchReceiver(sending, count=1, slot_size=64)
        assert learn.receive() == 1
        namelen = batch_io.RESULT.unpack_from(learn.headers, 0)[0]
        to_receiving = bytes(learn.names[:namelen])
        other.sendto(b"learn", sending.getsockname())
        assert learn.receive() == 1
        to_other = bytes(learn.names[:namelen])
        batch = batch_io.BatchSender(sending, count=3, slot_size=128)
        assert not batch.add(b"one", to_receiving)
        assert not batch.add(memoryview(b"two!"), to_other)
        assert batch.add(b"three", to_receiving)  # full
        assert batch.flush() == 3 and batch.flush() == 0
        other.settimeout(WAIT)
        assert other.recv(64) == b"two!"
        got = []
        for _ in range(2):
            assert receiver.receive() == 1
            length = batch_io.RESULT.unpack_from(receiver.headers, 0)[3]
            got.append(bytes(receiver.views[0][:length]))
        assert got == [b"one", b"three"]


def test_totals_count_system_calls() -> None:
    with Reflector(ReflectorConfig(poll_interval=0.05)) as reflector, SessionSender("127.0.0.1") as sender:
        from tests.test_reflector import _params

        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        assert sender.run(params, count=5, interval=0.001, reply_timeout=WAIT).received == 5
        totals = reflector.totals()
        assert 1 <= totals.receive_calls <= 5 and totals.send_calls == 5
