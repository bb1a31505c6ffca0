"""The threaded Session-Reflector and the Session-Sender against each other on loopback, real UDP sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nf.net.reflector import EndReason, Reflector, ReflectorConfig, SessionCounters, SessionState
from nf.net.sender import SessionSender
from nf.net.socket_options import enable_receive_timestamps, enable_receive_ttl, parse_ancillary
from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, ntp_from_unix
from nf.twamp.test_reflector import DropReason
from nf.twamp.test_session import TestSessionParams

WAIT = 30.0
HOSTS = ["127.0.0.1", "::1"]


def _params(
    sender: SessionSender,
    reflector_port: int,
    mode: SecurityMode = SecurityMode.UNAUTHENTICATED,
    *,
    padding: int = 40,
    reflect_octets: int = 0,
    symmetric: bool = False,
    timeout: float = 1.0,
    dscp: int = 0,
    sender_port: int | None = None,
) -> TestSessionParams:
    keys = TestSessionKeys(os.urandom(16), os.urandom(32)) if mode.test_is_protected else None
    return TestSessionParams(
        sid=os.urandom(16),
        mode=mode,
        sender_address=sender.address,
        sender_port=sender.port if sender_port is None else sender_port,
        reflector_address=sender.address,
        reflector_port=reflector_port,
        padding_length=padding,
        start_time=time.time(),
        timeout=timeout,
        dscp=dscp,
        reflect_octets=reflect_octets,
        server_octets=b"\x5a\xa5",
        symmetric=symmetric,
        keys=keys,
    )


def _plain_params(host: str, sender_port: int, reflector_port: int) -> TestSessionParams:
    """An unauthenticated session for a sender that is a plain UDP socket (sender_port 0: any port)."""
    return TestSessionParams(
        os.urandom(16), SecurityMode.UNAUTHENTICATED, host, sender_port, host, reflector_port, 0, time.time(),
        1.0, 0, 0, b"\0\0", False, None,
    )  # fmt: skip


@pytest.fixture
def reflector() -> Iterator[Reflector]:
    with Reflector(ReflectorConfig(poll_interval=0.05, linger=1.0)) as r:
        yield r


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _counters(reflector: Reflector, sid: bytes) -> SessionCounters:
    counters = reflector.counters(sid)
    assert counters is not None
    return counters


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("mode", list(SecurityMode))
@pytest.mark.parametrize("feature", ["plain", "reflect-octets", "symmetrical"])
def test_sender_against_reflector(reflector: Reflector, host: str, mode: SecurityMode, feature: str) -> None:
    with SessionSender(host) as sender:
        port = reflector.reserve_port(host)
        params = _params(
            sender,
            port,
            mode,
            padding=60,
            reflect_octets=2 if feature == "reflect-octets" else 0,
            symmetric=feature == "symmetrical",
        )
        reflector.add_session(params)
        reflector.start_session(params.sid)
        result = sender.run(params, count=20, interval=0.002, reply_timeout=WAIT)
    assert (result.sent, result.received, result.lost, result.duplicates) == (20, 20, 0, 0)
    assert [r.sender_seq for r in result.records] == list(range(20))
    assert sorted(r.reflector_seq for r in result.records if r.reflector_seq is not None) == list(range(20))
    for record in result.records:
        assert record.t2 is not None and record.t3 is not None and record.t4 is not None
        assert record.t1 <= record.t2 + 0.001 and record.t2 <= record.t3 <= record.t4 + 0.001
        assert record.turnaround is not None and record.turnaround >= 0
        assert record.round_trip is not None and record.round_trip >= -0.001
        assert record.sender_ttl == 255  # sent with TTL 255 and read back from the kernel on loopback
        assert record.reflector_error is not None
    protected = mode.test_is_protected
    sender_size = {(False, False): 14, (False, True): 41, (True, False): 48, (True, True): 112}[
        (protected, feature == "symmetrical")
    ]
    minimum = (112 if protected else 41) + params.reflect_octets  # room for the reflected octets
    assert result.records[0].reply_length == max(sender_size + 60, minimum)
    if feature == "reflect-octets":
        assert {r.reflected_octets for r in result.records} == {b"\x5a\xa5"}
    counters = _counters(reflector, params.sid)
    assert counters.reflected == 20 and not any(counters.dropped.values())
    assert reflector.totals().kernel_timestamps


def _send_raw(host: str, port: int, payloads: list[bytes], bind_port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, bind_port))
    sock.settimeout(0.3)
    for payload in payloads:
        sock.sendto(payload, (host, port))
    return sock


def _no_reply(sock: socket.socket) -> bool:
    try:
        sock.recv(2048)
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize("mode", [SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED])
def test_bad_hmac_is_counted_and_not_reflected(reflector: Reflector, mode: SecurityMode) -> None:
    with SessionSender("127.0.0.1") as sender:
        port = reflector.reserve_port("127.0.0.1")
        params = _params(sender, port, mode)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        forger = TestPacketCodec(mode, TestSessionKeys(bytes(16), bytes(32)))
        bad = [
            forger.encode_sender(SenderPacket(i, ntp_from_unix(time.time()), 1, bytes(40))) for i in range(3)
        ]
        sender.close()  # frees the session's sender port for the forger
        with _send_raw("127.0.0.1", port, [*bad, b"short"], bind_port=params.sender_port) as raw:
            _wait_for(
                lambda: _counters(reflector, params.sid).dropped[DropReason.BAD_HMAC] == 3, "bad-hmac count"
            )
            _wait_for(lambda: _counters(reflector, params.sid).dropped[DropReason.SHORT] == 1, "short count")
            assert _no_reply(raw)
    assert _counters(reflector, params.sid).reflected == 0
    assert reflector.totals().dropped[DropReason.BAD_HMAC] == 3


def test_unknown_sender_is_dropped_and_counted(reflector: Reflector) -> None:
    with SessionSender("127.0.0.1") as sender:
        port = reflector.reserve_port("127.0.0.1")
        params = _params(sender, port)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        codec = TestPacketCodec(params.mode, None)
        packet = codec.encode_sender(SenderPacket(0, ntp_from_unix(time.time()), 1, bytes(20)))
        with _send_raw("127.0.0.1", port, [packet, packet]) as stranger:
            _wait_for(
                lambda: reflector.totals().dropped[DropReason.UNKNOWN_SENDER] == 2, "unknown-sender count"
            )
            assert _no_reply(stranger)
        # The real sender is still served.
        result = sender.run(params, count=3, interval=0.0, reply_timeout=WAIT)
    assert result.received == 3


def test_packets_before_start_are_dropped_as_not_started(reflector: Reflector) -> None:
    with SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        result = sender.run(params, count=4, interval=0.0, reply_timeout=0.5)
        assert result.received == 0
        _wait_for(
            lambda: _counters(reflector, params.sid).dropped[DropReason.NOT_STARTED] == 4, "not-started"
        )
        reflector.start_session(params.sid)
        assert sender.run(params, count=4, interval=0.0, reply_timeout=WAIT).received == 4


def test_rate_limit_is_enforced_and_counted(reflector: Reflector) -> None:
    with SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params, max_pps=1.0)  # burst of 1 packet, then one per second
        reflector.start_session(params.sid)
        result = sender.run(params, count=30, interval=0.0, reply_timeout=0.5)
    # However slow the machine, 30 back-to-back packets take far less than 20 s.
    assert 1 <= result.received < 20

    def accounted() -> bool:
        counters = _counters(reflector, params.sid)
        return counters.reflected + counters.dropped[DropReason.RATE_LIMITED] == 30

    _wait_for(accounted, "every packet reflected or rate-limited")
    assert _counters(reflector, params.sid).reflected == result.received


def test_stop_keeps_reflecting_for_timeout_then_discards(reflector: Reflector) -> None:
    ended: list[SessionCounters] = []
    reflector.on_session_end = ended.append
    with SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"), timeout=5.0)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        reflector.stop_session(params.sid)
        # Within Timeout: still reflected (packets in flight must be, RFC 5357 s3.5).
        assert sender.run(params, count=3, interval=0.0, reply_timeout=WAIT).received == 3
        assert _counters(reflector, params.sid).state is SessionState.STOPPING
        _wait_for(lambda: bool(ended), "session end after Timeout")
        assert ended[0].end_reason is EndReason.TIMEOUT_AFTER_STOP and ended[0].reflected == 3
        # After Timeout: not reflected, counted while the port lingers.
        assert sender.run(params, count=2, interval=0.0, reply_timeout=0.3).received == 0
    counters = _counters(reflector, params.sid)
    assert counters.state is SessionState.ENDED and counters.dropped[DropReason.AFTER_STOP] == 2
    with pytest.raises(KeyError):
        reflector.start_session(params.sid)


def test_refwait_discards_an_idle_session() -> None:
    ended: list[SessionCounters] = []
    config = ReflectorConfig(refwait=2.0, poll_interval=0.05, linger=0.2)
    with Reflector(config, on_session_end=ended.append) as reflector, SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        assert sender.run(params, count=2, interval=0.0, reply_timeout=WAIT).received == 2
        _wait_for(lambda: bool(ended), "REFWAIT")
        assert ended[0].end_reason is EndReason.REFWAIT
        _wait_for(lambda: reflector.totals().ports == 0, "port closed after linger")
        assert sender.run(params, count=2, interval=0.0, reply_timeout=0.3).received == 0
        assert reflector.totals().reflected == 2


def test_remove_session_stops_reflecting_at_once(reflector: Reflector) -> None:
    with SessionSender("::1") as sender:
        params = _params(sender, reflector.reserve_port("::1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        reflector.remove_session(params.sid)
        assert sender.run(params, count=2, interval=0.0, reply_timeout=0.3).received == 0
    assert _counters(reflector, params.sid).end_reason is EndReason.REMOVED


def test_wildcard_sender_port_accepts_any_source_port(reflector: Reflector) -> None:
    with SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"), sender_port=0)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        assert sender.run(params, count=3, interval=0.0, reply_timeout=WAIT).received == 3


def test_reserve_port_prefers_requested_then_range_then_any() -> None:
    from tests.conftest import free_udp_range

    low, high = free_udp_range("127.0.0.1", 4)
    with Reflector(ReflectorConfig(port_range=(low, high), poll_interval=0.05)) as reflector:
        assert reflector.reserve_port("127.0.0.1", high) == high
        taken = {high}
        for _ in range(3):
            port = reflector.reserve_port(
                "127.0.0.1", high
            )  # requested one is ours now: comes from the range
            assert low <= port <= high and port not in taken
            taken.add(port)
        with pytest.raises(OSError):
            reflector.reserve_port("127.0.0.1", high)  # range exhausted
        reflector.release_port("127.0.0.1", low)
        _wait_for(lambda: reflector.totals().ports == 3, "released port")
    with Reflector(ReflectorConfig(poll_interval=0.05)) as reflector:
        assert reflector.reserve_port("127.0.0.1", 0) > 0


def test_close_joins_threads_and_closes_sockets() -> None:
    before = {t.ident for t in threading.enumerate()}
    reflector = Reflector(ReflectorConfig(poll_interval=0.05))
    ports = [reflector.reserve_port("127.0.0.1") for _ in range(3)] + [reflector.reserve_port("::1")]
    started = {t.name for t in threading.enumerate() if t.ident not in before}
    assert started == {f"twamp-reflector-{port}" for port in ports} | {"twamp-reflector-housekeeping"}
    reflector.close()
    assert {t.ident for t in threading.enumerate() if t.is_alive()} - before == set()
    for port in ports[:3]:  # the ports are free again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))
    with pytest.raises(RuntimeError):
        reflector.reserve_port("127.0.0.1")


@pytest.mark.parametrize("host", HOSTS)
def test_dscp_and_ttl_of_the_reply(reflector: Reflector, host: str) -> None:
    """The reply leaves with the session's DSCP and TTL / Hop Limit 255, read back as ancillary data."""
    v6 = ":" in host
    with SessionSender(host) as sender:
        params = _params(sender, reflector.reserve_port(host), dscp=46)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        codec = TestPacketCodec(params.mode, None)
        sender.close()
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.bind((host, params.sender_port))
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, 66, 1)  # IPV6_RECVTCLASS
            else:
                sock.setsockopt(socket.IPPROTO_IP, 13, 1)  # IP_RECVTOS
            assert enable_receive_ttl(sock) and enable_receive_timestamps(sock)
            sock.settimeout(WAIT)
            sock.sendto(codec.encode_sender(SenderPacket(0, 0, 1, bytes(30))), (host, params.reflector_port))
            _, ancdata, _, _ = sock.recvmsg(2048, 256)
    tos_cmsg = (socket.IPPROTO_IPV6, 67) if v6 else (socket.IPPROTO_IP, 1)  # IPV6_TCLASS / IP_TOS
    tos = [data[0] for level, kind, data in ancdata if (level, kind) == tos_cmsg]
    assert tos == [46 << 2]
    stamp, ttl = parse_ancillary(ancdata)
    assert ttl == 255
    assert stamp is not None and abs(stamp - time.time_ns()) < 5_000_000_000  # a kernel receive timestamp


def test_realtime_priority_is_applied_to_port_threads_or_reported(caplog: pytest.LogCaptureFixture) -> None:
    with Reflector(ReflectorConfig(poll_interval=0.05, realtime_priority=5)) as reflector:
        port = reflector.reserve_port("127.0.0.1")
        thread = next(t for t in threading.enumerate() if t.name == f"twamp-reflector-{port}")
        assert thread.native_id is not None

        def settled() -> bool:
            fifo = os.sched_getscheduler(thread.native_id or 0) == os.SCHED_FIFO
            return fifo or "no realtime priority" in caplog.text

        _wait_for(settled, "priority applied or refusal logged")
        if os.sched_getscheduler(thread.native_id) == os.SCHED_FIFO:
            assert os.sched_getparam(thread.native_id).sched_priority == 5


def test_a_bug_in_the_reflect_path_costs_the_packet_not_the_thread() -> None:
    """The pure-Python loop (receive_batch 1) survives an exception in its reply builder."""
    with (
        Reflector(ReflectorConfig(poll_interval=0.05, receive_batch=1)) as reflector,
        SessionSender("127.0.0.1") as sender,
    ):
        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        engine = reflector._by_sid[params.sid][1].engine
        assert engine is not None
        engine.seq = 1 << 40  # does not fit the 32-bit field: struct.error inside reflect(), once
        assert sender.run(params, count=1, interval=0.0, reply_timeout=0.5).received == 0
        _wait_for(lambda: reflector.totals().internal_errors == 1, "internal error counted")
        assert sender.run(params, count=3, interval=0.0, reply_timeout=WAIT).received == 3


@pytest.mark.parametrize("receive_batch", [1, 16])
def test_busy_poll_reflects_like_the_blocking_loop(receive_batch: int) -> None:
    with (
        Reflector(
            ReflectorConfig(poll_interval=0.05, busy_poll=0.002, receive_batch=receive_batch)
        ) as reflector,
        SessionSender("::1") as sender,
    ):
        params = _params(sender, reflector.reserve_port("::1"), SecurityMode.AUTHENTICATED)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        result = sender.run(params, count=50, interval=0.0005, reply_timeout=WAIT)
        assert result.received == 50 and _counters(reflector, params.sid).reflected == 50
        reflector.stop_session(params.sid)
        assert sender.run(params, count=2, interval=0.0, reply_timeout=WAIT).received == 2


def test_housekeeping_runs_under_a_flood_of_foreign_packets() -> None:
    """A stranger sending faster than the poll interval must not keep REFWAIT from firing."""
    ended: list[SessionCounters] = []
    config = ReflectorConfig(refwait=0.5, poll_interval=0.05, linger=0.2)
    with Reflector(config, on_session_end=ended.append) as reflector, SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"))
        reflector.add_session(params)
        reflector.start_session(params.sid)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with stranger:
            stranger.bind(("127.0.0.1", 0))
            deadline = time.monotonic() + WAIT
            while not ended and time.monotonic() < deadline:
                stranger.sendto(b"x" * 20, ("127.0.0.1", params.reflector_port))
                time.sleep(0.005)
        assert ended and ended[0].end_reason is EndReason.REFWAIT
        assert reflector.totals().dropped[DropReason.UNKNOWN_SENDER] > 0


def test_totals_keep_every_reflected_packet_after_close() -> None:
    """Sessions ended but not yet forgotten (removed, stopped) and live ones all stay in totals() after close.

    The count is taken before the reply leaves, so it is complete as soon as the sender has its replies.
    """
    reflector = Reflector(ReflectorConfig(poll_interval=0.05, linger=600.0))
    try:
        with SessionSender("127.0.0.1") as sender, SessionSender("::1") as sender6:
            removed = _params(sender, reflector.reserve_port("127.0.0.1"))
            stopped = _params(sender6, reflector.reserve_port("::1"), timeout=600.0)
            live = _params(sender, reflector.reserve_port("127.0.0.1"), SecurityMode.AUTHENTICATED)
            received = 0
            for params, sending in ((removed, sender), (stopped, sender6), (live, sender)):
                reflector.add_session(params)
                reflector.start_session(params.sid)
                result = sending.run(params, count=7, interval=0.0, reply_timeout=WAIT)
                assert result.received == 7
                received += result.received
            assert reflector.totals().reflected == received
            reflector.remove_session(removed.sid)
            reflector.stop_session(stopped.sid)
            assert _counters(reflector, removed.sid).state is SessionState.ENDED
    finally:
        reflector.close()
    totals = reflector.totals()
    assert (totals.reflected, totals.ports, totals.sessions) == (21, 0, 0)
    assert [_counters(reflector, p.sid).reflected for p in (removed, stopped, live)] == [7, 7, 7]
    assert reflector.totals().reflected == 21  # folded once, not again


def test_close_during_a_flood_counts_exactly_the_replies_sent() -> None:
    """close() while packets are in flight: totals() afterwards equals the replies that actually left.

    This is the integration engineer's report: a count still being made when close() took its snapshot was
    lost. Every reply counted must have been sent, and every one sent counted.
    """
    codec = TestPacketCodec(SecurityMode.UNAUTHENTICATED, None)
    for _ in range(5):
        with (
            Reflector(ReflectorConfig(poll_interval=0.05)) as reflector,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood,
        ):
            flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            flood.bind(("127.0.0.1", 0))
            port = reflector.reserve_port("127.0.0.1")
            params = _plain_params("127.0.0.1", flood.getsockname()[1], port)
            reflector.add_session(params)
            reflector.start_session(params.sid)
            packet = codec.encode_sender(SenderPacket(0, ntp_from_unix(time.time()), 0))
            flood.connect(("127.0.0.1", port))
            flood.settimeout(WAIT)
            for _ in range(200):
                flood.send(packet)
            flood.recv(2048)  # the reflector is at work
            received = 1
            reflector.close()
            flood.settimeout(0.5)
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                while True:
                    flood.recv(2048)
                    received += 1
        assert reflector.totals().reflected == received


@pytest.mark.parametrize("mode", [SecurityMode.UNAUTHENTICATED, SecurityMode.ENCRYPTED])
def test_a_packet_the_c_loop_hands_back_for_a_started_session_is_reflected_by_python(
    reflector: Reflector, mode: SecurityMode
) -> None:
    """A session started on the control side an instant after the C loop judged it inactive (forced here)
    is still reflected, by Python, with the same sequence numbers and counters."""
    with SessionSender("127.0.0.1") as sender:
        params = _params(sender, reflector.reserve_port("127.0.0.1"), mode, dscp=12)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        fast = reflector._by_sid[params.sid][1].native
        assert fast is not None, "the default configuration runs the C loop"
        assert sender.run(params, count=2, interval=0.0, reply_timeout=WAIT).received == 2
        fast.activate(0)  # the C loop now hands every packet of this session to Python
        result = sender.run(params, count=3, interval=0.0, reply_timeout=WAIT)
        assert result.received == 3
        assert sorted(r.reflector_seq or 0 for r in result.records) == [2, 3, 4]
        counters = _counters(reflector, params.sid)
        assert counters.reflected == 5 and not any(counters.dropped.values())
        assert reflector.totals().send_calls == 5


@pytest.mark.parametrize("mode", [SecurityMode.UNAUTHENTICATED, SecurityMode.AUTHENTICATED])
def test_length_of_padding_to_reflect_on_the_wire(reflector: Reflector, mode: SecurityMode) -> None:
    """RFC 6038 s5.1.3: the sender pads by the truncation plus Length of padding to reflect (8 here, with no
    padding asked for), and the reply is as long as the request, its padding the first 8 octets sent."""
    with SessionSender("127.0.0.1") as sender:
        asked = _params(sender, reflector.reserve_port("127.0.0.1"), mode, padding=0, reflect_octets=2)
        params = dataclasses.replace(asked, padding_to_reflect=8)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        result = sender.run(params, count=3, interval=0.0, reply_timeout=WAIT)
    assert result.received == 3
    sent = (48 if mode.test_is_protected else 14) + (64 if mode.test_is_protected else 27) + 8
    assert {r.reply_length for r in result.records} == {sent}
    assert {r.reflected_octets for r in result.records} == {b"\x5a\xa5"}  # the Server Octets, sent first


@pytest.mark.parametrize("receive_batch", [1, 16])
def test_an_ended_session_yields_to_a_started_wildcard(receive_batch: int) -> None:
    """While an ended session lingers (to count late packets), a started wildcard session on the same port
    takes its sender's packets, in the Python loop and the C loop alike."""
    config = ReflectorConfig(poll_interval=0.05, linger=30.0, receive_batch=receive_batch)
    with Reflector(config) as reflector, SessionSender("127.0.0.1") as sender:
        port = reflector.reserve_port("127.0.0.1")
        exact = _params(sender, port)
        wildcard = _params(sender, port, sender_port=0)
        for params in (exact, wildcard):
            reflector.add_session(params)
            reflector.start_session(params.sid)
        reflector.remove_session(exact.sid)
        assert sender.run(wildcard, count=4, interval=0.0, reply_timeout=WAIT).received == 4
        assert _counters(reflector, wildcard.sid).reflected == 4
        assert _counters(reflector, exact.sid).reflected == 0 and not any(
            _counters(reflector, exact.sid).dropped.values()
        )


_OUTSIDE_SENDER = """
import json, socket, sys, time
from nf.twamp.modes import SecurityMode
from nf.twamp.test_packets import SenderPacket, TestPacketCodec, ntp_from_unix
port, count, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
codec = TestPacketCodec(SecurityMode.UNAUTHENTICATED, None)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
for seq in range(count):
    while time.monotonic() < start + seq * gap:
        pass
    sock.sendto(codec.encode_sender(SenderPacket(seq, ntp_from_unix(time.time()), 0)), ("127.0.0.1", port))
sock.settimeout(5.0)
turnarounds = []
try:
    while len(turnarounds) < count:
        reply = codec.decode_reflector(sock.recv(2048))
        turnarounds.append((reply.timestamp - reply.receive_timestamp) / 2**32)
except TimeoutError:
    pass
print(json.dumps({"received": len(turnarounds), "worst": max(turnarounds, default=-1.0)}), flush=True)
"""


def test_the_c_loop_reflects_while_the_interpreter_is_held() -> None:
    """A control plane busy in the same process (here: one long C call holding the GIL) does not hold up
    reflection: housekeeping runs on its own thread, so the port thread needs the GIL only for packets it
    hands back. The sender is another process, so only the reflector shares this interpreter."""
    with Reflector(ReflectorConfig(poll_interval=0.05)) as reflector:
        port = reflector.reserve_port("127.0.0.1")
        params = _plain_params("127.0.0.1", 0, port)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        started = time.perf_counter()
        sum(range(1_000_000))
        per_million = time.perf_counter() - started
        hold = int(0.8 / per_million) * 1_000_000  # one C call of about 0.8 s: the GIL is never released
        count = 300
        sender = subprocess.Popen(
            [sys.executable, "-c", _OUTSIDE_SENDER, str(port), str(count), "0.003"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sender.stdin is not None and sender.stdout is not None
            assert sender.stdout.readline().strip() == "ready"
            sender.stdin.write("go\n")
            sender.stdin.flush()
            time.sleep(0.1)  # sending: now take the interpreter for most of the run
            sum(range(hold))
            report = json.loads(sender.stdout.readline())
        finally:
            sender.kill()
            sender.wait()
    assert report["received"] == count
    assert report["worst"] < 0.05, f"a reply waited {report['worst'] * 1e3:.1f} ms in the reflector"
