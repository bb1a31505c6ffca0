"""The reflector's batched I/O on loopback: the C loop's recvmmsg/sendmmsg; the Python loop."""

from __future__ import annotations

import socket
import time

import pytest

from nf.net.reflector import Reflector, ReflectorConfig
from nf.net.sender import SessionSender
from nf.net.socket_options import set_receive_buffer
from nf.twamp.modes import SecurityMode
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, ntp_from_unix
from tests.test_reflector import _plain_params

WAIT = 30.0
HOSTS = ["127.0.0.1", "::1"]


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
        params = _plain_params(host, sender.getsockname()[1], port)
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


def test_totals_count_system_calls() -> None:
    with Reflector(ReflectorConfig(poll_interval=0.05)) as reflector, SessionSender("127.0.0.1") as sender:
        from tests.test_reflector import _params

        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        assert sender.run(params, count=5, interval=0.001, reply_timeout=WAIT).received == 5
        totals = reflector.totals()
        assert 1 <= totals.receive_calls <= 5 and totals.send_calls == 5
