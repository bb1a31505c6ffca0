"""The Session-Sender against a scripted reflector (real UDP on loopback): loss, duplicates, reordering."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nf.net.clock_sync import ClockState, ClockSyncCache, read_clock_state
from nf.net.reflector import Reflector, ReflectorConfig
from nf.net.sender import ReplyDrop, Schedule, SessionSender
from nf.twamp.modes import SecurityMode
from nf.twamp.test_keys import TestSessionKeys
from nf.twamp.test_packets import ReflectorPacket, SenderPacket, TestPacketCodec
from nf.twamp.test_session import TestSessionParams
from nf.twamp.timestamps import UNKNOWN_ERROR

WAIT = 30.0

Script = Callable[[SenderPacket, bytes], list[bytes]]


class ScriptedReflector:
    """Decodes each test packet and answers with whatever the script returns (a list of datagrams)."""

    def __init__(self, mode: SecurityMode, keys: TestSessionKeys | None, script: Script) -> None:
        self.codec = TestPacketCodec(mode, keys)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.script = script
        self.seen: list[SenderPacket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reply(self, packet: SenderPacket, seq: int | None = None) -> bytes:
        return self.codec.encode_reflector(
            ReflectorPacket(
                seq if seq is not None else packet.seq,
                packet.timestamp + 2000,
                0x8001,
                packet.timestamp + 1000,
                packet.seq,
                packet.timestamp,
                packet.error_estimate,
                64,
            )
        )

    def _run(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            packet = self.codec.decode_sender(data)
            self.seen.append(packet)
            for datagram in self.script(packet, data):
                self.sock.sendto(datagram, addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def _params(
    sender: SessionSender, port: int, mode: SecurityMode, keys: TestSessionKeys | None
) -> TestSessionParams:
    return TestSessionParams(
        os.urandom(16),
        mode,
        "127.0.0.1",
        sender.port,
        "127.0.0.1",
        port,
        30,
        0.0,
        1.0,
        0,
        0,
        b"\0\0",
        False,
        keys,
    )


@pytest.fixture
def sender() -> Iterator[SessionSender]:
    with SessionSender("127.0.0.1") as s:
        yield s


def test_loss_duplicates_and_reordering_are_accounted(sender: SessionSender) -> None:
    held: list[bytes] = []
    scripted: ScriptedReflector

    def script(packet: SenderPacket, _raw: bytes) -> list[bytes]:
        reply = scripted.reply(packet)
        if packet.seq in (3, 7):
            return []  # lost
        if packet.seq == 5:
            return [reply, reply, reply]  # two duplicates
        if packet.seq == 8:
            held.append(reply)  # delivered after 9: reordered
            return []
        if packet.seq == 9:
            return [reply, held.pop()]
        return [reply]

    scripted = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, script)
    try:
        params = _params(sender, scripted.port, SecurityMode.UNAUTHENTICATED, None)
        result = sender.run(params, count=12, interval=0.005, reply_timeout=0.5)
    finally:
        scripted.close()
    assert (result.sent, result.received, result.lost) == (12, 10, 2)
    assert (result.duplicates, result.reordered) == (2, 1)
    assert [r.sender_seq for r in result.records if not r.received] == [3, 7]
    assert result.records[5].duplicates == 2
    record = result.records[0]
    assert record.turnaround == pytest.approx(1000 / 2**32)
    assert record.sender_ttl == 64 and record.reflector_seq == 0
    assert record.t2 is not None and record.t2 - record.t1 == pytest.approx(1000 / 2**32, abs=1e-6)
    # Padding is random (RFC 4656 s4.1.2): no two packets of 30 octets agree by chance.
    assert len(scripted.seen[0].padding) == 30 and scripted.seen[0].padding != bytes(30)


@pytest.mark.parametrize("mode", [SecurityMode.AUTHENTICATED, SecurityMode.ENCRYPTED])
def test_bad_replies_are_counted_not_recorded(sender: SessionSender, mode: SecurityMode) -> None:
    keys = TestSessionKeys(os.urandom(16), os.urandom(32))
    forger = TestPacketCodec(mode, TestSessionKeys(bytes(16), bytes(32)))
    scripted: ScriptedReflector

    def script(packet: SenderPacket, _raw: bytes) -> list[bytes]:
        forged = forger.encode_reflector(ReflectorPacket(0, 0, 1, 0, packet.seq, packet.timestamp, 1, 1))
        unknown = scripted.reply(SenderPacket(packet.seq + 1000, packet.timestamp, 1))
        return [b"tiny", forged, unknown, scripted.reply(packet)]

    scripted = ScriptedReflector(mode, keys, script)
    try:
        result = sender.run(
            _params(sender, scripted.port, mode, keys), count=3, interval=0.0, reply_timeout=WAIT
        )
    finally:
        scripted.close()
    assert result.received == 3
    assert result.dropped[ReplyDrop.SHORT] == 3
    assert result.dropped[ReplyDrop.BAD_HMAC] == 3
    assert result.dropped[ReplyDrop.UNKNOWN_SEQUENCE] == 3


def test_replies_from_another_source_are_ignored(sender: SessionSender) -> None:
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    scripted: ScriptedReflector

    def script(packet: SenderPacket, _raw: bytes) -> list[bytes]:
        intruder.sendto(scripted.reply(packet), ("127.0.0.1", sender.port))
        return [scripted.reply(packet)]

    scripted = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, script)
    try:
        result = sender.run(
            _params(sender, scripted.port, SecurityMode.UNAUTHENTICATED, None),
            count=4,
            interval=0.0,
            reply_timeout=WAIT,
        )
    finally:
        scripted.close()
        intruder.close()
    assert result.received == 4 and result.duplicates == 0
    assert result.dropped[ReplyDrop.UNKNOWN_SOURCE] == 4


def test_poisson_schedule_is_repeatable_with_a_seed_and_periodic_is_exact() -> None:
    one = SessionSender._offsets(50, 0.01, Schedule.POISSON, seed=7)
    two = SessionSender._offsets(50, 0.01, Schedule.POISSON, seed=7)
    assert one == two and one[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(one))
    assert one != SessionSender._offsets(50, 0.01, Schedule.POISSON, seed=8)
    assert SessionSender._offsets(4, 0.5, Schedule.PERIODIC, None) == [0.0, 0.5, 1.0, 1.5]


def test_poisson_gaps_are_capped_at_max_interval() -> None:
    """RFC 8913 max-interval: no gap above it, so the mean falls below lambda, to its truncated mean."""
    lam, cap = 0.01, 0.02
    offsets = SessionSender._offsets(10_000, lam, Schedule.POISSON, 11, cap)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    uncapped = SessionSender._offsets(10_000, lam, Schedule.POISSON, 11)
    assert max(b - a for a, b in itertools.pairwise(uncapped)) > 3 * cap  # the cap has work to do
    assert max(gaps) <= cap + 1e-9
    assert sum(abs(g - cap) < 1e-9 for g in gaps) > 1000  # about exp(-2) of them were cut
    mean = sum(gaps) / len(gaps)
    assert mean < lam
    assert mean == pytest.approx(lam * (1 - math.exp(-cap / lam)), rel=0.05)
    assert SessionSender._offsets(5, 0.5, Schedule.PERIODIC, None, 0.5) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_poisson_run_with_max_interval_on_the_wire(sender: SessionSender) -> None:
    """Against the real Reflector: the gaps between the T1s of the records stay within max-interval, give or
    take the scheduling latency of a busy test machine."""
    lam = cap = 0.02  # YANG allows max-interval == lambda
    tolerance = 0.015
    seed = 2
    uncapped = SessionSender._offsets(60, lam, Schedule.POISSON, seed)
    assert sum(b - a > cap + tolerance for a, b in itertools.pairwise(uncapped)) > 5  # the test can fail
    with Reflector(ReflectorConfig(poll_interval=0.05, linger=1.0)) as reflector:
        port = reflector.reserve_port("127.0.0.1")
        params = _params(sender, port, SecurityMode.UNAUTHENTICATED, None)
        reflector.add_session(params)
        reflector.start_session(params.sid)
        result = sender.run(
            params,
            count=60,
            interval=lam,
            schedule=Schedule.POISSON,
            max_interval=cap,
            seed=seed,
            reply_timeout=WAIT,
        )
    assert (result.sent, result.received) == (60, 60)
    gaps = [b.t1 - a.t1 for a, b in itertools.pairwise(result.records)]
    assert max(gaps) <= cap + tolerance, max(gaps)


def test_max_interval_below_interval_is_refused(sender: SessionSender) -> None:
    params = _params(sender, 9, SecurityMode.UNAUTHENTICATED, None)
    for bad in (0.05, math.nan):
        with pytest.raises(ValueError, match="max_interval"):
            sender.run(params, count=3, interval=0.1, schedule=Schedule.POISSON, max_interval=bad)


def test_start_at_delays_the_first_packet_and_cancel_stops_sending(sender: SessionSender) -> None:
    scripted = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, lambda p, _r: [scripted.reply(p)])
    try:
        params = _params(sender, scripted.port, SecurityMode.UNAUTHENTICATED, None)
        start = time.time() + 0.3
        result = sender.run(params, count=2, interval=0.0, reply_timeout=WAIT, start_at=start)
        assert result.records[0].t1 >= start - 0.002
        threading.Timer(0.3, sender.cancel).start()
        result = sender.run(params, count=10_000, interval=0.01, reply_timeout=WAIT)
    finally:
        scripted.close()
    assert 0 < result.sent < 10_000


def test_invalid_arguments_are_refused(sender: SessionSender) -> None:
    params = _params(sender, 9, SecurityMode.UNAUTHENTICATED, None)
    with pytest.raises(ValueError):
        sender.run(params, count=-1, interval=0.1)


def test_clock_state_from_adjtimex() -> None:
    state = read_clock_state()
    assert state.max_error is not None and state.max_error >= 0  # adjtimex works in any Linux container
    estimate = state.error_estimate()
    assert estimate.synchronized is state.synchronized
    assert estimate.seconds >= state.max_error
    assert ClockState(False, None).error_estimate() == UNKNOWN_ERROR
    cache = ClockSyncCache(ttl=60)
    assert cache.error_estimate_word() == int.from_bytes(cache.error_estimate().encode(), "big")


def test_server_octets_lead_the_padding(sender: SessionSender) -> None:
    """RFC 6038: non-zero Server Octets from Accept-Session start the Packet Padding of every packet."""
    scripted = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, lambda p, _r: [scripted.reply(p)])
    try:
        params = dataclasses.replace(
            _params(sender, scripted.port, SecurityMode.UNAUTHENTICATED, None), server_octets=b"\x12\x34"
        )
        assert sender.run(params, count=3, interval=0.0, reply_timeout=WAIT).received == 3
    finally:
        scripted.close()
    assert [p.padding[:2] for p in scripted.seen] == [b"\x12\x34"] * 3
    assert all(len(p.padding) == 30 for p in scripted.seen)


def test_cancel_also_ends_the_wait_for_replies(sender: SessionSender) -> None:
    silent = ScriptedReflector(SecurityMode.UNAUTHENTICATED, None, lambda _p, _r: [])
    try:
        params = _params(sender, silent.port, SecurityMode.UNAUTHENTICATED, None)
        threading.Timer(1.0, sender.cancel).start()
        result = sender.run(params, count=2, interval=0.0, reply_timeout=3600)  # returns only if cancelled
    finally:
        silent.close()
    assert (result.sent, result.received, result.lost) == (2, 0, 2)
