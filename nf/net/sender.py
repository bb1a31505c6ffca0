"""The Session-Sender: sends one test session's packets on schedule and collects the reflected replies.

Blocking by design (the control side runs it with asyncio.to_thread): the calling thread sends on a
periodic or Poisson schedule while a receive thread reads replies with kernel receive timestamps (T4). T1 is
read just before sendto, after everything else of the packet is prepared. Replies are matched by the
sender sequence number they carry; duplicates, reordering, loss and bad replies are counted, and the result
has one PacketRecord per packet sent, in sequence order.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nf.net.clock_sync import ClockSyncCache
from nf.net.rate_limited_log import RateLimitedLog
from nf.net.socket_options import (
    ANCILLARY_SIZE,
    TEST_TTL,
    enable_receive_timestamps,
    parse_ancillary,
    set_dscp,
    set_receive_buffer,
    set_receive_timeout,
    set_send_ttl,
)
from nf.twamp.test_packets import (
    TestPacketCodec,
    TestPacketError,
    ntp_from_ns,
    unix_from_ntp,
)
from nf.twamp.test_session import TestSessionParams
from nf.twamp.timestamps import ErrorEstimate

log = logging.getLogger(__name__)

RandomBytes = Callable[[int], bytes]


class Schedule(enum.Enum):
    PERIODIC = "periodic"
    POISSON = "poisson"  # exponential gaps with the given mean (RFC 2330 Poisson sampling), optionally capped


class ReplyDrop(enum.Enum):
    """Why a datagram on the sender's socket was not taken as a reply."""

    SHORT = "short"
    BAD_HMAC = "bad-hmac"
    TOO_LONG = "too-long"
    UNKNOWN_SOURCE = "unknown-source"
    UNKNOWN_SEQUENCE = "unknown-sequence"  # a sender sequence number this run never sent


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """One test packet and, when it came back, its reply. Times are Unix seconds."""

    sender_seq: int
    t1: float  # sender transmit
    sender_error: ErrorEstimate
    t2: float | None = None  # reflector receive
    t3: float | None = None  # reflector transmit
    t4: float | None = None  # sender receive (kernel timestamp when available)
    turnaround: float | None = None  # T3 - T2, computed from the exact 64-bit NTP values
    reflector_seq: int | None = None
    sender_ttl: int | None = None  # TTL / Hop Limit the reflector saw on our packet
    reflector_error: ErrorEstimate | None = None
    duplicates: int = 0  # further copies of the reply
    reply_length: int | None = None
    reflected_octets: bytes = b""  # RFC 6038: the first reflect_octets octets of the reply's padding

    @property
    def received(self) -> bool:
        return self.t4 is not None

    @property
    def round_trip(self) -> float | None:
        """Round-trip delay without the reflector's turnaround: (T4 - T1) - (T3 - T2)."""
        if self.t4 is None or self.turnaround is None:
            return None
        return (self.t4 - self.t1) - self.turnaround


@dataclass(frozen=True, slots=True)
class SenderResult:
    sid: bytes
    records: tuple[PacketRecord, ...]
    sent: int
    received: int
    duplicates: int
    reordered: int  # replies whose sender sequence number is below one already received
    dropped: Mapping[ReplyDrop, int]
    kernel_timestamps: bool
    started_at: float
    finished_at: float

    @property
    def lost(self) -> int:
        return self.sent - self.received


@dataclass(slots=True)
class _Reply:
    t4: int
    reflector_seq: int
    t2: int
    t3: int
    reflector_ee: int
    sender_ttl: int
    length: int
    reflected: bytes
    duplicates: int = 0


class SessionSender:
    """A bound test socket; run() drives one session over it.

    Bind first (the port goes into Request-TW-Session as the Sender Port), then run() with the
    TestSessionParams the control exchange produced. One run at a time; close() when done.
    """

    def __init__(
        self,
        address: str,
        port: int = 0,
        *,
        receive_buffer: int = 4 * 1024 * 1024,
        clock_sync: ClockSyncCache | None = None,
    ) -> None:
        host = address.split("%", 1)[0]
        self.family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self._sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._sock.bind((address, port))
            self.kernel_timestamps = enable_receive_timestamps(self._sock)
            set_send_ttl(self._sock, TEST_TTL)
            set_receive_buffer(self._sock, receive_buffer)
            set_receive_timeout(self._sock, 0.05)
        except OSError:
            self._sock.close()
            raise
        self.address = host
        self.port: int = self._sock.getsockname()[1]
        self._clock_sync = clock_sync or ClockSyncCache()
        self._cancel = threading.Event()
        self._state: _ReceiveState | None = None
        self._bad_log = RateLimitedLog(log)

    def __repr__(self) -> str:
        return f"SessionSender({self.address!r}, {self.port})"

    def cancel(self) -> None:
        """Makes a running run() stop sending and return what it has (from any thread)."""
        self._cancel.set()
        state = self._state
        if state is not None:
            state.complete.set()  # also ends the wait for stragglers

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SessionSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        params: TestSessionParams,
        *,
        count: int,
        interval: float,
        schedule: Schedule = Schedule.PERIODIC,
        max_interval: float | None = None,
        seed: int | None = None,
        reply_timeout: float = 2.0,
        random_bytes: RandomBytes = os.urandom,
        start_at: float | None = None,
    ) -> SenderResult:
        """Sends `count` packets `interval` seconds apart (the mean gap for Poisson), then waits up to
        `reply_timeout` after the last one for stragglers. `max_interval` caps each Poisson gap (see
        _offsets); `seed` makes the Poisson schedule repeatable; `random_bytes` supplies the padding
        (RFC 4656 s4.1.2: pseudo-random). `start_at` (Unix time) delays the first packet, e.g. to the
        session's Start Time."""
        if count < 0 or interval < 0 or reply_timeout < 0:
            raise ValueError("count, interval and reply_timeout must not be negative")
        if max_interval is not None and not max_interval >= interval:  # also refuses NaN
            raise ValueError(f"max_interval ({max_interval} s) must not be below interval ({interval} s)")
        self._cancel.clear()
        codec = TestPacketCodec(params.mode, params.keys, params.symmetric)
        set_dscp(self._sock, params.dscp)
        destination = (params.reflector_address, params.reflector_port)
        expected = self._expected_source(params)
        # RFC 6038: the octets the session reflects must be there to reflect, and with Length of padding to
        # reflect the sender pads by the reflector's truncation plus that length (s5.1.3).
        length = max(
            params.padding_length,
            params.reflect_octets,
            codec.truncation + params.padding_to_reflect if params.padding_to_reflect else 0,
        )
        padding = bytearray(random_bytes(length)) if length else bytearray()
        if any(params.server_octets) and len(padding) >= len(params.server_octets):
            # RFC 6038: non-zero Server Octets from Accept-Session lead the Packet Padding (after the 27 MBZ
            # octets of the Symmetrical Size layout), where the reflector can read and reflect them.
            padding[: len(params.server_octets)] = params.server_octets
        padding_bytes = bytes(padding)
        offsets = self._offsets(count, interval, schedule, seed, max_interval)

        t1s: list[int] = []
        replies: dict[int, _Reply] = {}
        state = _ReceiveState(count)
        self._state = state
        receiver = threading.Thread(
            target=self._receive,
            args=(codec, expected, params.reflect_octets, t1s, replies, state),
            name=f"twamp-sender-{self.port}",
            daemon=True,
        )
        started_at = time.time()
        if start_at is not None and start_at > started_at:
            self._cancel.wait(start_at - started_at)
        base = time.monotonic()
        receiver.start()
        ee = self._clock_sync.error_estimate_word()
        sendto = self._sock.sendto
        try:
            for seq in range(count):
                if self._cancel.is_set():
                    break
                delay = base + offsets[seq] - time.monotonic()
                if delay > 0 and self._cancel.wait(delay):
                    break
                buf = codec.prepare_sender(seq, padding_bytes)
                t1 = ntp_from_ns(time.time_ns())
                codec.stamp_sender(buf, t1, ee)
                t1s.append(t1)
                try:
                    sendto(buf, destination)
                except OSError as exc:
                    self._bad_log.warning("send", "twamp sender: send to %s failed: %s", destination, exc)
            state.sent = len(t1s)
            state.all_sent.set()
            if len(replies) >= state.sent:
                state.complete.set()
            if not self._cancel.is_set():
                state.complete.wait(reply_timeout)
        finally:
            state.stop = True
            receiver.join()
            self._state = None
        finished_at = time.time()
        return self._result(params, t1s, replies, state, ee, started_at, finished_at)

    @staticmethod
    def _offsets(
        count: int, interval: float, schedule: Schedule, seed: int | None, max_interval: float | None = None
    ) -> list[float]:
        """Send times relative to the first packet.

        A Poisson gap longer than `max_interval` is cut to it: RFC 8913's max-interval is the largest time
        allowed between two packets, so that a run ends in bounded time. Capping truncates the exponential
        distribution (the mean gap falls to interval * (1 - exp(-max_interval / interval)), and the stream
        is no longer strictly Poisson); that is what the operator configured, not an error to correct."""
        if schedule is Schedule.PERIODIC or interval == 0:
            return [seq * interval for seq in range(count)]
        rng = random.Random(seed)
        cap = math.inf if max_interval is None else max_interval
        offsets = [0.0]
        for _ in range(count - 1):
            offsets.append(offsets[-1] + min(rng.expovariate(1.0 / interval), cap))
        return offsets[:count]

    def _expected_source(self, params: TestSessionParams) -> tuple[str, int]:
        return ipaddress.ip_address(
            params.reflector_address.split("%", 1)[0]
        ).compressed, params.reflector_port

    def _receive(
        self,
        codec: TestPacketCodec,
        expected: tuple[str, int],
        reflect_octets: int,
        t1s: list[int],
        replies: dict[int, _Reply],
        state: _ReceiveState,
    ) -> None:
        sock = self._sock
        buf = bytearray(65536)
        view = memoryview(buf)
        highest = -1
        pad_at = codec.reflector_layout.size
        while not state.stop:
            try:
                nbytes, ancdata, _flags, addr = sock.recvmsg_into([buf], ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if state.stop:
                    break
                self._bad_log.warning("recv", "twamp sender: receive failed: %s", exc)
                continue
            stamp, _ttl = parse_ancillary(ancdata)
            if stamp is None:
                stamp = time.time_ns()
            if (addr[0], addr[1]) != expected:
                self._drop(state, ReplyDrop.UNKNOWN_SOURCE, addr, "not the session's reflector")
                continue
            try:
                reply = codec.decode_reflector(view[:nbytes])
            except TestPacketError as exc:
                self._drop(state, ReplyDrop(exc.reason.value), addr, str(exc))
                continue
            seq = reply.sender_seq
            if seq >= len(t1s) or reply.sender_timestamp != t1s[seq]:
                self._drop(state, ReplyDrop.UNKNOWN_SEQUENCE, addr, f"sender sequence {seq} was not sent")
                continue
            known = replies.get(seq)
            if known is not None:
                known.duplicates += 1
                state.duplicates += 1
                continue
            if seq < highest:
                state.reordered += 1
            else:
                highest = seq
            replies[seq] = _Reply(
                ntp_from_ns(stamp),
                reply.seq,
                reply.receive_timestamp,
                reply.timestamp,
                reply.error_estimate,
                reply.sender_ttl,
                nbytes,
                bytes(view[pad_at : pad_at + min(reflect_octets, max(0, nbytes - pad_at))]),
            )
            if state.all_sent.is_set() and len(replies) >= state.sent:
                state.complete.set()
        state.done = True

    def _drop(self, state: _ReceiveState, reason: ReplyDrop, addr: object, detail: str) -> None:
        state.dropped[reason] += 1
        self._bad_log.warning(reason.value, "twamp sender: ignored datagram from %s: %s", addr, detail)

    def _result(
        self,
        params: TestSessionParams,
        t1s: list[int],
        replies: dict[int, _Reply],
        state: _ReceiveState,
        ee: int,
        started_at: float,
        finished_at: float,
    ) -> SenderResult:
        sender_error = ErrorEstimate.decode(ee.to_bytes(2, "big"))
        records = []
        for seq, t1 in enumerate(t1s):
            reply = replies.get(seq)
            if reply is None:
                records.append(PacketRecord(seq, unix_from_ntp(t1), sender_error))
                continue
            records.append(
                PacketRecord(
                    sender_seq=seq,
                    t1=unix_from_ntp(t1),
                    sender_error=sender_error,
                    t2=unix_from_ntp(reply.t2),
                    t3=unix_from_ntp(reply.t3),
                    t4=unix_from_ntp(reply.t4),
                    turnaround=(reply.t3 - reply.t2) / 4_294_967_296.0,
                    reflector_seq=reply.reflector_seq,
                    sender_ttl=reply.sender_ttl,
                    reflector_error=ErrorEstimate.decode(reply.reflector_ee.to_bytes(2, "big")),
                    duplicates=reply.duplicates,
                    reply_length=reply.length,
                    reflected_octets=reply.reflected,
                )
            )
        return SenderResult(
            sid=params.sid,
            records=tuple(records),
            sent=len(t1s),
            received=len(replies),
            duplicates=state.duplicates,
            reordered=state.reordered,
            dropped=dict(state.dropped),
            kernel_timestamps=self.kernel_timestamps,
            started_at=started_at,
            finished_at=finished_at,
        )


class _ReceiveState:
    """Shared between run() and its receive thread; each field has a single writer."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = count
        self.all_sent = threading.Event()
        self.complete = threading.Event()
        self.stop = False
        self.done = False
        self.duplicates = 0
        self.reordered = 0
        self.dropped = dict.fromkeys(ReplyDrop, 0)
